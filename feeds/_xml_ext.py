"""feedgen extensions for what feedgen does not write (or writes wrongly).

- RSS ``atom:link`` hub / first / next (feedgen writes only rel="self").
- Per entry: the language (``xml:lang``; RSS also has ``dc:language``), the image
  (RSS ``enclosure`` and ``media:content``; Atom ``link rel="enclosure"``, since
  feedgen 1.0 drops ``rel`` and ``type`` from every entry link it writes).
- Atom RFC 6721 ``at:deleted-entry`` elements for tombstones.

Namespaces are declared only by feeds that use them, so a feed without images or
deletions is the same bytes as before they existed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from feedgen.ext.base import BaseEntryExtension, BaseExtension  # type: ignore[import-untyped]
from lxml import etree  # type: ignore[import-untyped]

from storage.records import format_time

from .model import Tombstone

ATOM_NS = "http://www.w3.org/2005/Atom"
MEDIA_NS = "http://search.yahoo.com/mrss/"
TOMBSTONES_NS = "http://purl.org/atompub/tombstones/1.0"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
#: RSS ``enclosure`` needs a length; 0 is the RSS Best Practices Profile's "unknown".
UNKNOWN_LENGTH = "0"


def rfc3339(value: Any) -> str:
    """RFC 3339 in UTC, without fractions when there are none."""
    return format_time(value).replace(".000000Z", "Z")


class FeedExtras(BaseExtension):  # type: ignore[misc]
    """Feed-level additions: RSS atom links, namespaces, Atom tombstones."""

    def __init__(self) -> None:
        self.links: list[dict[str, str]] = []
        self.media = False
        self.deleted: Sequence[Tombstone] = ()

    def extend_ns(self) -> dict[str, str]:
        namespaces = {}
        if self.media:
            namespaces["media"] = MEDIA_NS
        if self.deleted:
            namespaces["at"] = TOMBSTONES_NS
        return namespaces

    def extend_rss(self, feed: Any) -> Any:
        channel = feed[0]
        for attrs in self.links:
            etree.SubElement(channel, f"{{{ATOM_NS}}}link", attrs)
        return feed

    def extend_atom(self, feed: Any) -> Any:
        for tombstone in self.deleted:
            element = etree.SubElement(
                feed,
                f"{{{TOMBSTONES_NS}}}deleted-entry",
                {"ref": tombstone.ref, "when": rfc3339(tombstone.when)},
            )
            if tombstone.link:
                etree.SubElement(element, "link", {"href": tombstone.link})
        return feed


class EntryExtras(BaseEntryExtension):  # type: ignore[misc]
    """Per-entry additions: language and image."""

    def __init__(self) -> None:
        self.language: str | None = None
        self.image: tuple[str, str] | None = None  # (url, media type)

    def extend_atom(self, entry: Any) -> Any:
        if self.language:
            entry.set(XML_LANG, self.language)
        if self.image:
            url, media_type = self.image
            attrs = {"rel": "enclosure", "href": url, "type": media_type}
            etree.SubElement(entry, "link", attrs)  # feedgen's Atom elements: no prefix
        return entry

    def extend_rss(self, item: Any) -> Any:
        if self.language:  # beside dc:language: feedparser gives it to the content
            item.set(XML_LANG, self.language)
        if self.image:
            url, media_type = self.image
            attrs = {"url": url, "length": UNKNOWN_LENGTH, "type": media_type}
            etree.SubElement(item, "enclosure", attrs)
            attrs = {"url": url, "type": media_type, "medium": "image"}
            etree.SubElement(item, f"{{{MEDIA_NS}}}content", attrs)
        return item
