"""Public HTML pages (the index, topic pages, article pages) and the OPML list.

Pages are rendered with Jinja2, autoescaping on: only the stored article
content, already sanitized with nh3 on the way in, is marked safe.
Missing and deleted pages answer with HTML error pages, not problem+json.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import quote

import jinja2
from aiohttp import web
from markupsafe import Markup, escape

from storage import ArticleNotFound, Storage, TopicNotFound
from storage.records import Article, Topic, default_topic_title
from syndicate.content.articles import BadCursor, decode_cursor, encode_cursor, permalink
from syndicate.content.models import SLUG_PATTERN, valid_article_id
from syndicate.content.text import excerpt
from syndicate.core.names import ALL_TOPICS_SLUG, valid_topic
from syndicate.web.appkeys import SETTINGS, STORAGE
from syndicate.web.pagemeta import (
    SITE_LANGUAGE,
    article_json_ld,
    iso_time,
    lang_attributes,
    language_of,
    og_locale,
    script_json,
)
from syndicate.web.templating import environment

routes = web.RouteTableDef()

SITE_TITLE = "Syndicate"
TOPIC_PAGE_SIZE = 20
HOME_ARTICLE_COUNT = 10
RECOMMENDED_COUNT = 5
LIST_EXCERPT_LENGTH = 160
DESCRIPTION_LENGTH = 200
RECOMMENDED_EXCERPT_LENGTH = 70
PAGE_CACHE_CONTROL = "public, max-age=60"
OPML_CONTENT_TYPE = "text/x-opml"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; img-src https: http: data:; style-src 'self' 'unsafe-inline'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "strict-origin-when-cross-origin",
}

#: (file extension, label, media type) of each feed format, in display order.
FEED_FORMATS = (
    ("rss", "RSS", "application/rss+xml"),
    ("atom", "Atom", "application/atom+xml"),
    ("json", "JSON Feed", "application/feed+json"),
)
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_SLUG = re.compile(SLUG_PATTERN)


@dataclass(frozen=True)
class Feed:
    label: str
    media_type: str
    href: str


class Urls:
    """Absolute URLs, all built on the configured base URL (which may carry a path)."""

    def __init__(self, base_url: str) -> None:
        self.base = base_url

    def home(self) -> str:
        return self.base + "/"

    def opml(self) -> str:
        return self.base + "/opml"

    def topic(self, slug: str, *, before: str | None = None) -> str:
        url = f"{self.base}/topics/{quote(slug, safe='')}"
        return url if before is None else f"{url}?before={quote(before, safe='')}"

    def article(self, article: Article) -> str:
        return permalink(self.base, article)

    def canonical(self, article: Article) -> str:
        return article.url or permalink(self.base, article)

    def feed(self, slug: str, ext: str) -> str:
        return f"{self.base}/feeds/{quote(slug, safe='')}.{ext}"

    def feeds(self, slug: str) -> list[Feed]:
        return [
            Feed(label, media_type, self.feed(slug, ext)) for ext, label, media_type in FEED_FORMATS
        ]


def _human_date(value: datetime) -> str:
    value = value.astimezone(UTC)
    return f"{value.day} {_MONTHS[value.month - 1]} {value.year}"


def _lang_attrs(language: str, within: str | None = None) -> Markup:
    """`` lang="…" dir="…"`` for an element in ``language`` inside one in ``within``
    (nothing when it is the same language)."""
    pairs = lang_attributes(language, within=within).items()
    return Markup("".join(f' {name}="{escape(value)}"' for name, value in pairs))


def _make_templates() -> jinja2.Environment:
    env = environment()
    env.filters["human_date"] = _human_date
    env.filters["html_time"] = iso_time
    env.filters["excerpt"] = excerpt
    env.globals["site_title"] = SITE_TITLE
    env.globals["all_topics"] = ALL_TOPICS_SLUG
    env.globals["site_lang"] = SITE_LANGUAGE
    env.globals["lang_attrs"] = _lang_attrs
    env.globals["lang_of"] = language_of
    env.filters["iso_time"] = iso_time
    env.filters["og_locale"] = og_locale
    return env


_templates = _make_templates()


def _page(
    request: web.Request, template: str, *, status: int = 200, **context: Any
) -> web.Response:
    urls = Urls(request.app[SETTINGS].base_url)
    context.setdefault("page_lang", SITE_LANGUAGE)
    body = _templates.get_template(template).render(urls=urls, **context)
    return web.Response(
        status=status,
        text=body,
        content_type="text/html",
        charset="utf-8",
        headers={**SECURITY_HEADERS, "Cache-Control": PAGE_CACHE_CONTROL},
    )


def _error(request: web.Request, status: int, title: str, message: str) -> web.Response:
    return _page(request, "error.html", status=status, title=title, message=message)


def _not_found(request: web.Request, what: str) -> web.Response:
    return _error(request, 404, "Page not found", f"There is no {what} at this address.")


# -- the index ---------------------------------------------------------------------


@routes.get("/")
async def index(request: web.Request) -> web.Response:
    store = request.app[STORAGE]
    topics = await store.list_topics()
    latest = await store.list_articles(limit=HOME_ARTICLE_COUNT)
    return _page(
        request, "index.html", topics=topics, latest=latest, excerpt_length=LIST_EXCERPT_LENGTH
    )


# -- topic pages -------------------------------------------------------------------


@routes.get("/topics/{slug}")
async def topic_page(request: web.Request) -> web.Response:
    slug = request.match_info["slug"]
    store = request.app[STORAGE]
    if not valid_topic(slug):
        return _not_found(request, "topic")
    try:
        topic = await store.get_topic(slug)
    except TopicNotFound:
        return _not_found(request, "topic")
    before = None
    if request.query.get("before"):
        try:
            before = decode_cursor(request.query["before"])
        except BadCursor:
            return _error(
                request, 400, "Bad page link", "This page link is not one this site made."
            )
    page = await store.list_articles(topic=slug, limit=TOPIC_PAGE_SIZE + 1, before=before)
    older = encode_cursor(page[TOPIC_PAGE_SIZE - 1]) if len(page) > TOPIC_PAGE_SIZE else None
    page = page[:TOPIC_PAGE_SIZE]
    newer: str | None = None
    if before is not None:
        newer = await _newer_page(request, store, slug, page)
    return _page(
        request,
        "topic.html",
        topic=topic,
        articles=page,
        older=older,
        newer=newer,
        paged=before is not None,
        excerpt_length=LIST_EXCERPT_LENGTH,
    )


async def _newer_page(request: web.Request, store: Storage, slug: str, page: list[Article]) -> str:
    """The URL of the page just before this one: the first page, or one whose
    ``before`` cursor is the article just newer than it."""
    urls = Urls(request.app[SETTINGS].base_url)
    if not page:
        return urls.topic(slug)
    first = page[0]
    newer = await store.list_articles(
        topic=slug, after=(first.published_at, first.id), limit=TOPIC_PAGE_SIZE + 1
    )
    if len(newer) <= TOPIC_PAGE_SIZE:
        return urls.topic(slug)
    return urls.topic(slug, before=encode_cursor(newer[TOPIC_PAGE_SIZE]))


# -- article pages -----------------------------------------------------------------


@routes.get("/articles/{slug}")
async def article_page(request: web.Request) -> web.Response:
    slug = request.match_info["slug"]
    store = request.app[STORAGE]
    if not _SLUG.match(slug):
        return _not_found(request, "article")
    try:
        article = await store.get_article_by_slug(slug)
    except ArticleNotFound:
        return await _redirect_from_id(request, slug)
    if article.scheduled:  # not published yet: readers cannot know it exists
        return _not_found(request, "article")
    if article.deleted:
        return _error(request, 410, "This article was deleted", "It is no longer published here.")
    topics = [await _topic_or_default(store, t) for t in article.topics]
    urls = Urls(request.app[SETTINGS].base_url)
    description = excerpt(article.summary, DESCRIPTION_LENGTH) if article.summary else ""
    json_ld = article_json_ld(
        article,
        canonical=urls.canonical(article),
        home=urls.home(),
        site_name=SITE_TITLE,
        description=description,
        sections=[t.title for t in topics],
    )
    position = (article.published_at, article.id)
    first = article.topics[0]
    older = await store.list_articles(topic=first, before=position, limit=1)
    newer = await store.list_articles(topic=first, after=position, limit=1)
    return _page(
        request,
        "article.html",
        article=article,
        page_lang=language_of(article),
        description=description,
        modified=article.modified_at,
        json_ld=Markup(script_json(json_ld)),
        topics=topics,
        previous=older[0] if older else None,
        next=newer[0] if newer else None,
        recommended=await _recommended(store, article),
        excerpt_length=RECOMMENDED_EXCERPT_LENGTH,
    )


async def _redirect_from_id(request: web.Request, slug: str) -> web.Response:
    """``/articles/{id}`` is a stable alias: it moves to the article's slug page."""
    if not valid_article_id(slug):
        return _not_found(request, "article")
    try:
        article = await request.app[STORAGE].get_article(slug)
    except ArticleNotFound:
        return _not_found(request, "article")
    if article.scheduled:
        return _not_found(request, "article")
    location = permalink(request.app[SETTINGS].base_url, article)
    return web.Response(status=301, headers={"Location": location, **SECURITY_HEADERS})


async def _topic_or_default(store: Storage, slug: str) -> Topic:
    try:
        return await store.get_topic(slug)
    except TopicNotFound:  # only in a race with a topic's removal; show the slug's title
        epoch = datetime.fromtimestamp(0, UTC)
        return Topic(slug, default_topic_title(slug), "", epoch, epoch)


async def _recommended(store: Storage, article: Article) -> list[Article]:
    """The newest articles of each of its topics in turn, then the newest overall."""
    seen = {article.id}
    picked: list[Article] = []

    def take(candidates: list[Article]) -> None:
        for candidate in candidates:
            if len(picked) == RECOMMENDED_COUNT:
                return
            if candidate.id not in seen:
                seen.add(candidate.id)
                picked.append(candidate)

    for topic in article.topics:
        if len(picked) == RECOMMENDED_COUNT:
            return picked
        # Enough rows that skipping every article already seen still fills the list.
        take(await store.list_articles(topic=topic, limit=RECOMMENDED_COUNT + len(seen)))
    if len(picked) < RECOMMENDED_COUNT:
        take(await store.list_articles(limit=RECOMMENDED_COUNT + len(seen)))
    return picked


# -- OPML --------------------------------------------------------------------------


@routes.get("/opml")
async def opml(request: web.Request) -> web.Response:
    topics = await request.app[STORAGE].list_topics()
    urls = Urls(request.app[SETTINGS].base_url)
    return web.Response(
        body=opml_document(topics, urls),
        content_type=OPML_CONTENT_TYPE,
        charset="utf-8",
        headers={**SECURITY_HEADERS, "Cache-Control": PAGE_CACHE_CONTROL},
    )


def opml_document(topics: list[Topic], urls: Urls) -> bytes:
    """OPML 2.0: the all-topics RSS feed, then each topic's. Dates come from the
    stored topics, so the same data always gives the same bytes."""
    root = ET.Element("opml", version="2.0")
    head = ET.SubElement(root, "head")
    ET.SubElement(head, "title").text = f"{SITE_TITLE} feeds"
    if topics:
        created = min(t.created_at for t in topics).astimezone(UTC)
        modified = max(t.updated_at for t in topics).astimezone(UTC)
        ET.SubElement(head, "dateCreated").text = format_datetime(created, usegmt=True)
        ET.SubElement(head, "dateModified").text = format_datetime(modified, usegmt=True)
    body = ET.SubElement(root, "body")
    entries = [("All topics", f"Every article on {SITE_TITLE}", ALL_TOPICS_SLUG, urls.home())]
    entries += [(t.title, t.description, t.slug, urls.topic(t.slug)) for t in topics]
    for title, description, slug, html_url in entries:
        attributes = {
            "type": "rss",
            "version": "RSS2",
            "text": title,
            "title": title,
            "xmlUrl": urls.feed(slug, "rss"),
            "htmlUrl": html_url,
        }
        if description:
            attributes["description"] = description
        ET.SubElement(body, "outline", attributes)
    ET.indent(root)
    document: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return document + b"\n"
