"""``/openapi.json``: OpenAPI 3.1 generated from the API's own route tables.

Each JSON route is declared once, by ``@routes.operation(...)`` on its handler
(``web.operations``): the same table registers the route with aiohttp and, here,
documents it. The schemas come from the models (``content.models`` for requests,
``content.responses`` for answers, the ones the handlers answer with), never
written by hand. ``syndicate openapi`` prints the document (``make openapi``
writes docs/openapi.json).
"""

from __future__ import annotations

import importlib.metadata
import json
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from syndicate.content.models import ARTICLE_ID_PATTERN
from syndicate.content.responses import ProblemOut
from syndicate.core.names import TOPIC_SLUG_PATTERN
from syndicate.core.settings import Settings
from syndicate.web.operations import OPERATOR, PUBLIC, ApiRoutes, Operation
from syndicate.web.routes import articles, events, health, portal_links, stream, subscriptions

VERSION = importlib.metadata.version("syndicate")
PROBLEM = "application/problem+json"

#: The route tables of the JSON API, in the document's order (``web.app`` registers
#: these very tables).
API_TABLES: tuple[ApiRoutes, ...] = (
    articles.routes,
    subscriptions.routes,
    events.routes,
    stream.routes,
    portal_links.routes,
    health.routes,
)
#: Every documented operation: the API's route tables' own.
ROUTES: list[Operation] = [op for table in API_TABLES for op in table.operations]
_declared = [(op.method, op.path) for op in ROUTES]
assert len(set(_declared)) == len(_declared), "an operation is declared twice"

_PATH_PARAMS: dict[str, dict[str, Any]] = {
    "id": {"type": "string", "pattern": ARTICLE_ID_PATTERN},
    "slug": {"type": "string", "pattern": TOPIC_SLUG_PATTERN},
    "delivery_id": {"type": "string", "pattern": "^[0-9]{1,18}$"},
}


def _operation_id(method: str, path: str) -> str:
    name = f"{method}_{path}"
    for old, new in (("/", "_"), ("{", ""), ("}", ""), ("-", "_")):
        name = name.replace(old, new)
    return name.strip("_")


def _links(route: Operation) -> dict[str, Any]:
    """OpenAPI links: which later operations take a value from this answer
    (documentation for clients, and the map schemathesis' stateful tests walk)."""
    links: dict[str, Any] = {}
    for path, parameters in route.links.items():
        targets = [op for op in ROUTES if op.path == path]
        assert targets, f"{route.method} {route.path} links to {path}, which is no operation"
        for op in targets:
            links[f"{op.method.upper()} {op.path}"] = {
                "operationId": _operation_id(op.method, op.path),
                "parameters": parameters,
            }
    return links


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def build(settings: Settings | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document for the JSON routes."""
    mode_models: list[tuple[type[BaseModel], Any]] = [(ProblemOut, "serialization")]
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
            elif (route.method, route.path) in stream.CONTENT:
                response["content"] = stream.CONTENT[route.method, route.path]
            operation["responses"][str(status)] = response
        for status in (*route.errors, 503) if route.path.startswith("/api") else route.errors:
            operation["responses"][str(status)] = {
                "description": "Problem details",
                "content": {PROBLEM: {"schema": _ref(ProblemOut)}},
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
