"""URLs operators send (an article's ``url`` and ``image``, a subscription's target):
RFC 3986 URIs, with IRIs (RFC 3987) taken and turned into the URI they stand for.

``HTTP_URL_PATTERN`` is the whole rule, and ``/openapi.json`` states it as it is:
every text it matches is accepted, and nothing else. ``to_uri`` then maps an IRI to
its URI (RFC 3987 §3.1): a non-ASCII host by IDNA (UTS 46, as browsers do), else
percent-encoded, and the rest percent-encoded as UTF-8, as are ``[`` and ``]``
after the host (RFC 3986 allows them only around an IP literal, and real links
carry them in queries). Text that already is a URI comes back unchanged.
"""

from __future__ import annotations

import re
from urllib.parse import quote

import idna

#: A non-ASCII character an IRI may hold here: any but the C1 controls, the
#: bidirectional formatting characters (RFC 3987 §4.1; the isolates, which came later,
#: too) and U+FFFE/U+FFFF. Lone surrogates are not named: the JSON reader refuses
#: them, and a surrogate range makes the pattern invalid to Rust-regex schema
#: validators (which then take any text). A negated class: hypothesis (under
#: schemathesis) builds a positive class of the ~1M code points of RFC 3987's
#: ``ucschar`` one by one, which took minutes per run.
_NON_ASCII = "[^\\x00-\\x9f\\u200e\\u200f\\u202a-\\u202e\\u2066-\\u2069\\ufffe\\uffff]"
_ALNUM = "A-Za-z0-9"
_LABEL_CHAR = f"(?:[{_ALNUM}]|{_NON_ASCII})"
_LABEL = f"{_LABEL_CHAR}(?:(?:[{_ALNUM}-]|{_NON_ASCII})*{_LABEL_CHAR})?"
#: The ASCII a path segment, query or fragment may hold besides "/" (and "?"): RFC
#: 3986's unreserved, sub-delims, ":" and "@", and "[" and "]" (percent-encoded by
#: ``to_uri``); "%" only as the start of an escape.
_PCHAR = f"{_ALNUM}\\-._~!$&'()*+,;=:@\\[\\]"
_ESCAPE = "%[0-9A-Fa-f]{2}"
#: Absolute http(s) URL: a host name (ASCII, or an IDN in Unicode or punycode) or IP
#: literal, an optional port, then an RFC 3986 path, query and fragment.
_H16 = "[0-9A-Fa-f]{1,4}"
#: An IPv6 address in its hexadecimal forms (RFC 4291 2.2, forms 1 and 2; the
#: IPv4-embedded form and zone ids are not taken): what ``ipaddress`` takes of them.
_IPV6 = "|".join(
    [
        f"(?:{_H16}:){{7}}{_H16}",
        f"(?:{_H16}:){{1,7}}:",
        *(f"(?:{_H16}:){{1,{6 - k}}}(?::{_H16}){{1,{k + 1}}}" for k in range(6)),
        f":(?::{_H16}){{1,7}}",
        "::",
    ]
)
#: 0-65535.
_PORT = "(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
HTTP_URL_PATTERN = (
    f"^https?://({_LABEL}(?:\\.{_LABEL})*|\\[(?:{_IPV6})\\])(:{_PORT})?"
    f"((?:/(?:[{_PCHAR}/]|{_NON_ASCII}|{_ESCAPE})*)?)"
    f"((?:\\?(?:[{_PCHAR}/?]|{_NON_ASCII}|{_ESCAPE})*)?)"
    f"((?:#(?:[{_PCHAR}/?]|{_NON_ASCII}|{_ESCAPE})*)?)$"
)
_HTTP_URL = re.compile(HTTP_URL_PATTERN)
#: Kept as they are by ``quote``: every ASCII character the pattern lets by, but "[]".
_KEEP = "-._~!$&'()*+,;=:@/?#%"


def is_http_url(value: str) -> bool:
    """``value`` matches ``HTTP_URL_PATTERN`` (the whole text: no trailing newline)."""
    return _HTTP_URL.fullmatch(value) is not None


def to_uri(value: str) -> str:
    """The URI an accepted URL stands for; ``ValueError`` naming what is wrong with a
    text ``HTTP_URL_PATTERN`` refuses."""
    match = _HTTP_URL.fullmatch(value)
    if match is None:
        raise ValueError(_why_not(value))
    host, port, path, query, fragment = match.groups()
    scheme = value[: value.index(":")]
    tail = path + query + fragment
    if tail.isascii() and "[" not in tail and "]" not in tail and host.isascii():
        return value
    return f"{scheme}://{_ascii_host(host)}{port or ''}{quote(tail, safe=_KEEP)}"


def _ascii_host(host: str) -> str:
    """An IDN as IDNA (UTS 46) has it; a name IDNA refuses (no registry would hold
    it), percent-encoded, as RFC 3986 allows in a host name."""
    if host.isascii():
        return host
    try:
        return idna.encode(host, uts46=True).decode("ascii")
    except UnicodeError:  # idna.IDNAError is one
        return quote(host, safe=".")


_URL_START = re.compile(r"^https?://")
_AUTHORITY = re.compile(r"^https?://[^/?#]*")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_URL_CHAR = re.compile(f"[{_PCHAR}/?#%]|{_NON_ASCII}")


def _why_not(value: str) -> str:
    """The first reason a text is no URL this service takes, as a user reads it."""
    if _URL_START.match(value) is None:
        return "must be an absolute http:// or https:// URL"
    authority = _AUTHORITY.match(value)
    assert authority is not None
    rest = value[authority.end() :]
    if _BAD_ESCAPE.search(rest):
        return "has a '%' that starts no escape (two hex digits must follow it)"
    if rest.count("#") > 1:
        return "has a second '#' (a URL has one fragment)"
    bad = next((c for c in rest if _URL_CHAR.fullmatch(c) is None), None)
    if bad is not None:
        return f"has a character a URL cannot hold: {bad!r} (percent-encode it)"
    return "must be an absolute http:// or https:// URL with a valid host name"
