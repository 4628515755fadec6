"""The operator's article and topic pages: find articles (by title, by topic), read
one, delete it; edit a topic's title and description. Deleting and saving go
through the same functions as the JSON API (``routes.articles``)."""

from __future__ import annotations

from typing import Final
from urllib.parse import quote, urlencode

from aiohttp import web
from markupsafe import Markup

from storage import ListCursor, Storage, TopicNotFound
from storage.records import Article
from syndicate.content.articles import BadCursor, decode_cursor, encode_cursor, permalink
from syndicate.content.models import TopicIn, valid_article_id
from syndicate.content.validation import validate
from syndicate.core.errors import Problem
from syndicate.core.names import valid_topic
from syndicate.web.appkeys import SETTINGS, STORAGE
from syndicate.web.portal.render import notice_from, page, see_other
from syndicate.web.portal.session import read_form, require
from syndicate.web.routes.articles import check_topic_slug, remove_article, save_topic

routes = web.RouteTableDef()
ARTICLES_PAGE: Final = 50
#: Longest title search taken (a title is at most a few hundred characters).
MAX_QUERY: Final = 200
_ARTICLE_NOTICES: Final = {"deleted": "The article was deleted; its readers and partners are told."}
_TOPIC_NOTICES: Final = {"saved": "The topic was saved."}


async def _article(request: web.Request) -> Article:
    article_id = request.match_info["id"]
    if not valid_article_id(article_id):
        raise Problem(404, "there is no article with that id")
    return await request.app[STORAGE].get_article(article_id)


def _article_url(article: Article) -> str:
    return f"/portal/articles/{_quoted(article.id)}"


def _quoted(value: str) -> str:
    return quote(value, safe="")


async def _topic_exists(storage: Storage, slug: str) -> bool:
    if not valid_topic(slug):
        return False
    try:
        await storage.get_topic(slug)
    except TopicNotFound:
        return False
    return True


async def _filter_errors(
    storage: Storage, query: str, topic: str, cursor: str | None
) -> tuple[dict[str, str], ListCursor | None]:
    """The filter form's errors (shown beside its fields) and the decoded cursor."""
    errors: dict[str, str] = {}
    if len(query) > MAX_QUERY:
        errors["q"] = f"search at most {MAX_QUERY} characters of a title"
    if topic and not await _topic_exists(storage, topic):
        errors["topic"] = "there is no such topic"
    before = None
    if cursor is not None:
        try:
            before = decode_cursor(cursor)
        except BadCursor:
            # No field of the form holds it: the summary names no field.
            errors[""] = "this page link is broken: start again from the first page"
    return errors, before


@routes.get("/portal/articles")
async def articles(request: web.Request) -> web.Response:
    await require(request, "operator")
    storage = request.app[STORAGE]
    query = request.query.get("q", "").strip()
    topic = request.query.get("topic", "").strip()
    cursor = request.query.get("cursor") or None
    errors, before = await _filter_errors(storage, query, topic, cursor)
    rows: list[Article] = []
    next_url = None
    if not errors and query:
        rows = await storage.search_articles(query, topic=topic or None, limit=ARTICLES_PAGE)
    elif not errors:
        rows = await storage.list_articles(
            topic=topic or None, limit=ARTICLES_PAGE + 1, before=before
        )
        if len(rows) > ARTICLES_PAGE:
            rows = rows[:ARTICLES_PAGE]
            params = {**({"topic": topic} if topic else {}), "cursor": encode_cursor(rows[-1])}
            next_url = f"/portal/articles?{urlencode(params)}"
    return page(
        request,
        "articles.html",
        status=422 if errors else 200,
        nav="articles",
        q=query,
        topic=topic,
        topics=await storage.list_topics(),
        errors=errors,
        articles=rows,
        searched=bool(query),
        limit=ARTICLES_PAGE,
        next_url=next_url,
        paged=cursor is not None,
        first_url="/portal/articles" + (f"?{urlencode({'topic': topic})}" if topic else ""),
        article_url=_article_url,
        notice=notice_from(request, _ARTICLE_NOTICES),
    )


@routes.get("/portal/articles/{id}")
async def article(request: web.Request) -> web.Response:
    await require(request, "operator")
    found = await _article(request)
    return page(
        request,
        "article.html",
        nav="articles",
        article=found,
        public_url=None if found.deleted else permalink(request.app[SETTINGS].base_url, found),
        content=Markup(found.content),  # sanitized (nh3) when it was stored, as pages show it
        article_url=_article_url,
        notice=notice_from(request, _ARTICLE_NOTICES),
    )


@routes.get("/portal/articles/{id}/delete")
async def confirm_delete(request: web.Request) -> web.Response:
    await require(request, "operator")
    found = await _article(request)
    if found.deleted:
        return see_other(_article_url(found))
    return page(
        request, "article_delete.html", nav="articles", article=found, article_url=_article_url
    )


@routes.post("/portal/articles/{id}/delete")
async def delete(request: web.Request) -> web.Response:
    await require(request, "operator")
    await read_form(request)
    found = await _article(request)
    await remove_article(request.app, found.id)
    return see_other(_article_url(found), notice="deleted")


@routes.get("/portal/topics")
async def topics(request: web.Request) -> web.Response:
    await require(request, "operator")
    return page(
        request,
        "topics.html",
        nav="topics",
        topics=await request.app[STORAGE].list_topics(),
        notice=notice_from(request, _TOPIC_NOTICES),
    )


async def _topic_page(request: web.Request) -> tuple[str, dict[str, str]]:
    """The topic in the path (404 unless it exists) and its form's values."""
    slug = request.match_info["slug"]
    if not valid_topic(slug):
        raise TopicNotFound(slug)
    found = await request.app[STORAGE].get_topic(slug)
    return slug, {"title": found.title, "description": found.description}


@routes.get("/portal/topics/{slug}")
async def topic(request: web.Request) -> web.Response:
    await require(request, "operator")
    slug, values = await _topic_page(request)
    return page(
        request,
        "topic.html",
        nav="topics",
        slug=slug,
        values=values,
        errors={},
        notice=notice_from(request, _TOPIC_NOTICES),
    )


@routes.post("/portal/topics/{slug}")
async def save(request: web.Request) -> web.Response:
    await require(request, "operator")
    form = await read_form(request)
    slug, _ = await _topic_page(request)
    check_topic_slug(slug)
    values = {"title": form.get("title", ""), "description": form.get("description", "")}
    # An empty title field means "no title of its own": the slug humanized, as in the API.
    data = {k: v for k, v in values.items() if v.strip() or k != "title"}
    try:
        body = validate(TopicIn, data)
    except Problem as problem:
        errors = {e["field"]: e["message"] for e in problem.errors or []}
        return page(
            request,
            "topic.html",
            status=422,
            nav="topics",
            slug=slug,
            values=values,
            errors=errors,
        )
    await save_topic(request.app, slug, body)
    return see_other(f"/portal/topics/{_quoted(slug)}", notice="saved")
