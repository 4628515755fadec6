"""``POST /hub``: the WebSub hub's endpoint (the hub itself is delivery.websub), and
``GET /hub/status``: how one (callback, topic) pair is doing.

``POST /hub`` answers text/plain, as WebSub subscribers expect: 202 at once for a
(un)subscription, whose verification of intent follows in the background.

``GET /hub/status?hub.topic=&hub.callback=`` is public (subscribers have no token):
an HTML page, or JSON (``HubStatusOut``; errors as problem+json) for a client that
asks for ``application/json``. It shows the subscription's state and lease, whether
notifications are signed (never the secret), the last verification of intent and the
last 20 notification attempts (never response bodies or headers).
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from aiohttp import web

from storage import TopicNotFound
from storage.records import Subscription, format_time, utcnow
from syndicate.content.responses import AttemptOut, HubState, HubStatusOut, VerificationOut
from syndicate.core.errors import Problem
from syndicate.core.names import ALL_TOPICS_SLUG
from syndicate.delivery.egress import EgressRefused, check_url
from syndicate.delivery.websub import (
    CONTROL_CHARS,
    MAX_CALLBACK_LENGTH,
    MAX_SECRET_BYTES,
    PUBLISH_INTERVAL,
    Hub,
    clamp_lease,
    parse_topic,
)
from syndicate.web.appkeys import DELIVERY, SETTINGS, STORAGE
from syndicate.web.limits import client_key, enforce
from syndicate.web.operations import model_response
from syndicate.web.problems import problem_response
from syndicate.web.requests import body_deadline, body_too_slow
from syndicate.web.routes.pages import _error, _page

logger = logging.getLogger(
    "syndicate.websub"
)  # one name for the hub's lines, wherever they are logged

routes = web.RouteTableDef()
HUB = web.AppKey("hub", Hub)
#: Notification attempts a status page lists, newest first.
STATUS_ATTEMPTS = 20
#: A status changes with every notification: never kept by a cache.
STATUS_CACHE_CONTROL = "no-store"


def _text(status: int, reason: str) -> web.Response:
    return web.Response(status=status, text=reason + "\n", content_type="text/plain")


@routes.post("/hub")
async def hub_endpoint(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    try:
        enforce(request, client_key(request))
    except Problem as problem:
        return web.Response(
            status=429,
            text=problem.detail + "\n",
            headers=problem.headers,
            content_type="text/plain",
        )
    if request.content_type != "application/x-www-form-urlencoded":
        return _text(415, "send application/x-www-form-urlencoded")
    try:
        async with body_deadline(request):
            form = await request.post()
    except (UnicodeDecodeError, ValueError):
        return _text(400, "the form is not valid UTF-8 form data")
    except TimeoutError:
        raise body_too_slow(request) from None
    mode = str(form.get("hub.mode", ""))
    hub = request.app[HUB]
    if mode == "publish":
        url = str(form.get("hub.url") or form.get("hub.topic") or "")
        topic = parse_topic(settings.base_url, url)
        if topic is None:
            return _text(400, "hub.url must be one of this hub's feed URLs")
        wait = hub.publish_wait(topic)
        if wait:
            logger.warning(
                "websub request refused",
                extra={"limit": "publish_interval", "topic": topic.url},
            )
            return web.Response(
                status=429,
                text=f"this feed was published less than {PUBLISH_INTERVAL:.0f} s ago\n",
                headers={"Retry-After": str(math.ceil(wait))},
                content_type="text/plain",
            )
        try:
            await hub.publish(topic)
        except TopicNotFound:
            return _text(404, "no such topic")
        return _text(202, "notifying subscribers")
    if mode not in ("subscribe", "unsubscribe"):
        return _text(400, "hub.mode must be subscribe, unsubscribe or publish")
    callback = str(form.get("hub.callback", ""))
    topic_url = str(form.get("hub.topic", ""))
    topic = parse_topic(settings.base_url, topic_url)
    if topic is None:
        return _text(400, f"hub.topic must be a feed of this hub ({settings.base_url}/feeds/...)")
    if mode == "subscribe" and (urlsplit(topic_url).query or urlsplit(topic_url).fragment):
        # A feed's own URL (its rel=self) has none, and URLs that differ only there
        # would each count as a topic of their own against websub_max_per_topic.
        return _text(400, "hub.topic must be a feed's own URL, without a query or fragment")
    if topic.slug != ALL_TOPICS_SLUG:
        try:
            await request.app[STORAGE].get_topic(topic.slug)
        except TopicNotFound:
            return _text(404, f"no topic {topic.slug!r} here")
    if not callback or len(callback) > MAX_CALLBACK_LENGTH or CONTROL_CHARS.search(callback):
        return _text(400, "hub.callback must be an absolute http(s) URL")
    try:
        await check_url(callback, allow_private=settings.allow_private_targets)
    except EgressRefused as exc:
        return _text(400, f"hub.callback refused: {exc}")
    secret = form.get("hub.secret")
    secret_text = str(secret) if secret else None
    if secret_text is not None and len(secret_text.encode()) >= MAX_SECRET_BYTES:
        return _text(400, f"hub.secret must be shorter than {MAX_SECRET_BYTES} bytes")
    if secret_text is not None and CONTROL_CHARS.search(secret_text):
        return _text(400, "hub.secret must not contain control characters")
    lease = clamp_lease(str(form.get("hub.lease_seconds") or "") or None, settings)
    creates = (
        mode == "subscribe"
        and await request.app[STORAGE].find_websub_subscription(callback, topic.url) is None
    )
    client = client_key(request)
    refusal = hub.admit(client, callback, creates=creates)
    if refusal is not None:
        return web.Response(
            status=429,
            text=f"{refusal.reason}; try again in {refusal.retry_after} s\n",
            headers={"Retry-After": str(refusal.retry_after)},
            content_type="text/plain",
        )
    hub.spawn(hub.verify(mode, topic, callback, lease, secret_text, client=client))
    return _text(202, "verification of intent will follow")


async def hub_ctx(app: web.Application) -> AsyncIterator[None]:
    hub = Hub(app[STORAGE], app[SETTINGS], app[DELIVERY].sender)
    app[HUB] = hub
    yield
    await hub.close()


# -- GET /hub/status -------------------------------------------------------------------


def wants_json(request: web.Request) -> bool:
    """Whether ``Accept`` prefers ``application/json`` to HTML (browsers, and curl's
    ``*/*``, get the page)."""
    best = {"json": 0.0, "html": 0.0}
    for part in request.headers.get("Accept", "").split(","):
        media, *params = (p.strip() for p in part.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        kind = {"application/json": "json", "application/problem+json": "json"}.get(
            media.lower(), "html" if media.lower() in ("text/html", "text/*", "*/*") else None
        )
        if kind is not None:
            best[kind] = max(best[kind], quality)
    return best["json"] > 0 and best["json"] > best["html"]


def _status_error(
    request: web.Request,
    status: int,
    title: str,
    detail: str,
    *,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    if wants_json(request):
        errors = None if field is None else [{"field": field, "message": detail}]
        problem = Problem(status, detail, errors=errors, headers=headers)
        response = problem_response(problem, request)
    else:
        response = _error(request, status, title, detail)
        response.headers.update(headers or {})
    response.headers["Cache-Control"] = STATUS_CACHE_CONTROL
    response.headers["Vary"] = "Accept"
    return response


def _bad_parameter(request: web.Request) -> tuple[str, str] | None:
    """The first missing or unusable query parameter and why, if any."""
    base_url = request.app[SETTINGS].base_url
    topic = request.query.get("hub.topic", "")
    callback = request.query.get("hub.callback", "")
    if not topic:
        return "hub.topic", "hub.topic is required: the feed URL subscribed to"
    if parse_topic(base_url, topic) is None:
        return "hub.topic", f"hub.topic must be a feed of this hub ({base_url}/feeds/...)"
    if not callback:
        return "hub.callback", "hub.callback is required: the callback URL as subscribed"
    scheme = urlsplit(callback).scheme.lower() if not CONTROL_CHARS.search(callback) else ""
    if len(callback) > MAX_CALLBACK_LENGTH or scheme not in ("http", "https"):
        return "hub.callback", "hub.callback must be an absolute http(s) URL"
    return None


def _state(sub: Subscription | None) -> HubState:
    return "unsubscribed" if sub is None else sub.state_at(utcnow())


@routes.get("/hub/status")
async def hub_status(request: web.Request) -> web.Response:
    try:
        # A bucket of its own per client: reading status never spends subscriptions'.
        enforce(request, "hub-status:" + client_key(request))
    except Problem as problem:
        return _status_error(
            request, 429, "Too many requests", problem.detail, headers=problem.headers
        )
    bad = _bad_parameter(request)
    if bad is not None:
        field, detail = bad
        return _status_error(request, 400, "Bad request", detail, field=field)
    topic, callback = request.query["hub.topic"], request.query["hub.callback"]
    storage = request.app[STORAGE]
    # The verification first: the hub records it after the change it made, which a
    # read of the subscription afterwards then sees.
    verification = await storage.get_verification(callback, topic)
    sub = await storage.find_websub_subscription(callback, topic)
    if sub is None and verification is None:
        detail = "this hub has no subscription and no verification of intent for that pair"
        return _status_error(request, 404, "No such subscription", detail)
    attempts = [] if sub is None else await storage.list_attempts(sub.id, limit=STATUS_ATTEMPTS)
    status = HubStatusOut(
        topic=topic,
        callback=callback,
        subscribed=sub is not None,
        state=_state(sub),
        lease_expires_at=format_time(sub.lease_expires_at)
        if sub is not None and sub.lease_expires_at
        else None,
        secret_set=bool(sub is not None and sub.secret),
        subscribed_at=None if sub is None else format_time(sub.created_at),
        last_verification=None if verification is None else VerificationOut.of(verification),
        recent_attempts=[AttemptOut.of(a) for a in attempts],
    )
    if wants_json(request):
        response = model_response(status)
    else:
        response = _page(request, "hub_status.html", pair=status)
    response.headers["Cache-Control"] = STATUS_CACHE_CONTROL
    response.headers["Vary"] = "Accept"
    return response
