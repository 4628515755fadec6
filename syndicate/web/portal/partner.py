"""The partner's pages of the portal: their webhook endpoints (list, create, edit,
disable / enable, delete), the signing secret (shown once, rotated) and a test ping.

The delivery log, attempts, retries, recovery and the status page are in
``partner_deliveries``; the event catalogue and the pull guide in ``partner_docs``.
Every change goes through ``web.subscriptionops``, as the JSON API's do. Operators
may open every webhook endpoint; a partner only its own (any other id is a 404).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
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
from syndicate.web.portal.session import Viewer, read_form, require, spend_write

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
#: How long the page that shows a new secret can be opened again (a reload, a
#: back-and-forth) in the browser whose session made it.
REVEAL_SECONDS: Final = 600


def _reveal_key(viewer: Viewer, sub: Subscription, until: int, rotated: bool) -> str:
    """The seal on a reveal URL: this session, this endpoint, its secret as it is now,
    until when. A later rotation, another browser or the end of the time voids it."""
    message = f"reveal:{sub.id}:{ops.fingerprint(sub.secret)}:{until}:{int(rotated)}"
    return hmac.new(viewer.session_hash.encode(), message.encode(), hashlib.sha256).hexdigest()


def _reveal(viewer: Viewer, sub: Subscription, *, rotated: bool) -> web.Response:
    """After a POST that made a secret: a 303 to the page that shows it (a reload
    then shows it again instead of making another endpoint or secret)."""
    until = int(time.time()) + REVEAL_SECONDS
    key = _reveal_key(viewer, sub, until, rotated)
    kind = "rotated" if rotated else "added"
    return see_other(endpoint_path(sub, f"secret?{kind}=1&until={until}&key={key}"))


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
    headers: dict[str, str] | None = None,
) -> web.Response:
    return page(
        request,
        "endpoint_form.html",
        status=status,
        headers=headers,
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
    after = ops.listing_cursor(request.query.get("cursor") or None)
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
    form = await read_form(request, write=False)
    typed = _typed(form)
    try:
        spend_write(request, viewer)
        body = validate(SubscriptionIn, _as_json(typed))
        sub, _ = await ops.create(request.app, viewer.token, body)
    except Problem as problem:
        if problem.status not in (409, 422, 429):
            raise
        errors = form_errors(problem, FORM_FIELDS)
        return _form_page(
            request, typed=typed, errors=errors, status=problem.status, headers=problem.headers
        )
    return _reveal(viewer, sub, rotated=False)


@routes.get("/portal/endpoints/{id}/secret")
async def show_secret(request: web.Request) -> web.Response:
    """The secret just made, shown to the browser that made it for REVEAL_SECONDS."""
    viewer, sub = await viewer_and_endpoint(request)
    rotated = request.query.get("rotated") == "1"
    raw_until = request.query.get("until", "")
    until = int(raw_until) if ops.row_id(raw_until) is not None else 0
    key = request.query.get("key", "")
    expected = _reveal_key(viewer, sub, until, rotated)
    if until < time.time() or not hmac.compare_digest(key.encode(), expected.encode()):
        raise Problem(
            410,
            f"This secret is no longer shown: a new secret is shown for "
            f"{REVEAL_SECONDS // 60} minutes, only in the browser that made it, and only "
            "until the next rotation. If it is lost, rotate the secret to get a new one.",
            title="Secret no longer shown",
        )
    return page(
        request,
        "endpoint_secret.html",
        nav=NAV,
        sub=sub,
        secret=sub.secret,
        rotated=rotated,
        reveal_minutes=REVEAL_SECONDS // 60,
        grace_hours=request.app[SETTINGS].secret_grace / 3600,
    )


@routes.get("/portal/endpoints/{id}")
async def show_endpoint(request: web.Request) -> web.Response:
    _, sub = await viewer_and_endpoint(request)
    return page(
        request,
        "endpoint.html",
        nav=NAV,
        sub=sub,
        secret_fingerprint=ops.fingerprint(sub.secret),
        notice=notice_from(request, _NOTICES),
    )


@routes.get("/portal/endpoints/{id}/edit")
async def edit_form(request: web.Request) -> web.Response:
    _, sub = await viewer_and_endpoint(request)
    return _form_page(request, typed=_typed(sub=sub), sub=sub)


@routes.post("/portal/endpoints/{id}/edit")
async def edit_endpoint(request: web.Request) -> web.Response:
    viewer, sub = await viewer_and_endpoint(request)
    form = await read_form(request, write=False)
    typed = _typed(form)
    try:
        spend_write(request, viewer)
        # Every field is sent: no event type ticked is an explicit "every type".
        body = validate(SubscriptionPatch, _as_json(typed))
        await ops.patch(request.app, sub, body)
    except Problem as problem:
        if problem.status not in (422, 429):
            raise
        errors = form_errors(problem, FORM_FIELDS)
        return _form_page(
            request,
            typed=typed,
            sub=sub,
            errors=errors,
            status=problem.status,
            headers=problem.headers,
        )
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
    await ops.delete(request.app, sub)
    return see_other(f"{PORTAL}/endpoints", notice="deleted")


@routes.post("/portal/endpoints/{id}/rotate-secret")
async def rotate_secret(request: web.Request) -> web.Response:
    """Rotate the secret the form names (``replaces``, its fingerprint): a second click
    or a resent form finds another secret there and rotates nothing, so the secret the
    endpoint still checks keeps its grace period."""
    viewer, sub = await viewer_and_endpoint(request)
    form = await read_form(request)
    updated, _ = await ops.rotate_secret(request.app, sub, replaces=form.get("replaces", ""))
    return _reveal(viewer, updated, rotated=True)


@routes.post("/portal/endpoints/{id}/test")
async def send_test(request: web.Request) -> web.Response:
    _, sub = await viewer_and_endpoint(request)
    await read_form(request)
    result = await ops.send_ping(request.app, sub)
    return page(request, "endpoint_test.html", nav=NAV, sub=sub, result=result)
