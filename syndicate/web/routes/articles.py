"""Operators' articles and topics API."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from aiohttp import web
from pydantic import TypeAdapter, ValidationError

from storage import ArticleNotFound, ListCursor
from storage.records import Article, ArticleDraft, PutResult, Topic, default_topic_title
from syndicate.content.articles import BadCursor, decode_cursor, draft_off_loop, encode_cursor
from syndicate.content.ingest import store_batch, tally
from syndicate.content.models import (
    TIME_PATTERN,
    ArticleIn,
    BatchIn,
    TopicIn,
    UtcTime,
    valid_article_id,
)
from syndicate.content.responses import ArticleList, ArticleOut, BatchResult, TopicList, TopicOut
from syndicate.content.text import ContentTooComplex
from syndicate.content.validation import invalid, validate, validation_errors
from syndicate.core.errors import Problem
from syndicate.core.names import ALL_TOPICS_SLUG, TOPIC_SLUG_PATTERN, valid_topic
from syndicate.core.settings import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Settings
from syndicate.web.appkeys import DELIVERY, SETTINGS, STORAGE
from syndicate.web.auth import authenticate
from syndicate.web.operations import (
    ANY_TOKEN,
    OPERATOR,
    PAGE,
    WRITE_ERRORS,
    ApiRoutes,
    model_response,
)
from syndicate.web.requests import query_param, read_json

routes = ApiRoutes()
#: What ``GET /api/articles?status=`` lists.
LISTED_STATUSES = ("published", "scheduled")
#: Every operation on an article, linked from the answers that name one.
_ARTICLE_LINK = {"/api/articles/{id}": {"id": "$response.body#/id"}}


def _limits(request: web.Request) -> dict[str, Any]:
    return {"max_topics": request.app[SETTINGS].max_topics}


def _path_id(request: web.Request) -> str:
    article_id = request.match_info["id"]
    if not valid_article_id(article_id):
        raise invalid("id", "must be 1-128 of A-Z a-z 0-9 . _ ~ - (and not '.' or '..')")
    return article_id


async def _draft(
    item: ArticleIn, settings: Settings, article_id: str | None = None
) -> ArticleDraft:
    """The draft of ``item``: GUID minted on the public host, relative links in its
    content resolved against its URL (else its page on the public base URL)."""
    try:
        return await draft_off_loop(
            item, host=settings.public_host, base_url=settings.base_url, article_id=article_id
        )
    except ContentTooComplex as exc:
        raise invalid("content", str(exc)) from None


def _put_status(result: PutResult) -> int:
    return 201 if result.outcome == "created" else 200


@routes.operation(
    "post",
    "/api/articles",
    "Create an article",
    OPERATOR,
    {201: ArticleOut},
    body=ArticleIn,
    errors=(*WRITE_ERRORS, 409),
    links=_ARTICLE_LINK,
)
async def create_article(request: web.Request) -> web.Response:
    await authenticate(request, "operator")
    item = validate(ArticleIn, await read_json(request), context=_limits(request))
    settings = request.app[SETTINGS]
    draft = await _draft(item, settings)
    result = await request.app[STORAGE].put_article(draft, create_only=True)
    request.app[DELIVERY].notify(scheduled=result.article.scheduled)
    out = ArticleOut.of(result.article, settings.base_url)
    return model_response(out, status=201, headers={"Location": f"/api/articles/{out.id}"})


@routes.operation(
    "get",
    "/api/articles",
    "List published articles, newest first",
    ANY_TOKEN,
    {200: ArticleList},
    query={
        "topic": {"type": "string", "pattern": TOPIC_SLUG_PATTERN},
        "status": {
            "type": "string",
            "enum": list(LISTED_STATUSES),
            "default": "published",
            "description": "scheduled: the articles waiting for their published_at "
            "(operators only)",
        },
        "updated_since": {
            "type": "string",
            "format": "date-time",
            "pattern": TIME_PATTERN,
            "description": "Every article changed at or after this time (RFC 3339), "
            "deleted ones included (status deleted), oldest change first: what a partner "
            "resyncs from when its place in the change log is gone (410 from /api/events).",
        },
        **PAGE,
    },
    errors=(401, 403, 404, 422),
)
async def list_articles(request: web.Request) -> web.Response:
    token = await authenticate(request, "operator", "partner")
    storage = request.app[STORAGE]
    status = query_param(request, "status") or "published"
    if status not in LISTED_STATUSES:
        raise invalid("status", f"must be one of {', '.join(LISTED_STATUSES)}")
    if status == "scheduled" and token.role != "operator":
        raise Problem(403, "only an operator token lists scheduled articles")
    topic = query_param(request, "topic")
    since = query_param(request, "updated_since")
    if since is not None:
        if topic is not None or "status" in request.query:
            field = "topic" if topic is not None else "status"
            raise invalid(field, "cannot be combined with updated_since")
        return await _list_changed(request, since)
    if topic is not None:
        if not valid_topic(topic):
            raise invalid("topic", "not a topic slug")
        await storage.get_topic(topic)
    limit, before = _page(request)
    page = await storage.list_articles(
        topic=topic, limit=limit + 1, before=before, scheduled=status == "scheduled"
    )
    base_url = request.app[SETTINGS].base_url
    next_cursor = encode_cursor(page[limit - 1]) if len(page) > limit else None
    articles = [ArticleOut.of(a, base_url) for a in page[:limit]]
    return model_response(ArticleList(articles=articles, next_cursor=next_cursor))


def _page(request: web.Request) -> tuple[int, ListCursor | None]:
    """``limit`` and the decoded ``cursor`` of a listing."""
    raw_limit = query_param(request, "limit") or str(DEFAULT_PAGE_SIZE)
    try:
        limit = int(raw_limit)
    except ValueError:
        raise invalid("limit", f"{raw_limit!r} is not a whole number") from None
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise invalid("limit", f"must be between 1 and {MAX_PAGE_SIZE}")
    cursor = query_param(request, "cursor")
    if cursor is None:
        return limit, None
    try:
        return limit, decode_cursor(cursor)
    except BadCursor as exc:
        raise invalid("cursor", str(exc)) from None


_TIME: TypeAdapter[Any] = TypeAdapter(UtcTime)


async def _list_changed(request: web.Request, raw_since: str) -> web.Response:
    """``updated_since=``: live and deleted articles changed since then, oldest change
    first; the cursor is the (updated_at, id) of the last one listed."""
    try:
        since = _TIME.validate_python(raw_since)
    except ValidationError as exc:
        raise invalid("updated_since", validation_errors(exc)[0]["message"]) from None
    limit, after = _page(request)
    page = await request.app[STORAGE].list_changed_articles(
        since=since, after=after, limit=limit + 1
    )
    base_url = request.app[SETTINGS].base_url
    next_cursor = None
    if len(page) > limit:
        last = page[limit - 1]
        next_cursor = encode_cursor(replace(last, published_at=last.updated_at))
    articles = [ArticleOut.of(a, base_url) for a in page[:limit]]
    return model_response(ArticleList(articles=articles, next_cursor=next_cursor))


@routes.operation(
    "post",
    "/api/articles/batch",
    "Create or replace many articles",
    OPERATOR,
    {200: BatchResult},
    body=BatchIn,
    errors=(*WRITE_ERRORS, 409),
)
async def batch_articles(request: web.Request) -> web.Response:
    await authenticate(request, "operator")
    settings = request.app[SETTINGS]
    batch = validate(BatchIn, await read_json(request))
    if len(batch.articles) > settings.max_batch_size:
        raise Problem(
            413,
            f"a batch holds at most {settings.max_batch_size} articles; "
            f"this one has {len(batch.articles)}",
        )
    items = batch.articles
    fields = [f"articles.{i}" for i in range(len(items))]
    results = await store_batch(
        request.app[STORAGE],
        items,
        host=settings.public_host,
        base_url=settings.base_url,
        fields=fields,
        max_topics=settings.max_topics,
    )
    request.app[DELIVERY].notify()
    return model_response(BatchResult.model_validate({**tally(results), "results": results}))


@routes.operation(
    "get",
    "/api/articles/{id}",
    "Read an article",
    ANY_TOKEN,
    {200: ArticleOut},
    errors=(401, 404, 410, 422),
)
async def get_article(request: web.Request) -> web.Response:
    token = await authenticate(request, "operator", "partner")
    article = await request.app[STORAGE].get_article(_path_id(request))
    if article.scheduled and token.role != "operator":
        # Partners learn of an article when it is published, as readers do.
        raise ArticleNotFound(article.id)
    out = ArticleOut.of(article, request.app[SETTINGS].base_url)
    if article.deleted:
        raise Problem(410, f"article {article.id!r} was deleted at {out.deleted_at}")
    return model_response(out)


@routes.operation(
    "put",
    "/api/articles/{id}",
    "Create or replace an article",
    OPERATOR,
    {200: ArticleOut, 201: ArticleOut},
    body=ArticleIn,
    errors=(*WRITE_ERRORS, 409),
    links=_ARTICLE_LINK,
)
async def put_article(request: web.Request) -> web.Response:
    await authenticate(request, "operator")
    article_id = _path_id(request)
    item = validate(ArticleIn, await read_json(request), context=_limits(request))
    if item.id is not None and item.id != article_id:
        raise invalid("id", f"does not match the id in the URL ({article_id!r})")
    settings = request.app[SETTINGS]
    draft = await _draft(item, settings, article_id)
    result = await request.app[STORAGE].put_article(draft)
    if result.outcome != "unchanged":
        request.app[DELIVERY].notify(scheduled=result.article.scheduled)
    headers = {"Location": f"/api/articles/{article_id}"} if result.outcome == "created" else {}
    return model_response(
        ArticleOut.of(result.article, settings.base_url),
        status=_put_status(result),
        headers=headers,
    )


@routes.operation(
    "delete",
    "/api/articles/{id}",
    "Delete an article (tombstone)",
    OPERATOR,
    {204: None},
    errors=(401, 403, 404, 422),
)
async def delete_article(request: web.Request) -> web.Response:
    await authenticate(request, "operator")
    await remove_article(request.app, _path_id(request))
    return web.Response(status=204)


async def remove_article(app: web.Application, article_id: str) -> Article:
    """Tombstone an article (its ``article.deleted`` event is written with it, its
    feeds change) and wake the fan-out: the API's DELETE and the portal's."""
    article = await app[STORAGE].delete_article(article_id)
    app[DELIVERY].notify(scheduled=False)
    return article


@routes.operation("get", "/api/topics", "List topics", ANY_TOKEN, {200: TopicList}, errors=(401,))
async def list_topics(request: web.Request) -> web.Response:
    await authenticate(request, "operator", "partner")
    topics = await request.app[STORAGE].list_topics()
    return model_response(TopicList(topics=[TopicOut.of(t) for t in topics]))


@routes.operation(
    "put",
    "/api/topics/{slug}",
    "Create or update a topic",
    OPERATOR,
    {200: TopicOut, 201: TopicOut},
    body=TopicIn,
    errors=WRITE_ERRORS,
)
async def put_topic(request: web.Request) -> web.Response:
    await authenticate(request, "operator")
    slug = request.match_info["slug"]
    check_topic_slug(slug)
    body = validate(TopicIn, await read_json(request))
    topic, created = await save_topic(request.app, slug, body)
    return model_response(TopicOut.of(topic), status=201 if created else 200)


def check_topic_slug(slug: str) -> None:
    """422 unless ``slug`` may name a topic one writes (``all`` is the feed of all)."""
    if not valid_topic(slug):
        raise invalid("slug", "not a topic slug (lower-case letters, digits and '-')")
    if slug == ALL_TOPICS_SLUG:
        raise invalid("slug", f"{ALL_TOPICS_SLUG!r} is reserved for the feed of every topic")


async def save_topic(app: web.Application, slug: str, body: TopicIn) -> tuple[Topic, bool]:
    """Create or update a topic (no title: the slug humanized): the API's PUT and the
    portal's edit form. Returns it and whether it was created."""
    return await app[STORAGE].put_topic(
        slug, title=body.title or default_topic_title(slug), description=body.description
    )
