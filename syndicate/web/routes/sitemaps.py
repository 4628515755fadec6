"""``/sitemap.xml`` (a sitemap index past ``SITEMAP_MAX_URLS``), the Google News
sitemap ``/sitemap-news.xml`` and ``/robots.txt`` naming both.

Built from ``list_articles`` pages (newest first, keyset cursors), never holding more
than one page of articles. An article whose canonical URL is elsewhere (``url``) is
left out: a sitemap lists this site's canonical pages only.
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Hashable
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from aiohttp import web

from storage import Storage
from storage.records import Article, Topic
from syndicate.content.articles import permalink
from syndicate.web.appkeys import SETTINGS, STORAGE
from syndicate.web.pagemeta import SITE_LANGUAGE, iso_time
from syndicate.web.requests import not_modified
from syndicate.web.routes.pages import PAGE_CACHE_CONTROL, SECURITY_HEADERS, SITE_TITLE, Urls

routes = web.RouteTableDef()

SITEMAP_NS = "http://www.sitemaps.org/schemas/sitemap/0.9"
NEWS_NS = "http://www.google.com/schemas/sitemap-news/0.9"
XML_CONTENT_TYPE = "application/xml"
#: At most this many URLs in one sitemap (the protocol's limit); past it, an index.
SITEMAP_MAX_URLS = 50_000
#: Articles read from storage at a time.
READ_CHUNK = 500
#: A news sitemap holds articles of the last two days, at most 1,000 (Google's rules).
NEWS_WINDOW = timedelta(days=2)
NEWS_MAX_URLS = 1000


@dataclass(frozen=True)
class Entry:
    loc: str
    lastmod: datetime | None


# -- robots.txt --------------------------------------------------------------------


@routes.get("/robots.txt")
async def robots(request: web.Request) -> web.Response:
    base = request.app[SETTINGS].base_url
    text = (
        "User-agent: *\n"
        "Disallow: /api/\n"
        "Disallow: /hub\n"
        "Disallow: /portal\n"
        "\n"
        f"Sitemap: {base}/sitemap.xml\n"
        f"Sitemap: {base}/sitemap-news.xml\n"
    )
    return _respond(request, text.encode(), "text/plain", None)


# -- sitemap.xml -------------------------------------------------------------------


class SitemapCache:
    """Built sitemaps by path, each with what it was built from: the last event of the
    change log (and, for ``/sitemap.xml``, the topics). A sitemap walks every listed
    article, so a public GET must not build it again while nothing changed."""

    MAX_PATHS = 64

    def __init__(self) -> None:
        self._built: dict[str, tuple[Hashable, bytes, datetime | None]] = {}

    def get(self, path: str, key: Hashable) -> tuple[bytes, datetime | None] | None:
        hit = self._built.get(path)
        return (hit[1], hit[2]) if hit is not None and hit[0] == key else None

    def put(self, path: str, key: Hashable, body: bytes, modified: datetime | None) -> None:
        self._built.pop(path, None)
        if len(self._built) >= self.MAX_PATHS:
            self._built.pop(next(iter(self._built)))
        self._built[path] = (key, body, modified)


SITEMAP_CACHE = web.AppKey("sitemap_cache", SitemapCache)


async def _cached(
    request: web.Request,
    key: Hashable,
    build: Callable[[], Awaitable[tuple[bytes, datetime | None]]],
) -> web.Response:
    cache = request.app[SITEMAP_CACHE]
    hit = cache.get(request.path, key)
    if hit is None:
        hit = await build()
        cache.put(request.path, key, *hit)
    return _respond(request, hit[0], XML_CONTENT_TYPE, hit[1])


@routes.get("/sitemap.xml")
async def sitemap(request: web.Request) -> web.Response:
    """One ``urlset`` while everything fits; otherwise an index of
    ``/sitemaps/pages.xml`` and ``/sitemaps/articles-N.xml``."""
    store = request.app[STORAGE]
    topics = await store.list_topics()
    state = await store.feed_state(None)
    key = (state.seq, tuple((t.slug, t.updated_at, t.changed_at, t.article_count) for t in topics))
    return await _cached(request, key, lambda: _build_sitemap(request, topics))


async def _build_sitemap(
    request: web.Request, topics: list[Topic]
) -> tuple[bytes, datetime | None]:
    store = request.app[STORAGE]
    urls = Urls(request.app[SETTINGS].base_url)
    fixed = _fixed_entries(topics, urls)
    room = SITEMAP_MAX_URLS - len(fixed)
    first = await _collect(_article_entries(store, urls, skip=0, limit=room + 1))
    if len(first) <= room:
        entries = fixed + first
        return _urlset(entries), _newest(entries)
    children = [Entry(f"{urls.base}/sitemaps/pages.xml", _newest(fixed))]
    number = 0
    while True:
        skip = number * SITEMAP_MAX_URLS
        page = await _collect(_article_entries(store, urls, skip=skip, limit=SITEMAP_MAX_URLS))
        if not page:
            break
        number += 1
        children.append(Entry(f"{urls.base}/sitemaps/articles-{number}.xml", _newest(page)))
    return _index(children), _newest(children)


@routes.get("/sitemaps/pages.xml")
async def pages_sitemap(request: web.Request) -> web.Response:
    urls = Urls(request.app[SETTINGS].base_url)
    entries = _fixed_entries(await request.app[STORAGE].list_topics(), urls)
    return _respond(request, _urlset(entries), XML_CONTENT_TYPE, _newest(entries))


@routes.get(r"/sitemaps/articles-{number:[1-9][0-9]{0,8}}.xml")
async def articles_sitemap(request: web.Request) -> web.Response:
    number = int(request.match_info["number"])
    store = request.app[STORAGE]

    async def build() -> tuple[bytes, datetime | None]:
        urls = Urls(request.app[SETTINGS].base_url)
        skip = (number - 1) * SITEMAP_MAX_URLS
        entries = await _collect(_article_entries(store, urls, skip=skip, limit=SITEMAP_MAX_URLS))
        if not entries:
            raise web.HTTPNotFound()
        return _urlset(entries), _newest(entries)

    return await _cached(request, (await store.feed_state(None)).seq, build)


async def _collect(entries: AsyncIterator[Entry]) -> list[Entry]:
    return [entry async for entry in entries]


def _fixed_entries(topics: list[Topic], urls: Urls) -> list[Entry]:
    """The home page, then each topic page that has articles."""
    entries = [
        Entry(urls.topic(t.slug), max(t.updated_at, t.changed_at or t.updated_at))
        for t in topics
        if t.article_count
    ]
    return [Entry(urls.home(), _newest(entries)), *entries]


async def _article_entries(
    store: Storage, urls: Urls, *, skip: int, limit: int
) -> AsyncIterator[Entry]:
    """Up to ``limit`` listed articles after the first ``skip``, newest first."""
    seen = 0
    async with aclosing(_listed(store)) as listed:
        async for article in listed:
            if seen >= skip + limit:
                return
            if seen >= skip:
                yield Entry(urls.article(article), article.modified_at)
            seen += 1


async def _listed(store: Storage) -> AsyncGenerator[Article]:
    """Every live article whose canonical page is here, newest first."""
    before: tuple[datetime, str] | None = None
    while True:
        chunk = await store.list_articles(limit=READ_CHUNK, before=before)
        for article in chunk:
            if article.url is None:
                yield article
        if len(chunk) < READ_CHUNK:
            return
        before = (chunk[-1].published_at, chunk[-1].id)


def _urlset(entries: list[Entry]) -> bytes:
    return _listing("urlset", "url", entries)


def _index(children: list[Entry]) -> bytes:
    return _listing("sitemapindex", "sitemap", children)


def _listing(root_tag: str, entry_tag: str, entries: list[Entry]) -> bytes:
    """A ``<urlset>`` of ``<url>``s or a ``<sitemapindex>`` of ``<sitemap>``s: the
    same ``loc`` and optional ``lastmod`` in each."""
    root = ET.Element(root_tag, xmlns=SITEMAP_NS)
    for entry in entries:
        element = ET.SubElement(root, entry_tag)
        ET.SubElement(element, "loc").text = entry.loc
        if entry.lastmod is not None:
            ET.SubElement(element, "lastmod").text = iso_time(entry.lastmod)
    return _document(root)


# -- the Google News sitemap -------------------------------------------------------


@routes.get("/sitemap-news.xml")
async def news_sitemap(request: web.Request) -> web.Response:
    """Articles published in the last two days, newest first, at most 1,000."""
    store = request.app[STORAGE]
    base_url = request.app[SETTINGS].base_url
    since = datetime.now(UTC) - NEWS_WINDOW
    recent: list[Article] = []
    async with aclosing(_listed(store)) as listed:
        async for article in listed:
            if article.published_at < since or len(recent) == NEWS_MAX_URLS:
                break
            recent.append(article)
    root = ET.Element("urlset", {"xmlns": SITEMAP_NS, "xmlns:news": NEWS_NS})
    for article in recent:
        url = ET.SubElement(root, "url")
        ET.SubElement(url, "loc").text = permalink(base_url, article)
        news = ET.SubElement(url, "news:news")
        publication = ET.SubElement(news, "news:publication")
        ET.SubElement(publication, "news:name").text = SITE_TITLE
        ET.SubElement(publication, "news:language").text = news_language(article.language)
        ET.SubElement(news, "news:publication_date").text = iso_time(article.published_at)
        ET.SubElement(news, "news:title").text = article.title
    newest = max((a.modified_at for a in recent), default=None)
    return _respond(request, _document(root), XML_CONTENT_TYPE, newest)


def news_language(language: str | None) -> str:
    """Google News' language code: ISO 639 (``en``, ``ar``), except Chinese, which is
    ``zh-cn`` (simplified) or ``zh-tw`` (traditional: Hant, Taiwan, Hong Kong, Macau)."""
    subtags = (language or SITE_LANGUAGE).lower().split("-")
    if subtags[0] != "zh":
        return subtags[0]
    return "zh-tw" if {"hant", "tw", "hk", "mo"} & set(subtags[1:]) else "zh-cn"


# -- responses ---------------------------------------------------------------------


def _newest(entries: list[Entry]) -> datetime | None:
    return max((e.lastmod for e in entries if e.lastmod is not None), default=None)


def _document(root: ET.Element) -> bytes:
    ET.indent(root)
    document: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return document + b"\n"


def _respond(
    request: web.Request, body: bytes, content_type: str, modified: datetime | None
) -> web.Response:
    """The document with a strong ETag of its bytes (304 when it matches) and
    ``Last-Modified`` from the newest ``lastmod`` in it."""
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {**SECURITY_HEADERS, "Cache-Control": PAGE_CACHE_CONTROL, "ETag": etag}
    if modified is not None:
        headers["Last-Modified"] = modified.astimezone(UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")
    if not_modified(request, (etag,), modified):
        headers.pop("Last-Modified", None)
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type=content_type, charset="utf-8", headers=headers)
