"""RSS 2.0 and Atom 1.0 through feedgen, with its known traps handled.

- ``updated`` / ``lastBuildDate`` are always set from data (feedgen defaults to now);
  an entry's ``updated`` is its article's last real change (``Article.modified_at``).
- Entries are appended, not prepended (feedgen's default reverses the order).
- The RSS channel ``<link>`` is the last ``fg.link()``: the alternate goes last.
- What feedgen does not write (RSS hub / first / next links, languages, images,
  tombstones) is added by the extensions in ``_xml_ext``.
- Atom content is ``type="html"`` (its CDATA mode is invalid Atom).
- RSS ``<description>`` (an item's summary, the channel's description) is text
  escaped for HTML: readers parse it as HTML. The full HTML is in ``content:encoded``.
  RSS titles are escaped for HTML only when they look like HTML (``rss_text``):
  there, readers guess.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from feedgen.feed import FeedGenerator  # type: ignore[import-untyped]

from ._fields import image_type, rss_text, shared_language
from ._xml_ext import EntryExtras, FeedExtras
from .model import FeedInfo, FeedItem


def _links(info: FeedInfo) -> list[tuple[str, str]]:
    out = []
    if info.hub_url:
        out.append(("hub", info.hub_url))
    if info.first_url:
        out.append(("first", info.first_url))
    if info.next_url:
        out.append(("next", info.next_url))
    return out


def _generator(info: FeedInfo, items: Sequence[FeedItem], *, rss: bool) -> FeedGenerator:
    fg = FeedGenerator()
    fg.id(info.id)
    fg.title(rss_text(info.title) if rss else info.title)
    # RSS's channel description is HTML to readers (feedparser takes it as HTML
    # always), like an item's; Atom's subtitle is text.
    fg.description(html.escape(info.description, quote=False) if rss else info.description)
    fg.author({"name": info.author})
    fg.generator(info.generator)
    language = info.language or shared_language(items)
    if language:
        fg.language(language)
    fg.updated(info.updated)
    fg.lastBuildDate(info.updated)
    self_type = "application/rss+xml" if rss else "application/atom+xml"
    fg.link(href=info.self_url, rel="self", type=self_type)
    fg.register_extension("syndextras", FeedExtras, EntryExtras, atom=True, rss=True)
    extras: FeedExtras = fg.syndextras
    if rss:
        fg.load_extension("dc", atom=False, rss=True)
        extras.links = [{"href": href, "rel": rel} for rel, href in _links(info)]
        extras.media = any(item.article.image for item in items)
    else:
        for rel, href in _links(info):
            fg.link(href=href, rel=rel)
        extras.deleted = info.deleted
    fg.link(href=info.home_url, rel="alternate", type="text/html")
    return fg


def _add_items(fg: FeedGenerator, items: Sequence[FeedItem], *, rss: bool) -> None:
    for item in items:
        article = item.article
        entry = fg.add_entry(order="append")
        entry.id(article.guid)
        entry.guid(article.guid, permalink=False)
        entry.title(rss_text(article.title) if rss else article.title)
        entry.link(href=item.link, rel="alternate")
        entry.summary(article.summary)
        if rss:
            # Every reader takes RSS <description> as HTML: the summary is plain text, so
            # it is escaped for HTML here and for XML by feedgen (Atom says type="text").
            entry.description(html.escape(article.summary, quote=False))
        entry.content(article.content, type="html")
        entry.published(article.published_at)
        entry.updated(article.modified_at)
        if article.author:
            if rss:
                entry.dc.dc_creator(article.author)
            else:
                entry.author({"name": article.author})
        for category in item.categories:
            entry.category(term=category.term, label=category.label, scheme=category.scheme)
        extras: EntryExtras = entry.syndextras
        if article.language:
            extras.language = article.language
            if rss:
                entry.dc.dc_language(article.language)
        if article.image:
            extras.image = (article.image, image_type(article.image))


def render_rss(info: FeedInfo, items: Sequence[FeedItem]) -> bytes:
    fg = _generator(info, items, rss=True)
    _add_items(fg, items, rss=True)
    body: bytes = fg.rss_str(pretty=False, encoding="UTF-8", xml_declaration=True)
    return body


def render_atom(info: FeedInfo, items: Sequence[FeedItem]) -> bytes:
    fg = _generator(info, items, rss=False)
    _add_items(fg, items, rss=False)
    body: bytes = fg.atom_str(pretty=False, encoding="UTF-8", xml_declaration=True)
    return body
