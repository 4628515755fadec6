"""``POST /hub``: the WebSub hub's endpoint (the hub itself is delivery.websub).

Answers are text/plain, as WebSub subscribers expect: 202 at once for a
(un)subscription, whose verification of intent follows in the background.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from aiohttp import web

from storage import TopicNotFound
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
from syndicate.web.requests import body_deadline, body_too_slow

logger = logging.getLogger(
    "syndicate.websub"
)  # one name for the hub's lines, wherever they are logged

routes = web.RouteTableDef()
HUB = web.AppKey("hub", Hub)


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
