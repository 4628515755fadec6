"""Reference pages for partners: the event catalogue (each event type, an example
body made by the code that makes real webhook bodies, and its JSON Schema derived
from the response models) and how to pull or stream the change log instead of
receiving pushes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from aiohttp import web
from pydantic import BaseModel, Field

from storage.records import Article
from syndicate.content.responses import ArticleOut, DeletedArticleData, Timestamp
from syndicate.core.names import EVENT_TYPES, EventType
from syndicate.delivery.webhooks import render_body
from syndicate.web import subscriptionops as ops
from syndicate.web.appkeys import SETTINGS
from syndicate.web.portal.render import page
from syndicate.web.portal.session import require

routes = web.RouteTableDef()


# The webhook bodies as models: the article parts are the API's own response models,
# so the schema shown is the one the API documents, never a copy that can drift.
class ArticleEventBody(BaseModel):
    """``article.published`` / ``article.updated``: the article as it now is."""

    type: Literal["article.published", "article.updated"]
    timestamp: Timestamp = Field(description="When the change was recorded.")
    data: ArticleOut


class DeletedEventBody(BaseModel):
    """``article.deleted``: enough to find and drop the article."""

    type: Literal["article.deleted"]
    timestamp: Timestamp = Field(description="When the change was recorded.")
    data: DeletedArticleData


class PingData(BaseModel):
    subscription_id: str = Field(description="The endpoint the test was sent to.")


class PingBody(BaseModel):
    """``ping``: what "Send test" POSTs (never queued, retried or logged)."""

    type: Literal["ping"]
    timestamp: Timestamp
    data: PingData


BODY_MODELS: Final[dict[str, type[BaseModel]]] = {
    "article.published": ArticleEventBody,
    "article.updated": ArticleEventBody,
    "article.deleted": DeletedEventBody,
    ops.PING: PingBody,
}
_SUMMARIES: Final = {
    "article.published": "An article was published (or a scheduled one reached its time).",
    "article.updated": "A published article changed: its title, content, topics...",
    "article.deleted": "An article was deleted: drop your copy.",
    ops.PING: "The test an endpoint's \u201cSend test\u201d button sends.",
}
_EXAMPLE_TIME: Final = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


def example_article(event_type: EventType) -> Article:
    """A sample article in the state an event of ``event_type`` carries."""
    updated = event_type != "article.published"
    return Article(
        id="liver-1",
        guid="tag:example.org,2026:article/liver-1",
        slug="fatty-liver",
        title="Fatty liver: what helps",
        summary="Small changes that help a fatty liver.",
        content="<p>About the liver.</p>",
        content_type="html",
        topics=("liver-health",),
        author="Dr. Example",
        url=None,
        image=None,
        language="en",
        published_at=_EXAMPLE_TIME,
        updated_at=_EXAMPLE_TIME + timedelta(hours=2 if updated else 0),
        created_at=_EXAMPLE_TIME,
        version=2 if updated else 1,
        deleted_at=_EXAMPLE_TIME + timedelta(hours=2) if event_type == "article.deleted" else None,
    )


@dataclass(frozen=True)
class CatalogueEntry:
    type: str
    summary: str
    example: dict[str, Any]
    schema: dict[str, Any]


def catalogue(base_url: str) -> list[CatalogueEntry]:
    """Every event type a webhook receives, with an example body and its schema."""
    bodies: dict[str, bytes] = {
        event_type: render_body(
            event_type,
            example_article(event_type),
            _EXAMPLE_TIME + timedelta(hours=2, seconds=1),
            base_url,
        )
        for event_type in EVENT_TYPES
    }
    bodies[ops.PING] = ops.ping_body("sub_0123456789abcdef0123", _EXAMPLE_TIME)
    return [
        CatalogueEntry(
            type=name,
            summary=_SUMMARIES[name],
            example=json.loads(body),
            schema=BODY_MODELS[name].model_json_schema(mode="serialization"),
        )
        for name, body in bodies.items()
    ]


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


@routes.get("/portal/events")
async def event_catalogue(request: web.Request) -> web.Response:
    await require(request, "partner", "operator")
    entries = catalogue(request.app[SETTINGS].base_url)
    return page(
        request,
        "events.html",
        nav="events",
        entries=[(e.type, e.summary, _pretty(e.example), _pretty(e.schema)) for e in entries],
    )


@routes.get("/portal/pull")
async def pull_guide(request: web.Request) -> web.Response:
    await require(request, "partner", "operator")
    return page(
        request,
        "pull.html",
        nav="pull",
        base_url=request.app[SETTINGS].base_url,
        event_types=",".join(EVENT_TYPES[:2]),
    )
