"""Operators' articles and topics API."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from storage.records import ArticleDraft, PutResult, Topic, default_topic_title, format_time
from syndicate.content.articles import (
    BadCursor,
    article_json,
    decode_cursor,
    draft_off_loop,
    encode_cursor,
)
from syndicate.content.ingest import store_batch, tally
from syndicate.content.models import ArticleIn, BatchIn, TopicIn, valid_article_id, valid_topic
from syndicate.content.text import ContentTooComplex
from syndicate.content.validation import invalid, validate
from syndicate.core.errors import Problem
from syndicate.core.settings import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from syndicate.web.appkeys import DELIVERY, SETTINGS, STORAGE
from syndicate.web.auth import authenticate
from syndicate.web.problems import json_response
from syndicate.web.requests import query_param, read_json

routes = web.RouteTableDef()


def _limits(request: web.Request) -> dict[str, Any]:
    return {"max_topics": request.app[SETTINGS].max_topics}


def _path_id(request: web.Request) -> str:
    article_id = request.match_info["id"]
    if not valid_article_id(article_id):
        raise invalid("id", "must be 1-128 of A-Z a-z 0-9 . _ ~ - (and not '.' or '..')")
    return article_id


async def _draft(item: ArticleIn, host: str, article_id: str | None = None) -> ArticleDraft:
    try:
        return await draft_off_loop(item, host=host, article_id=article_id)
    except ContentTooComplex as exc:
        raise invalid("content", str(exc)) from None


def _put_status(result: PutResult) -> int:
    return 201 if result.outcome == "created" else 200


@routes.post("/api/articles")
async def create_article(request: web.Request) -> web.Response:
    await authenticate(request, "operator")
    item = validate(ArticleIn, await read_json(request), context=_limits(request))
    settings = request.app[SETTINGS]
    draft = await _draft(item, settings.public_host)
    result = await request.app[STORAGE].put_article(draft, create_only=True)
    request.app[DELIVERY].notify()
    body = article_json(result.article, settings.base_url)
    return json_response(body, status=201, headers={"Location": f"/api/articles/{body['id']}"})


@routes.put("/api/articles/{id}")
async def put_article(request: web.Request) -> web.Response:
    await authenticate(request, "operator")
    article_id = _path_id(request)
    item = validate(ArticleIn, await read_json(request), context=_limits(request))
    if item.id is not None and item.id != article_id:
        raise invalid("id", f"does not match the id in the URL ({article_id!r})")
    settings = request.app[SETTINGS]
    draft = await _draft(item, settings.public_host, article_id)
    result = await request.app[STORAGE].put_article(draft)
    if result.outcome != "unchanged":
        request.app[DELIVERY].notify()
    headers = {"Location": f"/api/articles/{article_id}"} if result.outcome == "created" else {}
    return json_response(
        article_json(result.article, settings.base_url),
        status=_put_status(result),
        headers=headers,
    )


@routes.post("/api/articles/batch")
async def batch_articles(request: web.Request) -> web.Response:
    await authenticate(request, "operator")
    settings = request.app[SETTINGS]
    batch = validate(BatchIn, await read_json(request))
    if len(batch.articles) > settings.max_batch_size:
        raise Problem(413, f"a batch holds at most {settings.max_batch_size} articles; "
                      f"this one has {len(batch.articles)}")  # fmt: skip
    items = batch.articles
    fields = [f"articles.{i}" for i in range(len(items))]
    results = await store_batch(
        request.app[STORAGE],
        items,
        host=settings.public_host,
        fields=fields,
        max_topics=settings.max_topics,
    )
    request.app[DELIVERY].notify()
    return json_response({**tally(results), "results": results})


@routes.get("/api/articles/{id}")
async def get_article(request: web.Request) -> web.Response:
    await authenticate(request, "operator", "partner")
    article = await request.app[STORAGE].get_article(_path_id(request))
    body = article_json(article, request.app[SETTINGS].base_url)
    if article.deleted:
        raise Problem(410, f"article {article.id!r} was deleted at {body['deleted_at']}")
    return json_response(body)


@routes.get("/api/articles")
async def list_articles(request: web.Request) -> web.Response:
    await authenticate(request, "operator", "partner")
    storage = request.app[STORAGE]
    topic = query_param(request, "topic")
    if topic is not None:
        if not valid_topic(topic):
            raise invalid("topic", "not a topic slug")
        await storage.get_topic(topic)
    raw_limit = query_param(request, "limit") or str(DEFAULT_PAGE_SIZE)
    try:
        limit = int(raw_limit)
    except ValueError:
        raise invalid("limit", f"{raw_limit!r} is not a whole number") from None
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise invalid("limit", f"must be between 1 and {MAX_PAGE_SIZE}")
    before = None
    cursor = query_param(request, "cursor")
    if cursor is not None:
        try:
            before = decode_cursor(cursor)
        except BadCursor as exc:
            raise invalid("cursor", str(exc)) from None
    page = await storage.list_articles(topic=topic, limit=limit + 1, before=before)
    base_url = request.app[SETTINGS].base_url
    next_cursor = encode_cursor(page[limit - 1]) if len(page) > limit else None
    return json_response(
        {
            "articles": [article_json(a, base_url) for a in page[:limit]],
            "next_cursor": next_cursor,
        }
    )


@routes.delete("/api/articles/{id}")
async def delete_article(request: web.Request) -> web.Response:
    await authenticate(request, "operator")
    await request.app[STORAGE].delete_article(_path_id(request))
    request.app[DELIVERY].notify()
    return web.Response(status=204)


def _topic_json(topic: Topic) -> dict[str, Any]:
    return {
        "slug": topic.slug,
        "title": topic.title,
        "description": topic.description,
        "article_count": topic.article_count,
        "created_at": format_time(topic.created_at),
        "updated_at": format_time(topic.updated_at),
    }


@routes.get("/api/topics")
async def list_topics(request: web.Request) -> web.Response:
    await authenticate(request, "operator", "partner")
    topics = await request.app[STORAGE].list_topics()
    return json_response({"topics": [_topic_json(t) for t in topics]})


@routes.put("/api/topics/{slug}")
async def put_topic(request: web.Request) -> web.Response:
    await authenticate(request, "operator")
    slug = request.match_info["slug"]
    if not valid_topic(slug):
        raise invalid("slug", "not a topic slug (lower-case letters, digits and '-')")
    if slug == "all":
        raise invalid("slug", "'all' is reserved for the feed of every topic")
    body = validate(TopicIn, await read_json(request))
    topic, created = await request.app[STORAGE].put_topic(
        slug, title=body.title or default_topic_title(slug), description=body.description
    )
    return json_response(_topic_json(topic), status=201 if created else 200)
