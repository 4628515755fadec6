"""Feeds and HTML as a reader shows them: the text a person sees, the links and
images they can follow, the language and the dates, taken from feedparser's
output (RSS, Atom) and from JSON Feed as its spec reads. Used by test_corpus.py."""

from __future__ import annotations

import calendar
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any

import feedparser
from lxml import etree  # type: ignore[import-untyped]

ATOM = "{http://www.w3.org/2005/Atom}"
CONTENT_ENCODED = "{http://purl.org/rss/1.0/modules/content/}encoded"


class Html(HTMLParser):
    """The elements (with their attributes) and the text of an HTML fragment."""

    def __init__(self, value: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.pieces: list[str] = []
        self.feed(value)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data: str) -> None:
        self.pieces.append(data)

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def values(self, tag: str, attribute: str) -> list[str]:
        return [a[attribute] for t, a in self.tags if t == tag and attribute in a]


def shown(detail: Any) -> str | None:
    """The text a reader displays for a feedparser ``*_detail``: HTML is rendered
    (a live tag shows as nothing), text is shown as it is."""
    if detail is None:
        return None
    value = str(detail.get("value", ""))
    if detail.get("type") in ("text/html", "application/xhtml+xml"):
        return Html(value).text
    return value


@dataclass
class Seen:
    """One feed entry as a reader shows it."""

    title: str | None
    summary: str | None
    author: str | None
    link: str | None
    images: set[str]
    language: str | None
    published: datetime | None
    updated: datetime | None
    content: str


@dataclass
class Feed:
    title: str | None
    description: str | None
    entries: dict[str, Seen]


def _time(parsed: Any) -> datetime | None:
    return None if parsed is None else datetime.fromtimestamp(calendar.timegm(parsed), UTC)


def _raw_contents(fmt: str, body: bytes) -> dict[str, str]:
    """Each entry's body as the document carries it (feedparser sanitizes what it
    shows, which would hide what a less careful reader would run)."""
    root = etree.fromstring(body)
    if fmt == "rss":
        return {i.findtext("guid"): i.findtext(CONTENT_ENCODED) or "" for i in root.iter("item")}
    return {
        e.findtext(f"{ATOM}id"): e.findtext(f"{ATOM}content") or ""
        for e in root.iter(f"{ATOM}entry")
    }


def _from_feedparser(entry: Any, content: str) -> Seen:
    images = {e.get("href") for e in entry.get("enclosures", [])}
    images |= {m.get("url") for m in entry.get("media_content", [])}
    title = entry.get("title_detail")
    return Seen(
        title=shown(title),
        summary=shown(entry.get("summary_detail")),
        author=entry.get("author"),
        link=entry.get("link"),
        images={i for i in images if i},
        language=entry.get("language") or (title or {}).get("language"),
        published=_time(entry.get("published_parsed")),
        updated=_time(entry["updated_parsed"]) if "updated_parsed" in entry else None,
        content=content,
    )


def _from_json(item: dict[str, Any]) -> Seen:
    images = {item["image"]} if item.get("image") else set()
    images |= {a["url"] for a in item.get("attachments", [])}
    authors = item.get("authors") or [{}]
    return Seen(
        title=item.get("title"),
        summary=item.get("summary"),
        author=authors[0].get("name"),
        link=item.get("url"),
        images=images,
        language=item.get("language"),
        published=_iso(item.get("date_published")),
        updated=_iso(item.get("date_modified")),
        content=item.get("content_html") or "",
    )


def _iso(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value).astimezone(UTC)


def read_feed(fmt: str, body: bytes) -> Feed:
    """One feed document (``fmt``: rss, atom or json) as a reader sees it."""
    if fmt == "json":
        doc = json.loads(body)
        entries = {i["id"]: _from_json(i) for i in doc["items"]}
        return Feed(doc["title"], doc.get("description"), entries)
    parsed = feedparser.parse(body)
    assert not parsed.bozo, (fmt, parsed.get("bozo_exception"))
    raw = _raw_contents(fmt, body)
    entries = {e.id: _from_feedparser(e, raw[e.id]) for e in parsed.entries}
    feed = parsed.feed
    return Feed(shown(feed.get("title_detail")), shown(feed.get("subtitle_detail")), entries)
