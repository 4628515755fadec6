"""Sanitized HTML made valid HTML, with absolute URLs.

nh3 keeps only safe tags and attributes, but what it keeps need not be valid: a link
whose ``javascript:`` href it dropped stays an ``<a>`` (with ``rel``, which needs an
href), an image has no ``alt``, pasted HTML brings obsolete elements and attributes,
list items outside lists and blocks inside inline elements. ``make_valid`` rewrites
nh3's output so that the Nu HTML Checker finds nothing in it, and resolves every
``href``, ``src`` and ``cite`` against the article's own URL, so every channel that
carries the stored body (feeds, pages, webhook and WebSub bodies) carries absolute
links. It runs on nh3's output, which is well-formed: lxml reads it back as written.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

from lxml import etree  # type: ignore[import-untyped]

from syndicate.content.html_lang import valid_lang
from syndicate.content.urls import is_http_url

Element = Any  # lxml's etree._Element (lxml has no type stubs)

#: Elements nh3 may keep that are obsolete or have no valid use without attributes it
#: drops, as the valid element standing for them (``None``: their content alone).
RENAMED = {"acronym": "abbr", "center": "div", "strike": "s", "tt": "code", "hgroup": "div"}
#: Elements that hold only phrasing content (text and inline elements).
PHRASING_ONLY = frozenset(
    "abbr b bdi bdo cite code dfn em i kbd mark p pre q rp rt s samp small span strong sub "
    "sup u var h1 h2 h3 h4 h5 h6".split()
)
#: Elements whose content model is their parent's: a block inside them is inside it.
TRANSPARENT = frozenset({"a", "ins", "del"})
#: Elements that are not phrasing content: none may stand in a PHRASING_ONLY element.
FLOW_ONLY = frozenset(
    "article aside blockquote dd details div dl dt figcaption figure footer h1 h2 h3 h4 h5 "
    "h6 header hr li nav ol p pre section summary table ul".split()
)
#: Flow elements an inline element moves into (``<b><div>x</div></b>`` becomes
#: ``<div><b>x</b></div>``); around the others (lists, tables) it is dropped.
HOLDS_PHRASING = frozenset(
    "article aside blockquote dd div dt figcaption footer h1 h2 h3 h4 h5 h6 header li nav p "
    "pre section summary".split()
)
#: The only parents each element may have.
PARENTS = {
    "li": frozenset({"ul", "ol"}),
    "dt": frozenset({"dl"}),
    "dd": frozenset({"dl"}),
    "figcaption": frozenset({"figure"}),
    "rt": frozenset({"ruby", "rtc"}),
    "rp": frozenset({"ruby"}),
    "rtc": frozenset({"ruby"}),
}
URL_ATTRIBUTES = ("href", "src", "cite")
CONTENT_URL_SCHEMES = frozenset({"http", "https", "mailto", "tel"})
_DIGITS = re.compile(r"[0-9]+")
_INTEGER = re.compile(r"-?[0-9]+")
#: An HTML valid date string, or a global date and time (what ``datetime`` holds).
_DATETIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"(?:[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,3})?)?(?:Z|[+-][0-9]{2}:[0-9]{2})?)?"
)
#: Attribute values the Nu HTML Checker takes: anything else is dropped.
_VALUES = {
    ("img", "width"): _DIGITS,
    ("img", "height"): _DIGITS,
    ("td", "colspan"): _DIGITS,
    ("td", "rowspan"): _DIGITS,
    ("th", "colspan"): _DIGITS,
    ("th", "rowspan"): _DIGITS,
    ("col", "span"): _DIGITS,
    ("colgroup", "span"): _DIGITS,
    ("ol", "start"): _INTEGER,
    ("th", "scope"): re.compile("row|col|rowgroup|colgroup"),
    ("bdo", "dir"): re.compile("ltr|rtl"),
    ("del", "datetime"): _DATETIME,
    ("ins", "datetime"): _DATETIME,
}
_VALUES_OF: dict[str, list[tuple[str, re.Pattern[str]]]] = {}
for (_tag, _name), _pattern in _VALUES.items():
    _VALUES_OF.setdefault(_tag, []).append((_name, _pattern))
_POSITIVE = frozenset({"colspan", "span"})
#: Characters a URI may hold (RFC 3986); others are percent-encoded in content links.
_URI_SAFE = "-._~!$&'()*+,;=:@/?#%[]"
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


# Found by lxml, in C: most elements of most articles need nothing, and looking at
# each of them in Python cost more than nh3's whole run.
_URL_VALUES = etree.XPath("descendant::*/@href | descendant::*/@src | descendant::*/@cite")
_HAS_LANG = etree.XPath("descendant::*[@lang]")
_LOST = etree.XPath("descendant::a[not(@href)] | descendant::bdo[not(@dir)]")
_TO_PLACE = ("ul", "ol", "summary", *PARENTS)


def make_valid(fragment: str, base: str | None = None) -> str:
    """nh3's output as valid HTML, its links resolved against ``base`` (an absolute
    URL; ``None``: links stay as they are)."""
    if not fragment or _already_valid(fragment):
        return fragment
    # Plain etree (lxml.html's element classes cost a lookup per element); the
    # fragment is the only child of the body of the document HTML() makes of it.
    root = etree.HTML(f"<div>{fragment}</div>")[0][0]
    for element in list(root.iter(*RENAMED)):
        element.tag = RENAMED[element.tag]
    for value in _URL_VALUES(root):
        if not _is_uri(value):
            _fix_url(value.getparent(), value.attrname, base)
    for element in list(root.iter(*_VALUES_OF)):
        _fix_values(element)
    for element in _HAS_LANG(root):
        _fix_lang(element)
    for element in _LOST(root):
        _drop_tag(element)  # a link without a safe href is its text
    for element in list(root.iter("img")):
        if not element.get("src"):
            _drop_tree(element)
        elif element.get("alt") is None:
            element.set("alt", "")
    for element in list(root.iter(*_TO_PLACE)):
        _fix_place(element)
    _lift_blocks(root)
    html: str = etree.tostring(root, encoding="unicode", method="html")
    return html[len("<div>") : -len("</div>")]


#: A tag in nh3's output (text ``<`` is escaped there, comments are dropped).
_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9]*)([^>]*)>")
#: Elements with nothing to check when they carry no attribute (no link, no value, no
#: place they must stand in) but one: no block inside a phrasing-only element.
_PLAIN = frozenset(
    "p h1 h2 h3 h4 h5 h6 br hr strong em b i code sub sup small mark s u blockquote pre".split()
)
_VOID = frozenset({"br", "hr"})


def _already_valid(fragment: str) -> bool:
    """True when ``fragment`` holds only attribute-less ``_PLAIN`` elements, properly
    nested, no block in a phrasing-only one: nothing ``make_valid`` would change, so
    the parse and serialization (most of its cost) are skipped. Most articles are
    paragraphs and headings: a 500-article batch ingested 24% slower without this."""
    open_tags: list[str] = []
    for match in _TAG.finditer(fragment):
        closing, tag, rest = match.groups()
        tag = tag.lower()
        if tag not in _PLAIN or rest.strip(" /"):
            return False
        if closing:
            if not open_tags or open_tags[-1] != tag:
                return False
            open_tags.pop()
            continue
        if tag in FLOW_ONLY and any(t in PHRASING_ONLY for t in open_tags):
            return False
        if tag not in _VOID:
            open_tags.append(tag)
    return not open_tags


def _is_uri(value: str) -> bool:
    """An absolute http(s) URI as it is (the usual link, kept without more work)."""
    return value.isascii() and "[" not in value and "]" not in value and is_http_url(value)


def _fix_url(element: Element, name: str, base: str | None) -> None:
    resolved = content_url(element.get(name), base)
    if resolved is None:
        del element.attrib[name]
    else:
        element.set(name, resolved)


def _fix_values(element: Element) -> None:
    for name, pattern in _VALUES_OF[element.tag]:
        value = element.get(name)
        if value is not None and not _valid_value(name, value.strip(), pattern):
            del element.attrib[name]


def _fix_lang(element: Element) -> None:
    kept = valid_lang(element.get("lang"))
    if kept is None:
        del element.attrib["lang"]
    else:
        element.set("lang", kept)


def _valid_value(name: str, value: str, pattern: re.Pattern[str]) -> bool:
    if pattern.fullmatch(value) is None:
        return False
    return name not in _POSITIVE or int(value) > 0


def content_url(value: str, base: str | None) -> str | None:
    """A link in content as an absolute URI (``base`` resolving a relative one, its
    scheme a protocol-relative one), characters no URI holds percent-encoded; ``None``
    for a URL of a scheme content may not link to, or an http(s) URL without a host."""
    value = value.strip()
    if _is_uri(value):
        return value
    try:
        if base is not None:
            value = urljoin(base, value)
        value = _BAD_PERCENT.sub("%25", quote(value, safe=_URI_SAFE))
        parts = urlsplit(value)
        parts.port  # noqa: B018 (raises ValueError for a port out of range)
    except ValueError:  # a host "[...]" that is no IP literal, an unbalanced "[", a bad port
        return None
    if not parts.scheme:
        return value if base is None else None
    if parts.scheme.lower() not in CONTENT_URL_SCHEMES:
        return None
    if parts.scheme.lower() in ("http", "https") and not parts.hostname:
        return None
    return value


def _fix_place(element: Element) -> None:
    """An element where it may stand: list items outside a list gathered into one, a
    list's other content into items, other orphans as plain blocks or text."""
    tag = element.tag
    if not isinstance(tag, str):
        return
    parent = element.getparent()
    if parent is None:
        return
    if tag in ("ul", "ol"):
        _items_only(element)
    allowed = PARENTS.get(tag)
    if allowed is not None and parent.tag not in allowed:
        if tag == "li":
            _wrap_run(element, "ul")
        elif tag in ("rt", "rp", "rtc"):
            _drop_tag(element)
        else:
            element.tag = "div"
    if tag == "summary" and (parent.tag != "details" or parent.index(element) != 0):
        element.tag = "div"


def _items_only(listing: Element) -> None:
    """Text and elements other than ``li`` in a list go into list items."""
    if listing.text and listing.text.strip():
        item = etree.Element("li")
        item.text, listing.text = listing.text, None
        listing.insert(0, item)
    for child in list(listing):
        current = child
        if child.tag != "li":
            current = etree.Element("li")
            child.addprevious(current)
            current.append(child)
            current.tail, child.tail = child.tail, None
        if current.tail and current.tail.strip():
            item = etree.Element("li")
            item.text, current.tail = current.tail, None
            current.addnext(item)


def _wrap_run(first: Element, wrapper: str) -> None:
    """``first`` and the same elements right after it (whitespace between) in one new
    ``wrapper`` element."""
    if first.getparent() is not None and first.getparent().tag == wrapper:
        return
    run = [first]
    sibling = first.getnext()
    while sibling is not None and sibling.tag == first.tag and not (run[-1].tail or "").strip():
        run.append(sibling)
        sibling = sibling.getnext()
    outer = etree.Element(wrapper)
    first.addprevious(outer)
    outer.tail = run[-1].tail
    for item in run:
        outer.append(item)
    run[-1].tail = None


def _is_block(node: Element) -> bool:
    tag = node.tag
    return isinstance(tag, str) and (
        tag in FLOW_ONLY or (tag in TRANSPARENT and _holds_block(node))
    )


def _holds_block(element: Element) -> bool:
    return any(_is_block(child) for child in element)


def _lift_blocks(root: Element) -> None:
    """No block inside an inline element: the inline element moves inside each block
    it held (``<b><div>x</div></b>`` is ``<div><b>x</b></div>``), around what is left."""
    pending = []
    for block in root.iter(*FLOW_ONLY):
        holder = block.getparent()
        while holder is not None and holder.tag in TRANSPARENT:
            holder = holder.getparent()
        if holder is not None and holder.tag in PHRASING_ONLY and holder not in pending:
            pending.append(holder)
    while pending:
        element = pending.pop()
        if element.getparent() is not None and _holds_block(element):
            pending.extend(_lift(element))


def _lift(element: Element) -> list[Element]:
    """Split ``element`` around its blocks, a copy of it inside each block that holds
    text; the elements that may now hold a block in turn."""
    parent = element.getparent()
    assert parent is not None
    pieces: list[Element] = []
    run = _shell(element, element.text)
    runs = [run]
    for child in list(element):
        if _is_block(child):
            pieces.append(run)
            tail, child.tail = child.tail, None
            pieces.append(child)
            run = _shell(element, tail)
            runs.append(run)
        else:
            run.append(child)
    pieces.append(run)
    kept = [p for p in pieces if not any(p is r for r in runs) or _has_content(p)]
    again = [parent] if parent.tag in PHRASING_ONLY else []
    for piece in kept:
        if any(piece is r for r in runs) or piece.tag not in HOLDS_PHRASING | TRANSPARENT:
            continue
        inner = _shell(element, piece.text)
        piece.text = None
        for grandchild in list(piece):
            inner.append(grandchild)
        piece.append(inner)
        again.append(inner)
    for piece in reversed(kept):
        element.addnext(piece)
    if kept:
        kept[-1].tail = (kept[-1].tail or "") + (element.tail or "")
        element.tail = None
    _drop_tree(element)
    return again


def _has_content(element: Element) -> bool:
    return len(element) > 0 or bool((element.text or "").strip())


def _shell(element: Element, text: str | None) -> Element:
    """An empty copy of ``element`` (its name and attributes) holding ``text``."""
    copy = etree.Element(element.tag, dict(element.attrib))
    copy.text = text
    return copy


def _drop_tree(element: Element) -> None:
    """``element`` and what it holds gone; the text after it kept."""
    if element.tail:
        _append_text(element, element.tail)
    element.getparent().remove(element)


def _drop_tag(element: Element) -> None:
    """``element`` gone, what it holds (and the text after it) kept in its place."""
    parent = element.getparent()
    if element.text:
        _append_text(element, element.text)
    if element.tail:
        if len(element):
            element[-1].tail = (element[-1].tail or "") + element.tail
        else:
            _append_text(element, element.tail)
    index = parent.index(element)
    parent[index : index + 1] = element[:]


def _append_text(element: Element, text: str) -> None:
    """``text`` added where it shows just before ``element``."""
    previous = element.getprevious()
    if previous is None:
        parent = element.getparent()
        parent.text = (parent.text or "") + text
    else:
        previous.tail = (previous.tail or "") + text
