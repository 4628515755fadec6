"""The bound on sanitizing work: one linear pass over HTML before nh3 parses it.

nh3's parser (html5ever) walks its stack of open elements on most tags and
re-creates the "active formatting elements" (``b``, ``font``, ``a``, ...) that an
end tag closed implicitly, so its work grows with nesting depth times tags, and
with those re-creations: 60,000 nested ``<div>`` took 11 s, 10,000 paragraphs
each reopening a distinct ``<b>`` ran out of memory.

``check_content_limits`` tokenizes as the HTML5 tokenizer does (comments, raw
text of ``script``/``style``/..., quoted attribute values, foreign SVG/MathML
content) and follows a model of the tree builder's open elements and active
formatting elements. Where the model is simpler than the algorithm it errs
towards more depth and more elements, never fewer. Content nested deeper than
``MAX_CONTENT_DEPTH`` or making more than ``MAX_CONTENT_ELEMENTS`` elements
(re-created ones included) is refused with ``ContentTooComplex``. The model
never holds more than ``MAX_CONTENT_DEPTH`` open elements and its own walks are
capped at ``_MAX_STEPS``, so the pass is linear in the input.
"""

from __future__ import annotations

from collections.abc import Container

from syndicate.content import html_tags as tags
from syndicate.core.errors import InvalidInput

#: Deepest element nesting accepted. Real articles stay under ~30.
MAX_CONTENT_DEPTH = 256
#: Most elements one article's HTML may make (about 1 MB of dense markup).
MAX_CONTENT_ELEMENTS = 50_000
# The model's own walks (stack and list searches), summed: far above what real
# articles take (a few per tag), far below a second of Python.
_MAX_STEPS = 4_000_000


# Up to this many tags, neither limit can be reached: each tag opens at most one
# element and reopens at most one per formatting element, so depth stays under
# twice the tags and elements under their square. Most articles skip the scan.
_FEW_TAGS = MAX_CONTENT_DEPTH // 2


class ContentTooComplex(InvalidInput):
    """Content beyond the bound on sanitizing work; the message names the limit."""


def check_content_limits(html: str) -> None:
    """Raise ``ContentTooComplex`` for HTML beyond ``MAX_CONTENT_DEPTH`` or
    ``MAX_CONTENT_ELEMENTS``, in time linear in its length."""
    if html.count("<") <= _FEW_TAGS:
        return
    _Scan().run(html)


class _Scan:
    def __init__(self) -> None:
        self.names: list[str] = []  # open elements; foreign ones as "svg:g", "math:mi"
        self.ids: list[int] = []
        self.open_ids: set[int] = set()
        self.active: list[tags.Entry | None] = []  # None: a marker
        self.elements = 0
        self.steps = 0
        self.form = False  # the tree builder's form element pointer is set

    # -- the token stream --

    def run(self, html: str) -> None:
        pos = 0
        end = len(html)
        while pos < end:
            match = tags.TOKEN.search(html, pos)
            if match is None:
                self.text()
                return
            if match.start() > pos:
                self.text()
            pos = match.end()
            name = match.group("name")
            if name is None:
                continue  # a comment, doctype or bogus comment
            if not match.group("close"):
                return  # a tag cut off by the end of input is dropped, as is the rest
            name = name.lower() if name.isascii() else name.translate(tags.ASCII_LOWER)
            if match.group("end"):
                self.end_tag(name)
                continue
            skip_to = self.start_tag(name, match.group("attrs"), bool(match.group("selfclosing")))
            if skip_to == "plaintext":
                return
            if skip_to is None:
                continue
            if skip_to == "script":
                pos = self.script_end(html, pos)
            else:
                closing = tags.RAW_TEXT[skip_to].search(html, pos)
                pos = closing.start() if closing else -1
            if pos < 0:
                return  # the rest is that element's text

    @staticmethod
    def script_end(html: str, pos: int) -> int:
        escaped = double = False
        for mark in tags.SCRIPT_MARK.finditer(html, pos):
            token = mark.group(0)
            if token.startswith("<!--"):
                if not escaped and not mark.group("shut"):
                    escaped = True
            elif token == "-->":
                escaped = double = False
            elif mark.group("slash"):
                if not double:
                    return mark.start()
                double = False
            elif escaped:
                double = True
        return -1

    # -- the model --

    def push(self, name: str) -> int:
        self.count()
        if len(self.names) >= MAX_CONTENT_DEPTH:
            raise ContentTooComplex(
                f"HTML elements nesting deeper than {MAX_CONTENT_DEPTH} "
                "(the most this service sanitizes)"
            )
        element = self.elements
        self.names.append(name)
        self.ids.append(element)
        self.open_ids.add(element)
        return element

    def count(self) -> None:
        """An element that is never open (void, or self-closing in SVG/MathML)."""
        self.elements += 1
        if self.elements > MAX_CONTENT_ELEMENTS:
            raise self._too_many()

    @staticmethod
    def _too_many() -> ContentTooComplex:
        return ContentTooComplex(
            f"makes more than {MAX_CONTENT_ELEMENTS:,} HTML elements "
            "(the most this service sanitizes in one article)"
        )

    def pop_to(self, index: int) -> None:
        """Pop the element at ``index`` and everything above it."""
        if self.names[index] in tags.MARKERS:
            self.clear_to_marker()
        self.open_ids.difference_update(self.ids[index:])
        del self.names[index:]
        del self.ids[index:]

    def remove_at(self, index: int) -> None:
        """Take one element off the stack, leaving those above it open."""
        self.open_ids.discard(self.ids[index])
        del self.names[index]
        del self.ids[index]

    def charge(self, steps: int) -> None:
        self.steps += steps
        if self.steps > _MAX_STEPS:
            raise ContentTooComplex(
                f"HTML too tangled to sanitize (more than {_MAX_STEPS:,} steps of checking, "
                f"with up to {MAX_CONTENT_DEPTH} nested elements)"
            )

    def walk(self, names: Container[str], stop: Container[str]) -> int:
        """Index of the topmost open element in ``names``, with none in ``stop``
        above it; -1 if there is none."""
        found = -1
        i = len(self.names) - 1
        while i >= 0:
            name = self.names[i]
            if name in names:
                found = i
                break
            if name in stop:
                break
            i -= 1
        self.charge(len(self.names) - i)
        return found

    def find(self, names: Container[str], boundary: Container[str]) -> int:
        """The topmost open element named in ``names`` with no ``boundary`` element above it."""
        return self.walk(names, boundary)

    def close_p(self) -> None:
        found = self.find({"p"}, tags.BUTTON_SCOPE)
        if found >= 0:
            self.pop_to(found)

    def foreign(self) -> bool:
        """Whether the next tag or text is handled by the SVG/MathML rules."""
        return bool(self.names) and ":" in self.names[-1] and self.names[-1] not in tags.INTEGRATION

    def text(self) -> None:
        if not self.foreign():
            self.reconstruct()

    def reconstruct(self) -> None:
        active = self.active
        if not active or active[-1] is None or active[-1][2] in self.open_ids:
            return
        first = len(active) - 1
        while first > 0:
            entry = active[first - 1]
            if entry is None or entry[2] in self.open_ids:
                break
            first -= 1
        self.charge(len(active) - first)
        for i in range(first, len(active)):
            entry = active[i]
            assert entry is not None
            active[i] = (entry[0], entry[1], self.push(entry[0]))

    def add_formatting(self, name: str, attrs: str) -> None:
        element = self.push(name)
        key = " ".join(attrs.split())
        same = []
        for i in range(len(self.active) - 1, -1, -1):
            entry = self.active[i]
            if entry is None:
                break
            if entry[0] == name and entry[1] == key:
                same.append(i)
        self.charge(len(self.active))
        if len(same) >= 3:  # the "Noah's Ark" clause: at most three alike
            del self.active[same[-1]]
        self.active.append((name, key, element))

    def clear_to_marker(self) -> None:
        while self.active:
            if self.active.pop() is None:
                return

    # -- start tags --

    def start_tag(self, name: str, attrs: str, selfclosing: bool) -> str | None:
        """Handle a start tag; a raw-text element's name when its text follows."""
        if self.foreign():
            breakout = name in tags.BREAKOUT or (
                name == "font" and not tags.FONT_BREAKOUT.isdisjoint(tags.attribute_names(attrs))
            )
            if not breakout:
                prefix = self.names[-1].partition(":")[0]
                if selfclosing:
                    self.count()
                else:
                    self.push(f"{prefix}:{name}{self._html_point(prefix, name, attrs)}")
                return None
            while self.foreign():
                self.pop_to(len(self.names) - 1)
        return self.html_start_tag(name, attrs, selfclosing)

    @staticmethod
    def _html_point(prefix: str, name: str, attrs: str) -> str:
        if prefix == "math" and name == "annotation-xml":
            lowered = attrs.lower()
            if "text/html" in lowered or "application/xhtml+xml" in lowered:
                return "+html"
        return ""

    def html_start_tag(self, name: str, attrs: str, selfclosing: bool) -> str | None:
        if name in tags.IGNORED:
            return None
        if name == "form":
            if self.form and "template" not in self.names:
                return None
            self.form = "template" not in self.names
        # What the tag closes comes first, then the formatting elements it reopens
        # (the order matters: reopened before a closing they would be closed again).
        if name in tags.CLOSES_P:
            self.close_list_item(name)
            self.close_p()
            if name in tags.HEADINGS and self.names and self.names[-1] in tags.HEADINGS:
                self.pop_to(len(self.names) - 1)
        elif name in ("a", "nobr"):
            self.close_formatting(name)
        elif name in ("option", "optgroup") and self.names and self.names[-1] == "option":
            self.pop_to(len(self.names) - 1)
        elif name == "button":
            found = self.find({"button"}, tags.SCOPE)
            if found >= 0:
                self.pop_to(found)
        if name not in tags.NO_RECONSTRUCT:
            self.reconstruct()
        if name in ("svg", "math"):
            if selfclosing:
                self.count()
            else:
                self.push(f"{name}:{name}")
            return None
        if name in tags.VOID:
            self.count()
            return None
        if name in tags.FORMATTING:
            self.add_formatting(name, attrs)
            return None
        if name in ("td", "th", "tr", "caption", "colgroup") or name in tags.TABLE_SECTIONS:
            self.table_part(name)
            return None
        self.push(name)
        if name in tags.MARKERS:
            self.active.append(None)
        if name == "plaintext" or name == "script":
            return name
        return name if name in tags.RAW_TEXT else None

    def close_list_item(self, name: str) -> None:
        if name == "li":
            closes: frozenset[str] = frozenset({"li"})
        elif name in ("dd", "dt"):
            closes = frozenset({"dd", "dt"})
        else:
            return
        found = self.walk(closes, tags.SPECIAL - {"address", "div", "p"})
        if found >= 0:
            self.pop_to(found)

    def close_formatting(self, name: str) -> None:
        """``<a>`` inside an open ``<a>`` (``<nobr>`` in ``<nobr>``) closes it first."""
        for i in range(len(self.active) - 1, -1, -1):
            entry = self.active[i]
            if entry is None:
                return
            if entry[0] == name:
                self.adoption(name)
                if entry in self.active:
                    self.active.remove(entry)
                if entry[2] in self.open_ids:
                    self.remove_at(self.ids.index(entry[2]))
                return

    def table_part(self, name: str) -> None:
        if self.find({"table", "template"}, frozenset({"html"})) < 0:
            return  # outside a table the tree builder ignores these
        if name in ("td", "th"):
            self._close_within_table({"td", "th"})
            if not self.names or self.names[-1] != "tr":
                self._close_within_table({"tr"})
                self._ensure_row_group()
                self.push("tr")
            self.push(name)
            self.active.append(None)
        elif name == "tr":
            self._close_within_table({"tr"})
            self._ensure_row_group()
            self.push("tr")
        elif name in tags.TABLE_SECTIONS:
            self._close_within_table(set(tags.TABLE_SECTIONS))
            self.push(name)
        else:
            self.push(name)
            if name == "caption":
                self.active.append(None)

    def _close_within_table(self, names: set[str]) -> None:
        found = self.find(names, frozenset({"table", "template", "html"}))
        if found >= 0:
            self.pop_to(found)

    def _ensure_row_group(self) -> None:
        if not self.names or self.names[-1] not in tags.TABLE_SECTIONS:
            self.push("tbody")

    # -- end tags --

    def end_tag(self, name: str) -> None:
        if name in ("br", "p"):
            while self.foreign():
                self.pop_to(len(self.names) - 1)
        if self.foreign():
            i = len(self.names) - 1
            while i >= 0 and ":" in self.names[i]:
                if self.names[i].partition(":")[2].removesuffix("+html") == name:
                    self.charge(len(self.names) - i)
                    self.pop_to(i)
                    return
                i -= 1
            self.charge(len(self.names) - i)
        if name in tags.FORMATTING:
            self.adoption(name)
        elif name == "form" and "template" not in self.names:
            # Only the form element leaves the stack: what is open inside it stays open.
            self.form = False
            found = self.find({"form"}, tags.SCOPE)
            if found >= 0:
                self.remove_at(found)
        elif name == "p":
            found = self.find({"p"}, tags.BUTTON_SCOPE)
            if found >= 0:
                self.pop_to(found)
            else:
                self.count()
        elif name == "br":
            self.reconstruct()
            self.count()
        elif name == "li":
            self._pop_in({"li"}, tags.LIST_SCOPE)
        elif name in tags.HEADINGS:
            self._pop_in(set(tags.HEADINGS), tags.SCOPE)
        elif name in ("dd", "dt") or name in tags.ENDS_IN_SCOPE:
            self._pop_in({name}, tags.SCOPE)
        elif name in ("td", "th", "tr", "table", "caption", "template") or (
            name in tags.TABLE_SECTIONS
        ):
            self._pop_in({name}, frozenset({"table", "template", "html"}) - {name})
        elif name not in tags.IGNORED:
            self.any_other_end_tag(name)

    def _pop_in(self, names: set[str], boundary: frozenset[str]) -> None:
        found = self.find(names, boundary)
        if found >= 0:
            self.pop_to(found)

    def any_other_end_tag(self, name: str) -> None:
        found = self.walk({name}, tags.SPECIAL)
        if found >= 0:
            self.pop_to(found)

    def adoption(self, name: str) -> None:
        """The adoption agency algorithm, as far as depth and element count go."""
        if self.names and self.names[-1] == name and self.ids[-1] not in self._active_ids():
            self.pop_to(len(self.names) - 1)
            return
        for _ in range(8):
            index = -1
            for i in range(len(self.active) - 1, -1, -1):
                entry = self.active[i]
                if entry is None:
                    break
                if entry[0] == name:
                    index = i
                    break
            self.charge(len(self.active))
            if index < 0:
                self.any_other_end_tag(name)
                return
            entry = self.active[index]
            assert entry is not None
            element = entry[2]
            if element not in self.open_ids:
                del self.active[index]
                return
            position = self.ids.index(element)
            if any(n in tags.SCOPE for n in self.names[position + 1 :]):
                return  # not in scope: ignored
            furthest = next(
                (j for j in range(position + 1, len(self.names)) if self.names[j] in tags.SPECIAL),
                -1,
            )
            self.charge(len(self.names))
            if furthest < 0:
                del self.active[index]
                self.pop_to(position)
                return
            # The element moves below the furthest block as a new element; up to
            # three formatting elements between them are re-created too. Those the
            # tree builder drops from the stack are kept here (more depth, not less).
            active_ids = self._active_ids()
            between = sum(1 for j in self.ids[position + 1 : furthest] if j in active_ids)
            for _ in range(min(3, between)):
                self.count()
            del self.names[position]
            del self.ids[position]
            self.open_ids.discard(element)
            clone = self.push(name)
            self.names.insert(furthest, self.names.pop())
            self.ids.insert(furthest, self.ids.pop())
            self.active[index] = (name, entry[1], clone)

    def _active_ids(self) -> set[int]:
        self.charge(len(self.active))
        return {entry[2] for entry in self.active if entry is not None}
