"""Article text processing: cleaning, sanitizing, rendering, excerpts and slugs.

Rendering is bounded work: before nh3 builds its tree, ``check_content_limits``
reads the HTML once (a tokenizer and a model of the HTML5 tree builder's open
elements) and refuses content nested deeper than ``MAX_CONTENT_DEPTH`` or making
more than ``MAX_CONTENT_ELEMENTS`` elements (``ContentTooComplex``). html5ever's
work grows with the product of the two (it walks the open elements on most
tags), so bounding them bounds it: 60,000 nested ``<div>`` took 11 s before.
"""

from __future__ import annotations

import html
import re
import unicodedata
from html.parser import HTMLParser
from typing import Literal

import nh3
from markdown_it import MarkdownIt

from syndicate.content.html_limits import MAX_CONTENT_DEPTH as MAX_CONTENT_DEPTH
from syndicate.content.html_limits import MAX_CONTENT_ELEMENTS as MAX_CONTENT_ELEMENTS
from syndicate.content.html_limits import ContentTooComplex as ContentTooComplex
from syndicate.content.html_limits import check_content_limits as check_content_limits
from syndicate.content.html_valid import make_valid

ContentType = Literal["html", "markdown", "text"]

SUMMARY_LENGTH = 200
SLUG_MAX_LENGTH = 80
URL_SCHEMES = frozenset({"http", "https", "mailto", "tel"})

# Characters XML 1.0 cannot carry (C0 controls but TAB/LF/CR, lone surrogates,
# U+FFFE/U+FFFF) plus C1 controls, which no real text needs and validators flag.
_UNSAFE_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
_BLOCK_TAGS = frozenset(
    "address article aside blockquote br dd div dl dt figcaption figure footer h1 h2 h3 h4 h5 "
    "h6 header hr li main nav ol p pre section table tbody td tfoot th thead tr ul".split()
)
_SLUG_JUNK = re.compile(r"[^\w]+|_+")
# A tag, with quoted attribute values (which may hold ">") kept whole.
_TAG = re.compile(r"""</?([A-Za-z][A-Za-z0-9]*)(?:[^>"']|"[^"]*"|'[^']*')*>""")
_markdown = MarkdownIt("commonmark", {"html": True, "linkify": False}).enable("table")


# The same set within ASCII, for bytes.translate: a C loop, several times faster
# than the regular expression on the (usual) ASCII-only text.
_UNSAFE_ASCII = bytes([*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F])


def clean_text(value: str) -> str:
    """Drop characters that would break an XML feed; keeps everything else."""
    if value.isascii():
        raw = value.encode("ascii")
        kept = raw.translate(None, _UNSAFE_ASCII)
        return value if len(kept) == len(raw) else kept.decode("ascii")
    return _UNSAFE_CHARS.sub("", value)


#: nh3's defaults less what cannot be valid HTML as nh3 leaves it: image maps (a
#: ``map`` needs a ``name``), ``data`` (needs ``value``), ``time`` (its text must then
#: be a date), obsolete presentational attributes and ``headers`` (it names ids, and
#: ids are dropped).
_TAGS = nh3.ALLOWED_TAGS - {"map", "area", "data", "time"}
_OBSOLETE = frozenset({"align", "char", "charoff", "summary", "size", "headers", "hreflang"})
_ATTRIBUTES = {
    tag: set(names - _OBSOLETE) - ({"width"} if tag == "hr" else set())
    for tag, names in nh3.ALLOWED_ATTRIBUTES.items()
    if tag in _TAGS
}
#: Bidirectional embedding, override and isolate controls: in a one-line field one left
#: open reorders whatever a reader or page shows after it ("Trojan Source").
_BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069]")


def one_line(value: str) -> str:
    """Text shown as one line (titles, authors, summaries): ``clean_text``, without
    bidirectional controls, every whitespace run (newlines too) one space, trimmed."""
    if not value.isascii():
        value = _BIDI_CONTROLS.sub("", value)
    return " ".join(clean_text(value).split())


# Built once: nh3.clean(...) builds the same sanitizer on every call (~30% of its time).
_sanitizer = nh3.Cleaner(tags=_TAGS, attributes=_ATTRIBUTES, url_schemes=set(URL_SCHEMES))


def sanitize_html(value: str, base: str | None = None) -> str:
    """Keep structure (headings, lists, links, images, tables); drop scripts,
    event handlers and dangerous URLs; the rest made valid HTML with links and
    images resolved against ``base`` (``html_valid.make_valid``).
    ``ContentTooComplex`` beyond the limits."""
    cleaned = clean_text(value)
    check_content_limits(cleaned)
    return make_valid(_sanitizer.clean(cleaned), base)


def render_content(value: str, content_type: ContentType, base: str | None = None) -> str:
    """Operator input -> the sanitized HTML that is stored and served, its relative
    links resolved against ``base``, the article's URL.

    CPU-bound (markdown-it is pure Python, nh3 releases the GIL): callers on the
    event loop run it on a worker thread. ``ContentTooComplex`` beyond the limits.
    """
    if content_type == "markdown":
        # Raw HTML passes through markdown: the rendered HTML is what gets bounded.
        return sanitize_html(_markdown.render(clean_text(value)), base)
    if content_type == "text":
        paragraphs = re.split(r"\n\s*\n", clean_text(value).replace("\r\n", "\n").strip())
        rendered = [
            "<p>" + html.escape(p.strip()).replace("\n", "<br>") + "</p>"
            for p in paragraphs
            if p.strip()
        ]
        return "\n".join(rendered)
    return sanitize_html(value, base)


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCK_TAGS:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _BLOCK_TAGS:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def html_to_text(value: str) -> str:
    """Visible text of an HTML fragment, whitespace collapsed."""
    parser = _TextExtractor()
    parser.feed(value)
    parser.close()
    return " ".join("".join(parser.parts).split())


def _tag_gap(match: re.Match[str]) -> str:
    return " " if match.group(1).lower() in _BLOCK_TAGS else ""


def sanitized_text(value: str) -> str:
    """``html_to_text`` for HTML that came out of ``sanitize_html``: there every
    ``<`` opens a tag and every tag is closed, so a regular expression does the
    parser's work several times faster (the hot path of every article write)."""
    return " ".join(_raw_text(value).split())


def _raw_text(value: str) -> str:
    """Sanitized HTML's text, whitespace not yet collapsed."""
    return html.unescape(_TAG.sub(_tag_gap, value))


def excerpt(text: str, length: int = SUMMARY_LENGTH) -> str:
    """Cut plain text on a word boundary near ``length`` characters, ending in "…"."""
    text = " ".join(text.split())
    if len(text) <= length:
        return text
    cut = text[: length + 1]
    space = cut.rfind(" ")
    if space > length // 2:
        cut = cut[:space]
    else:
        cut = cut[:length]
    return cut.rstrip(" ,;:.-\u2013\u2014") + "…"


def summarize(content_html: str, length: int = SUMMARY_LENGTH) -> str:
    """Plain-text excerpt of sanitized HTML. Only the start of the text matters,
    so only as much of the HTML as gives it is read: a prefix cut before its last
    ``<`` or ``&`` (where a tag or an entity may be cut short) yields a prefix of
    the whole text, which decides the excerpt once it is longer than the cut. Of
    that text, only the first ``length // 2 + 3`` words are collapsed: whole words
    followed by more text, at least ``length + 4`` characters together."""
    words_needed = length // 2 + 3
    size = 4 * length
    while size < len(content_html):
        head = _text_boundary(content_html[:size])
        words = _raw_text(head).split(None, words_needed)
        if len(words) > words_needed:
            return excerpt(" ".join(words[:words_needed]), length)
        text = " ".join(words)
        if len(text) > length + 2:
            return excerpt(text, length)
        size *= 4
    return excerpt(sanitized_text(content_html), length)


def _text_boundary(head: str) -> str:
    """``head`` cut before its last ``<`` (a tag may be cut short there), then
    before its last ``&`` if that is in text (an entity may be): not at an ``&``
    inside a tag's attribute, which would leave half a tag."""
    lt = head.rfind("<")
    if lt >= 0:
        head = head[:lt]
    amp = head.rfind("&")
    if amp > head.rfind(">"):
        head = head[:amp]
    return head


def slugify(title: str, max_length: int = SLUG_MAX_LENGTH) -> str:
    """A URL slug from a title: accents folded, other scripts kept, lower case.

    "Café au lait: ½ price!" -> "cafe-au-lait-1-2-price"; "肝脏钙化" -> "肝脏钙化".
    """
    if title.isascii():  # nothing to fold: NFKD and NFC leave ASCII as it is
        folded = title
    else:
        decomposed = unicodedata.normalize("NFKD", title)
        folded = unicodedata.normalize(
            "NFC", "".join(c for c in decomposed if not unicodedata.combining(c))
        )
    slug = _SLUG_JUNK.sub("-", folded.lower()).strip("-")
    if len(slug) > max_length:
        slug = slug[:max_length]
        if "-" in slug[max_length // 2 :]:
            slug = slug.rsplit("-", 1)[0]
        slug = slug.strip("-")
    return slug or "article"
