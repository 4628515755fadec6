"""RSS 2.0 and Atom 1.0 through feedgen, with its known traps handled.

- ``updated`` / ``lastBuildDate`` are always set from data (feedgen defaults to now).
- Entries are appended, not prepended (feedgen's default reverses the order).
- The RSS channel ``<link>`` is the last ``fg.link()``: the alternate goes last.
- feedgen writes only rel="self" as ``atom:link`` in RSS: hub / first / next are
  added by a small extension.
- Atom content is ``type="html"`` (its CDATA mode is invalid Atom).
- RSS ``<description>`` is the summary escaped for HTML (readers parse it as HTML);
  the full HTML is in ``content:encoded``.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from feedgen.ext.base import BaseExtension  # type: ignore[import-untyped]
from feedgen.feed import FeedGenerator  # type: ignore[import-untyped]
from lxml import etree  # type: ignore[import-untyped]

from .model import FeedInfo, FeedItem

ATOM_NS = "http://www.w3.org/2005/Atom"


class _RssAtomLinks(BaseExtension):  # type: ignore[misc]
    """Adds ``atom:link`` elements (hub, first, next) to the RSS channel."""

    def __init__(self) -> None:
        self.links: list[dict[str, str]] = []

    def extend_rss(self, feed: Any) -> Any:
        channel = feed[0]
        for attrs in self.links:
            etree.SubElement(channel, f"{{{ATOM_NS}}}link", attrs)
        return feed


def _links(info: FeedInfo) -> list[tuple[str, str]]:
    out = []
    if info.hub_url:
        out.append(("hub", info.hub_url))
    if info.first_url:
        out.append(("first", info.first_url))
    if info.next_url:
        out.append(("next", info.next_url))
    return out


def _generator(info: FeedInfo, *, rss: bool, self_type: str) -> FeedGenerator:
    fg = FeedGenerator()
    fg.id(info.id)
    fg.title(info.title)
    fg.description(info.description)
    fg.author({"name": info.author})
    fg.generator(info.generator)
    if info.language:
        fg.language(info.language)
    fg.updated(info.updated)
    fg.lastBuildDate(info.updated)
    fg.link(href=info.self_url, rel="self", type=self_type)
    if rss:
        fg.load_extension("dc", atom=False, rss=True)
        fg.register_extension("syndlinks", _RssAtomLinks, None, atom=False, rss=True)
        fg.syndlinks.links = [{"href": href, "rel": rel} for rel, href in _links(info)]
    else:
        for rel, href in _links(info):
            fg.link(href=href, rel=rel)
    fg.link(href=info.home_url, rel="alternate", type="text/html")
    return fg


def _add_items(fg: FeedGenerator, items: Sequence[FeedItem], *, rss: bool) -> None:
    for item in items:
        article = item.article
        entry = fg.add_entry(order="append")
        entry.id(article.guid)
        entry.guid(article.guid, permalink=False)
        entry.title(article.title)
        entry.link(href=item.link, rel="alternate")
        entry.summary(article.summary)
        if rss:
            # Every reader takes RSS <description> as HTML: the summary is plain text, so
            # it is escaped for HTML here and for XML by feedgen (Atom says type="text").
            entry.description(html.escape(article.summary, quote=False))
        entry.content(article.content, type="html")
        entry.published(article.published_at)
        entry.updated(article.updated_at)
        if article.author:
            if rss:
                entry.dc.dc_creator(article.author)
            else:
                entry.author({"name": article.author})
        for category in item.categories:
            entry.category(term=category.term, label=category.label, scheme=category.scheme)


def render_rss(info: FeedInfo, items: Sequence[FeedItem]) -> bytes:
    fg = _generator(info, rss=True, self_type="application/rss+xml")
    _add_items(fg, items, rss=True)
    body: bytes = fg.rss_str(pretty=False, encoding="UTF-8", xml_declaration=True)
    return body


def render_atom(info: FeedInfo, items: Sequence[FeedItem]) -> bytes:
    fg = _generator(info, rss=False, self_type="application/atom+xml")
    _add_items(fg, items, rss=False)
    body: bytes = fg.atom_str(pretty=False, encoding="UTF-8", xml_declaration=True)
    return body
