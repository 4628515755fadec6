"""The JSON API's operations, each declared once: ``ApiRoutes`` is an aiohttp route
table whose decorator also records what /openapi.json says of the route (summary,
auth, body, query, responses, errors, links). ``web.app`` registers the tables like
any other; ``web.openapi`` builds the document from the same tables' operations.

``model_response`` answers with a response model (``content.responses``): the
documented models are the ones that make the bodies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel

from syndicate.content.responses import to_json

Auth = Literal["operator", "any token", "public"]
OPERATOR: Auth = "operator"
ANY_TOKEN: Auth = "any token"
PUBLIC: Auth = "public"

#: The query parameters of a paged listing.
PAGE: dict[str, dict[str, Any]] = {
    "limit": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
    "cursor": {"type": "string", "minLength": 1},
}
#: The problems any write can answer.
WRITE_ERRORS = (400, 401, 403, 413, 415, 422, 429)

#: The query parameters each operation takes, by (METHOD, path template): set by
#: ``web.app`` from the operations; ``web.requests.check_query`` refuses any other.
QUERY_PARAMS = web.AppKey("query_params", dict[tuple[str, str], frozenset[str]])

Handler = Callable[[web.Request], Any]


@dataclass(frozen=True)
class Operation:
    """One JSON route as documented. ``links``: target path -> {path parameter:
    OpenAPI runtime expression}; every operation on that path is linked."""

    method: str  # lower case, as OpenAPI spells it
    path: str
    summary: str
    auth: Auth
    responses: dict[int, type[BaseModel] | None]
    body: type[BaseModel] | None = None
    query: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: tuple[int, ...] = ()
    links: dict[str, dict[str, str]] = field(default_factory=dict)


class ApiRoutes(web.RouteTableDef):
    """A route table of documented operations: ``@routes.operation(...)``."""

    def __init__(self) -> None:
        super().__init__()
        self.operations: list[Operation] = []

    def operation(
        self,
        method: str,
        path: str,
        summary: str,
        auth: Auth,
        responses: dict[int, type[BaseModel] | None],
        *,
        body: type[BaseModel] | None = None,
        query: dict[str, dict[str, Any]] | None = None,
        errors: tuple[int, ...] = (),
        links: dict[str, dict[str, str]] | None = None,
    ) -> Callable[[Handler], Handler]:
        self.operations.append(
            Operation(
                method.lower(),
                path,
                summary,
                auth,
                responses,
                body,
                query or {},
                errors,
                links or {},
            )
        )
        return self.route(method.upper(), path)


def query_params(operations: Iterable[Operation]) -> dict[tuple[str, str], frozenset[str]]:
    return {(op.method.upper(), op.path): frozenset(op.query) for op in operations}


def model_response(
    model: BaseModel,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    exclude_none: bool = False,
) -> web.Response:
    """The JSON answer that is ``model``'s dump."""
    return web.Response(
        status=status,
        body=to_json(model, exclude_none=exclude_none),
        content_type="application/json",
        charset="utf-8",
        headers=headers,
    )
