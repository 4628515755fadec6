"""The partner's pages of the portal: their webhook endpoints (list, create, edit,
disable / enable, delete), the signing secret (shown once, rotated) and a test ping.

The delivery log, attempts, retries, recovery and the status page are in
``partner_deliveries``; the event catalogue and the pull guide in ``partner_docs``.
Every change goes through ``web.subscriptionops``, as the JSON API's do. Operators
may open every webhook endpoint; a partner only its own (any other id is a 404).
"""

from __future__ import annotations

import re
from typing import Any, Final

from aiohttp import web
from multidict import MultiDictProxy

from storage.records import Subscription
from syndicate.content.models import SubscriptionIn, SubscriptionPatch
from syndicate.content.validation import validate
from syndicate.core.errors import Problem
from syndicate.core.names import EVENT_TYPES, EVERY_TOPIC
from syndicate.web import subscriptionops as ops
from syndicate.web.appkeys import SETTINGS, STORAGE
from syndicate.web.portal.render import PORTAL, notice_from, page, see_other
from syndicate.web.portal.session import Viewer, read_form, require

routes = web.RouteTableDef()
#: Endpoints listed on one page of /portal/endpoints.
PAGE_SIZE: Final = 50
NAV: Final = "endpoints"
#: The fields of the endpoint form, as the models name them (an error on another
#: field, or on none, is shown at the top of the form only).
FORM_FIELDS: Final = ("url", "description", "topics", "events")
_NOTICES: Final = {
    "saved": "The endpoint was saved.",
    "disabled": "The endpoint is disabled: nothing is sent to it until you enable it.",
    "enabled": "The endpoint is enabled again.",
    "deleted": "The endpoint and its delivery log were deleted.",
}
_TOPIC_SEPARATORS: Final = re.compile(r"[\s,]+")


def endpoint_path(sub: Subscription, *tail: str) -> str:
    return "/".join((f"{PORTAL}/endpoints/{sub.id}", *tail))


async def viewer_and_endpoint(request: web.Request) -> tuple[Viewer, Subscription]:
    """The signed-in viewer and the endpoint in the path, which it may see (404 if not)."""
    viewer = await require(request, "partner", "operator")
    return viewer, await ops.owned(request.app, request.match_info["id"], viewer.token)


def _typed(
    form: MultiDictProxy[str] | None = None, sub: Subscription | None = None
) -> dict[str, Any]:
    """The endpoint form's values: as typed, else the endpoint's, else empty."""
    if form is not None:
        return {
            "url": form.get("url", ""),
            "description": form.get("description", ""),
            "topics": form.get("topics", ""),
            "events": form.getall("events", []),
        }
    if sub is not None:
        return {
            "url": sub.url,
            "description": sub.description,
            "topics": ", ".join(sub.topics),
            "events": list(sub.events),
        }
    return {"url": "", "description": "", "topics": EVERY_TOPIC, "events": []}


def _as_json(typed: dict[str, Any]) -> dict[str, Any]:
    """The form as the JSON API takes it: topics split on commas and spaces, no
    event type ticked = every type."""
    return {
        "url": typed["url"].strip(),
        "description": typed["description"],
        "topics": [t for t in _TOPIC_SEPARATORS.split(typed["topics"]) if t],
        "events": typed["events"] or None,
    }


def form_errors(problem: Problem, fields: tuple[str, ...]) -> dict[str, str]:
    """A ``Problem``'s field errors by form field (``topics.2`` is the topics field);
    an error naming no field of the form is listed under ``""``."""
    errors: dict[str, str] = {}
    for error in problem.errors or [{"field": "", "message": problem.detail}]:
        name = error["field"].split(".")[0]
        errors.setdefault(name if name in fields else "", error["message"])
    return errors


def _form_page(
    request: web.Request,
    *,
    typed: dict[str, Any],
    sub: Subscription | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    return page(
        request,
        "endpoint_form.html",
        status=status,
        nav=NAV,
        sub=sub,
        values=typed,
        errors=errors or {},
        event_types=EVENT_TYPES,
        every_topic=EVERY_TOPIC,
    )


@routes.get("/portal/endpoints")
async def list_endpoints(request: web.Request) -> web.Response:
    viewer = await require(request, "partner", "operator")
    owner = None if viewer.is_operator else viewer.name
    after = request.query.get("after") or None
    subs = await request.app[STORAGE].list_subscriptions(
        owner=owner, kind="webhook", limit=PAGE_SIZE + 1, after_id=after
    )
    more = subs[PAGE_SIZE - 1].id if len(subs) > PAGE_SIZE else None
    return page(
        request,
        "endpoints.html",
        nav=NAV,
        endpoints=subs[:PAGE_SIZE],
        next_after=more,
        notice=notice_from(request, _NOTICES),
    )


@routes.get("/portal/endpoints/new")
async def new_endpoint(request: web.Request) -> web.Response:
    await require(request, "partner", "operator")
    return _form_page(request, typed=_typed())


@routes.post("/portal/endpoints")
async def create_endpoint(request: web.Request) -> web.Response:
    viewer = await require(request, "partner", "operator")
    form = await read_form(request)
    typed = _typed(form)
    try:
        body = validate(SubscriptionIn, _as_json(typed))
        sub, secret = await ops.create(request.app, viewer.token, body)
    except Problem as problem:
        if problem.status not in (409, 422):
            raise
        errors = form_errors(problem, FORM_FIELDS)
        return _form_page(request, typed=typed, errors=errors, status=problem.status)
    return page(request, "endpoint_secret.html", nav=NAV, sub=sub, secret=secret, rotated=False)


@routes.get("/portal/endpoints/{id}")
async def show_endpoint(request: web.Request) -> web.Response:
    _, sub = await viewer_and_endpoint(request)
    return page(
        request,
        "endpoint.html",
        nav=NAV,
        sub=sub,
        notice=notice_from(request, _NOTICES),
    )


@routes.get("/portal/endpoints/{id}/edit")
async def edit_form(request: web.Request) -> web.Response:
    _, sub = await viewer_and_endpoint(request)
    return _form_page(request, typed=_typed(sub=sub), sub=sub)


@routes.post("/portal/endpoints/{id}/edit")
async def edit_endpoint(request: web.Request) -> web.Response:
    _, sub = await viewer_and_endpoint(request)
    form = await read_form(request)
    typed = _typed(form)
    try:
        # Every field is sent: no event type ticked is an explicit "every type".
        body = validate(SubscriptionPatch, _as_json(typed))
        await ops.patch(request.app, sub, body)
    except Problem as problem:
        if problem.status != 422:
            raise
        errors = form_errors(problem, FORM_FIELDS)
        return _form_page(request, typed=typed, sub=sub, errors=errors, status=422)
    return see_other(endpoint_path(sub), notice="saved")


async def _set_state(request: web.Request, state: str) -> web.Response:
    _, sub = await viewer_and_endpoint(request)
    await read_form(request)
    await ops.patch(request.app, sub, SubscriptionPatch.model_validate({"status": state}))
    return see_other(endpoint_path(sub), notice="enabled" if state == "active" else "disabled")


@routes.post("/portal/endpoints/{id}/disable")
async def disable_endpoint(request: web.Request) -> web.Response:
    return await _set_state(request, "disabled")


@routes.post("/portal/endpoints/{id}/enable")
async def enable_endpoint(request: web.Request) -> web.Response:
    return await _set_state(request, "active")


@routes.get("/portal/endpoints/{id}/delete")
async def confirm_delete(request: web.Request) -> web.Response:
    _, sub = await viewer_and_endpoint(request)
    return page(request, "endpoint_delete.html", nav=NAV, sub=sub)


@routes.post("/portal/endpoints/{id}/delete")
async def delete_endpoint(request: web.Request) -> web.Response:
    _, sub = await viewer_and_endpoint(request)
    await read_form(request)
    await request.app[STORAGE].delete_subscription(sub.id)
    return see_other(f"{PORTAL}/endpoints", notice="deleted")


@routes.post("/portal/endpoints/{id}/rotate-secret")
async def rotate_secret(request: web.Request) -> web.Response:
    _, sub = await viewer_and_endpoint(request)
    await read_form(request)
    updated, secret = await ops.rotate_secret(request.app, sub)
    return page(
        request,
        "endpoint_secret.html",
        nav=NAV,
        sub=updated,
        secret=secret,
        rotated=True,
        grace_hours=request.app[SETTINGS].secret_grace / 3600,
    )


@routes.post("/portal/endpoints/{id}/test")
async def send_test(request: web.Request) -> web.Response:
    _, sub = await viewer_and_endpoint(request)
    await read_form(request)
    result = await ops.send_ping(request.app, sub)
    return page(request, "endpoint_test.html", nav=NAV, sub=sub, result=result)
