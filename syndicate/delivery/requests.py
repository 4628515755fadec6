"""The HTTP request each delivery makes: a signed webhook (the body encoded once per
event) or a WebSub notification (the feed built once per event and topic URL)."""

from __future__ import annotations

import asyncio
from collections import OrderedDict

from storage import Storage
from storage.records import Delivery, Event, Subscription, utcnow
from syndicate.core.settings import Settings
from syndicate.delivery import webhooks
from syndicate.delivery.sender import OutboundRequest
from syndicate.delivery.webhooks import webhook_request
from syndicate.delivery.websub import notification, parse_topic, websub_request

#: Events whose encoded bodies are kept (one event fans out to many subscriptions).
BODY_CACHE_EVENTS = 256


class Requests:
    """Builds each delivery's request, caching what is the same for many."""

    def __init__(self, storage: Storage, settings: Settings) -> None:
        self.storage = storage
        self.settings = settings
        self._bodies: OrderedDict[int, bytes] = OrderedDict()
        self._websub_bodies: OrderedDict[tuple[int, str], asyncio.Future[OutboundRequest]] = (
            OrderedDict()
        )

    async def build(
        self, delivery: Delivery, event: Event, subscription: Subscription
    ) -> OutboundRequest:
        if subscription.kind == "websub":
            return await self._websub(delivery, event, subscription)
        body = self._bodies.get(event.seq)
        if body is None:
            body = self._bodies[event.seq] = webhooks.event_body(event, self.settings.base_url)
            while len(self._bodies) > BODY_CACHE_EVENTS:
                self._bodies.popitem(last=False)
        return webhook_request(
            delivery, event, subscription, self.settings.base_url, utcnow(), body=body
        )

    async def _websub(
        self, delivery: Delivery, event: Event, subscription: Subscription
    ) -> OutboundRequest:
        """The notification, its feed built once per event and topic URL, not once per
        subscriber: thousands of callbacks may follow one feed."""
        key = (event.seq, subscription.topic_url or "")
        pending = self._websub_bodies.get(key)
        if pending is None:
            pending = self._websub_bodies[key] = asyncio.ensure_future(
                websub_request(self.storage, self.settings, delivery, event, subscription)
            )
            while len(self._websub_bodies) > BODY_CACHE_EVENTS:
                self._websub_bodies.popitem(last=False)
        try:
            built = await asyncio.shield(pending)
        except BaseException:
            if self._websub_bodies.get(key) is pending and pending.done():
                del self._websub_bodies[key]  # not kept: the next one tries again
            raise
        topic = parse_topic(self.settings.base_url, subscription.topic_url or "")
        assert topic is not None  # websub_request checked it
        return notification(subscription, topic, built.body, self.settings.base_url)
