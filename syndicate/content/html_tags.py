"""What the content-limits scan (html_limits.py) knows of HTML5: the tokenizer's
patterns and the tree builder's element sets, as the WHATWG HTML standard names them."""

from __future__ import annotations

import re
import string

WS = "\t\n\f\r "
TOKEN = re.compile(
    r"""
    <!--(?:-?>|[\s\S]*?--!?>|[\s\S]*)
  | <(?P<end>/?)(?P<name>[A-Za-z][^\t\n\f\r />]*+)
    (?P<attrs>(?:[\t\n\f\r ]++|/(?!>)|[^\t\n\f\r />][^\t\n\f\r />=]*+
      (?:[\t\n\f\r ]*+=[\t\n\f\r ]*+(?:"[^"]*+"|'[^']*+'|[^\t\n\f\r >]++))?+)*+)
    (?P<selfclosing>/?)(?P<close>>?)
  | <[!?/][^>]*+>?
    """,
    re.VERBOSE,
)
ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def end_of(name: str) -> re.Pattern[str]:
    return re.compile(rf"</{name}(?=[{WS}/>])", re.IGNORECASE | re.ASCII)


RAW_TEXT = {
    name: end_of(name)
    for name in "style xmp iframe noembed noframes noscript textarea title".split()
}
# Script data: "<!--" escapes, "<script" inside an escape double-escapes (then
# "</script" only leaves the double escape), "-->" ends either escape.
SCRIPT_MARK = re.compile(
    rf"<!--(?P<shut>-*>)?|-->|<(?P<slash>/?)script(?=[{WS}/>])", re.IGNORECASE | re.ASCII
)

FORMATTING = frozenset("a b big code em font i nobr s small strike strong tt u".split())
MARKERS = frozenset("applet caption marquee object td th template".split())
VOID = frozenset(
    "area base basefont bgsound br col embed img image input keygen link meta param source "
    "track wbr hr".split()
)
IGNORED = frozenset("html body head frameset frame".split())
INTEGRATION = frozenset(
    "math:mi math:mo math:mn math:ms math:mtext math:annotation-xml+html "
    "svg:foreignobject svg:desc svg:title".split()
)
SCOPE = (
    frozenset("applet caption html table td th marquee object template math:annotation-xml".split())
    | INTEGRATION
)
BUTTON_SCOPE = SCOPE | {"button"}
LIST_SCOPE = SCOPE | {"ol", "ul"}
HEADINGS = frozenset("h1 h2 h3 h4 h5 h6".split())
SPECIAL = (
    frozenset(
        "address applet area article aside base basefont bgsound blockquote body br button "
        "caption center col colgroup dd details dir div dl dt embed fieldset figcaption figure "
        "footer form frame frameset head header hgroup hr html iframe img input keygen li "
        "link listing main marquee menu meta nav noembed noframes noscript object ol p param "
        "plaintext pre script search section select source style summary table tbody td "
        "template textarea tfoot th thead title tr track ul wbr xmp math:annotation-xml".split()
    )
    | HEADINGS
    | INTEGRATION
)
CLOSES_P = (
    frozenset(
        "address article aside blockquote center details dialog dir div dl fieldset figcaption "
        "figure footer form header hgroup hr main menu nav ol p pre listing search section "
        "summary ul li dd dt plaintext xmp".split()
    )
    | HEADINGS
)
# Start tags before which the tree builder does not reopen formatting elements.
NO_RECONSTRUCT = (CLOSES_P - {"xmp"}) | frozenset(
    "table param source track textarea iframe noembed noscript rb rtc rp rt caption col "
    "colgroup tbody td tfoot th thead tr base basefont bgsound link meta noframes script "
    "style template title".split()
)
BREAKOUT = frozenset(
    "b big blockquote body br center code dd div dl dt em embed h1 h2 h3 h4 h5 h6 head hr i "
    "img li listing menu meta nobr ol p pre ruby s small span strong strike sub sup table tt "
    "u ul var".split()
)
FONT_BREAKOUT = frozenset({"color", "face", "size"})
ATTRIBUTE = re.compile(
    rf"""([^{WS}/>][^{WS}/>=]*+)(?:[{WS}]*+=[{WS}]*+(?:"[^"]*+"|'[^']*+'|[^{WS}>]++))?+"""
)
TABLE_SECTIONS = frozenset({"tbody", "thead", "tfoot"})
ENDS_IN_SCOPE = frozenset(
    "address article aside blockquote button center details dialog dir div dl fieldset "
    "figcaption figure footer form header hgroup listing main menu nav ol pre search section "
    "summary ul applet marquee object".split()
)

Entry = tuple[str, str, int]  # an active formatting element: name, attributes, element id


def attribute_names(attrs: str) -> set[str]:
    return {name.lower() for name in ATTRIBUTE.findall(attrs)}
