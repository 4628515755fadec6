"""``/openapi.json``: OpenAPI 3.1 generated from the pydantic models.

The route table below names, for each JSON route, its request model and its
response models; the schemas themselves come from the models (the same ones
that validate requests), never written by hand.
``syndicate openapi`` prints the document (``make openapi`` writes docs/openapi.json).
"""

from __future__ import annotations

import importlib.metadata
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from syndicate.content import models
from syndicate.core.settings import Settings

VERSION = importlib.metadata.version("syndicate")
PROBLEM = "application/problem+json"
OPERATOR = "operator"
ANY_TOKEN = "any token"
PUBLIC = "public"


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    summary: str
    auth: str
    responses: dict[int, type[BaseModel] | None]
    body: type[BaseModel] | None = None
    query: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: tuple[int, ...] = ()


_ID: dict[str, Any] = {"type": "string", "pattern": models.ARTICLE_ID_PATTERN}
_PAGE: dict[str, dict[str, Any]] = {
    "limit": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
    "cursor": {"type": "string", "minLength": 1},
}
_WRITE = (400, 401, 403, 413, 415, 422, 429)

ROUTES: list[Route] = [
    Route("post", "/api/articles", "Create an article", OPERATOR,
          {201: models.ArticleOut}, models.ArticleIn, errors=(*_WRITE, 409)),
    Route("get", "/api/articles", "List articles, newest first", ANY_TOKEN,
          {200: models.ArticleList},
          query={"topic": {"type": "string", "pattern": models.TOPIC_SLUG_PATTERN}, **_PAGE},
          errors=(401, 404, 422)),
    Route("post", "/api/articles/batch", "Create or replace many articles", OPERATOR,
          {200: models.BatchResult}, models.BatchIn, errors=_WRITE),
    Route("get", "/api/articles/{id}", "Read an article", ANY_TOKEN,
          {200: models.ArticleOut}, errors=(401, 404, 410, 422)),
    Route("put", "/api/articles/{id}", "Create or replace an article", OPERATOR,
          {200: models.ArticleOut, 201: models.ArticleOut}, models.ArticleIn, errors=_WRITE),
    Route("delete", "/api/articles/{id}", "Delete an article (tombstone)", OPERATOR,
          {204: None}, errors=(401, 403, 404, 422)),
    Route("get", "/api/topics", "List topics", ANY_TOKEN, {200: models.TopicList},
          errors=(401,)),
    Route("put", "/api/topics/{slug}", "Create or update a topic", OPERATOR,
          {200: models.TopicOut, 201: models.TopicOut}, models.TopicIn, errors=_WRITE),
    Route("post", "/api/subscriptions", "Subscribe a webhook", ANY_TOKEN,
          {201: models.SubscriptionWithSecret}, models.SubscriptionIn, errors=(*_WRITE, 409)),
    Route("get", "/api/subscriptions", "List subscriptions", ANY_TOKEN,
          {200: models.SubscriptionList}, query=_PAGE, errors=(401, 422)),
    Route("get", "/api/subscriptions/{id}", "Read a subscription", ANY_TOKEN,
          {200: models.SubscriptionOut}, errors=(401, 404)),
    Route("patch", "/api/subscriptions/{id}", "Change a subscription", ANY_TOKEN,
          {200: models.SubscriptionOut}, models.SubscriptionPatch, errors=(*_WRITE, 404)),
    Route("delete", "/api/subscriptions/{id}", "Remove a subscription", ANY_TOKEN,
          {204: None}, errors=(401, 404, 429)),
    Route("post", "/api/subscriptions/{id}/rotate-secret", "Rotate the signing secret",
          ANY_TOKEN, {200: models.SubscriptionWithSecret}, errors=(401, 404, 429)),
    Route("post", "/api/subscriptions/{id}/test", "Send a signed ping now", ANY_TOKEN,
          {200: models.PingResult}, errors=(401, 404, 429)),
    Route("get", "/api/subscriptions/{id}/deliveries", "The delivery log", ANY_TOKEN,
          {200: models.DeliveryList},
          query={"status": {"type": "string",
                            "enum": ["pending", "delivered", "failed", "dead"]}, **_PAGE},
          errors=(401, 404, 422)),
    Route("post", "/api/subscriptions/{id}/deliveries/{delivery_id}/retry",
          "Retry one delivery now", ANY_TOKEN, {202: models.DeliveryOut},
          errors=(401, 404, 429)),
    Route("post", "/api/subscriptions/{id}/recover", "Retry failed deliveries since a time",
          ANY_TOKEN, {202: models.RecoverResult}, models.RecoverIn, errors=(*_WRITE, 404)),
    Route("get", "/healthz", "Liveness", PUBLIC, {200: models.HealthOut}),
    Route("get", "/readyz", "Readiness (the database answers)", PUBLIC,
          {200: models.HealthOut}, errors=(503,)),
]  # fmt: skip

_ARTICLE = ("/api/articles/{id}", ("get", "put", "delete"))
_SUBSCRIPTION = [
    ("/api/subscriptions/{id}", ("get", "patch", "delete")),
    ("/api/subscriptions/{id}/rotate-secret", ("post",)),
    ("/api/subscriptions/{id}/test", ("post",)),
    ("/api/subscriptions/{id}/deliveries", ("get",)),
    ("/api/subscriptions/{id}/recover", ("post",)),
]
#: OpenAPI links: which later operations take a value from an answer (documentation
#: for clients, and the map schemathesis' stateful tests walk). By (method, path):
#: the targets and, per path parameter, the runtime expression that fills it.
LINKS: dict[tuple[str, str], list[tuple[str, str, dict[str, str]]]] = {
    ("post", "/api/articles"): [
        (method, _ARTICLE[0], {"id": "$response.body#/id"}) for method in _ARTICLE[1]
    ],
    ("put", "/api/articles/{id}"): [
        (method, _ARTICLE[0], {"id": "$response.body#/id"}) for method in _ARTICLE[1]
    ],
    ("post", "/api/subscriptions"): [
        (method, path, {"id": "$response.body#/id"})
        for path, methods in _SUBSCRIPTION
        for method in methods
    ],
    ("get", "/api/subscriptions/{id}/deliveries"): [
        ("post", "/api/subscriptions/{id}/deliveries/{delivery_id}/retry",
         {"id": "$request.path.id", "delivery_id": "$response.body#/deliveries/0/id"}),
    ],
}  # fmt: skip

#: The query parameters each JSON operation takes, by (METHOD, path template): any
#: other one is refused with 422 (a typo such as ``?topc=`` must not silently widen
#: a listing), just as unknown body fields are.
QUERY_PARAMS: dict[tuple[str, str], frozenset[str]] = {
    (route.method.upper(), route.path): frozenset(route.query) for route in ROUTES
}

_PATH_PARAMS = {
    "id": _ID,
    "slug": {"type": "string", "pattern": models.TOPIC_SLUG_PATTERN},
    "delivery_id": {"type": "string", "pattern": "^[0-9]{1,18}$"},
}


def _operation_id(method: str, path: str) -> str:
    name = f"{method}_{path}"
    for old, new in (("/", "_"), ("{", ""), ("}", ""), ("-", "_")):
        name = name.replace(old, new)
    return name.strip("_")


def _links(route: Route) -> dict[str, Any]:
    return {
        f"{method.upper()} {path}": {
            "operationId": _operation_id(method, path),
            "parameters": parameters,
        }
        for method, path, parameters in LINKS.get((route.method, route.path), [])
    }


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def build(settings: Settings | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document for the JSON routes."""
    mode_models: list[tuple[type[BaseModel], Any]] = [(models.ProblemOut, "serialization")]
    for route in ROUTES:
        if route.body is not None:
            mode_models.append((route.body, "validation"))
        mode_models += [(m, "serialization") for m in route.responses.values() if m]
    unique = list(dict.fromkeys(mode_models))
    _, schemas = models_json_schema(unique, ref_template="#/components/schemas/{model}")
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        operation: dict[str, Any] = {
            "summary": route.summary,
            "operationId": _operation_id(route.method, route.path),
            "responses": {},
        }
        if route.auth != PUBLIC:
            operation["security"] = [{"bearer": []}]
            operation["description"] = (
                f"Needs {'an operator' if route.auth == OPERATOR else 'a partner or operator'} token."  # noqa: E501
            )
        params = [
            {"name": name, "in": "path", "required": True, "schema": schema}
            for name, schema in _PATH_PARAMS.items()
            if "{" + name + "}" in route.path
        ]
        params += [
            {"name": name, "in": "query", "required": False, "schema": schema}
            for name, schema in route.query.items()
        ]
        if params:
            operation["parameters"] = params
        if route.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _ref(route.body)}},
            }
        for status, model in route.responses.items():
            response: dict[str, Any] = {"description": "OK" if status < 300 else "Accepted"}
            if model is not None:
                response["content"] = {"application/json": {"schema": _ref(model)}}
                if links := _links(route):
                    response["links"] = links
            operation["responses"][str(status)] = response
        for status in (*route.errors, 503) if route.path.startswith("/api") else route.errors:
            operation["responses"][str(status)] = {
                "description": "Problem details",
                "content": {PROBLEM: {"schema": _ref(models.ProblemOut)}},
            }
        paths.setdefault(route.path, {})[route.method] = operation
    servers = [{"url": settings.base_url}] if settings else []
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Syndicate",
            "version": VERSION,
            "description": "Article syndication: articles, topics, webhook subscriptions and "
            "deliveries. Feeds (/feeds/...), pages and the WebSub hub (/hub) are not JSON.",
        },
        "servers": servers,
        "paths": paths,
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "syn_... token"}
            },
        },
    }


OPENAPI = web.AppKey("openapi", bytes)
routes = web.RouteTableDef()


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[OPENAPI],
        content_type="application/json",
        headers={"Cache-Control": "public, max-age=300"},
    )


def document_bytes(settings: Settings | None = None) -> bytes:
    return json.dumps(build(settings), indent=2, sort_keys=False).encode() + b"\n"
