"""A WebSub hub (W3C Recommendation, hub side) for every topic feed: its state,
verification of intent, and notifications. The HTTP endpoint is web.routes.hub.

    POST /hub   subscribe / unsubscribe: 202 at once, then verification of
                intent in the background (GET the callback with a challenge);
                publish: notify a feed's subscribers now.

Verified subscriptions are stored as ``kind="websub"`` subscriptions and fed by
the same outbox and dispatcher as webhooks (``websub_request`` builds the
notification). A pending (re-)subscription lives in memory until verified, so
the stored state changes only after a successful verification.

Limits, so that nobody can make the hub work (or fan out) without bound:
verifications under way at once, in all, per client address and per callback
registrable domain (beyond: 429 + ``Retry-After``); new subscriptions accepted
per second (429); and subscriptions per callback host and per topic feed (denied
with ``hub.mode=denied``, as the WebSub Recommendation has it). Each refusal
logs one line naming the setting that refused it (``limit``).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import ipaddress
import logging
import math
import re
import secrets
import time
from collections import Counter, OrderedDict
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from publicsuffixlist import PublicSuffixList

import feeds
from storage import Storage, StorageError, TopicNotFound
from storage.records import (
    Article,
    Delivery,
    Event,
    Subscription,
    Verification,
    VerificationResult,
    utcnow,
)
from syndicate.content import render
from syndicate.core.names import ALL_TOPICS_SLUG, EVERY_TOPIC, valid_topic
from syndicate.core.rate import RateLimiter
from syndicate.core.settings import Settings
from syndicate.delivery.sender import OutboundRequest, Sender
from syndicate.delivery.webhooks import new_subscription_id

logger = logging.getLogger(
    "syndicate.websub"
)  # one name for the hub's lines, wherever they are logged

MAX_SECRET_BYTES = 200
MAX_CALLBACK_LENGTH = 2048
#: Control characters (NUL included: no database text can hold it) refused in
#: callbacks and secrets.
CONTROL_CHARS = re.compile("[\x00-\x1f\x7f-\x9f]")
VERIFY_ATTEMPTS = 3
#: ``Retry-After`` when too many verifications are under way: about one
#: verification's time (three tries, the last ones after 0.5 and 1 s).
PENDING_RETRY_AFTER = 5
#: ``hub.mode=publish``: once per feed in this long, PUBLISH_CONCURRENCY sends at a time.
PUBLISH_INTERVAL = 60.0
PUBLISH_CONCURRENCY = 16
#: Feeds whose last publish is remembered (the oldest forgotten first).
PUBLISHED_MEMORY = 10_000


@dataclass(frozen=True)
class Topic:
    """One of our feed URLs, as a subscriber named it."""

    url: str
    slug: str
    fmt: feeds.FeedFormat


def parse_topic(base_url: str, url: str) -> Topic | None:
    """``BASE/feeds/{slug}.{rss|atom|json}`` (any page of it), else None."""
    parts = urlsplit(url)
    base = urlsplit(base_url)
    if (parts.scheme, parts.netloc.lower()) != (base.scheme, base.netloc.lower()):
        return None
    prefix = base.path.rstrip("/") + "/feeds/"
    if not parts.path.startswith(prefix):
        return None
    name, _, ext = parts.path.removeprefix(prefix).rpartition(".")
    if ext not in feeds.FORMATS or not name or "/" in name:
        return None
    if name != ALL_TOPICS_SLUG and not valid_topic(name):
        return None
    return Topic(url, name, ext)


def clamp_lease(requested: str | None, settings: Settings) -> int:
    try:
        seconds = int(requested) if requested else settings.websub_lease_default
    except ValueError:
        seconds = settings.websub_lease_default
    return max(settings.websub_lease_min, min(settings.websub_lease_max, seconds))


def with_query(url: str, params: dict[str, str]) -> str:
    """The callback with our parameters appended to its own query string."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


def not_confirmed_detail(status: int | None, error: str | None, *, tries: int) -> str:
    """What the callback answered to the last of ``tries`` verification GETs that
    did not confirm (never its body: the status page is public)."""
    times = "" if tries == 1 else f" (after {tries} tries)"
    if status is None:
        return f"no answer: {error or 'the request failed'}{times}"
    if 200 <= status < 300:
        return f"answered HTTP {status} without echoing hub.challenge"
    if 300 <= status < 400:
        return f"answered HTTP {status} (redirects are not followed)"
    return f"answered HTTP {status}{times}"


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@functools.cache
def _public_suffixes() -> PublicSuffixList:
    # The list bundled with the package: never fetched at run time.
    return PublicSuffixList()


def callback_domain(callback: str) -> str:
    """Whose callback this is, for the per-domain limit: the registrable domain of
    its host (``example.co.uk`` for ``a.b.example.co.uk``, per the Public Suffix
    List), the host itself when it has none (``localhost``), and for an address
    the address, an IPv6 one by its /64 (one site's usual allocation)."""
    host = (urlsplit(callback).hostname or "").lower().rstrip(".")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return _public_suffixes().privatesuffix(host) or host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


@dataclass(frozen=True)
class Refusal:
    """A request beyond a limit: which setting (``limit``) and when to come back."""

    limit: str
    retry_after: int
    reason: str


class Pending:
    """Verifications under way in this process, counted in all, by client and by
    callback domain. Counts at zero are dropped: memory follows what is pending."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.total = 0
        self.by_client: Counter[str] = Counter()
        self.by_domain: Counter[str] = Counter()

    def full(self, client: str, domain: str) -> Refusal | None:
        s = self.settings
        for limit, count, most, whose in (
            ("hub_max_pending", self.total, s.hub_max_pending, "in all"),
            (
                "hub_max_pending_per_client",
                self.by_client[client],
                s.hub_max_pending_per_client,
                "from your address",
            ),
            (
                "hub_max_pending_per_domain",
                self.by_domain[domain],
                s.hub_max_pending_per_domain,
                f"for callbacks on {domain}",
            ),
        ):
            if count >= most:
                reason = f"too many verifications under way {whose}"
                return Refusal(limit, PENDING_RETRY_AFTER, reason)
        return None

    def add(self, client: str, domain: str) -> None:
        self.total += 1
        self.by_client[client] += 1
        self.by_domain[domain] += 1

    def remove(self, client: str, domain: str) -> None:
        self.total -= 1
        for counter, key in ((self.by_client, client), (self.by_domain, domain)):
            counter[key] -= 1
            if counter[key] <= 0:
                del counter[key]


class Hub:
    """Runs verifications in the background and remembers none of them durably:
    a subscriber whose request is lost in a restart simply asks again."""

    def __init__(self, storage: Storage, settings: Settings, sender: Sender) -> None:
        self.storage = storage
        self.settings = settings
        self.sender = sender
        self._tasks: set[asyncio.Task[Any]] = set()
        self.pending = Pending(settings)
        rate = settings.hub_subscribe_rate
        self._creations = RateLimiter(rate, max(1, math.ceil(rate)))
        self._published: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._publish_slots = asyncio.Semaphore(PUBLISH_CONCURRENCY)

    def spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def admit(self, client: str, callback: str, *, creates: bool) -> Refusal | None:
        """Take a verification slot for ``client``'s request (then ``verify`` must
        follow, which gives it back), or the limit that refuses it. ``creates``:
        the request would make a new subscription (not renew one)."""
        domain = callback_domain(callback)
        refusal = self.pending.full(client, domain)
        if refusal is None and creates:
            wait = self._creations.take("subscribe")
            if wait is not None:
                refusal = Refusal(
                    "hub_subscribe_rate", max(1, math.ceil(wait)), "too many new subscriptions"
                )
        if refusal is not None:
            logger.warning(
                "websub request refused",
                extra={
                    "limit": refusal.limit,
                    "client": client,
                    "domain": domain,
                    "callback": callback,
                },
            )
            return refusal
        self.pending.add(client, domain)
        return None

    async def verify(
        self,
        mode: str,
        topic: Topic,
        callback: str,
        lease: int,
        secret: str | None,
        *,
        client: str,
    ) -> None:
        """Verify (after ``admit``), then give the slot back."""
        try:
            await self._verify(mode, topic, callback, lease, secret)
        except StorageError as exc:
            logger.warning("websub verification failed", extra={"error": str(exc)})
        finally:
            self.pending.remove(client, callback_domain(callback))

    async def _verify(
        self, mode: str, topic: Topic, callback: str, lease: int, secret: str | None
    ) -> None:
        if topic.slug != ALL_TOPICS_SLUG:
            try:
                await self.storage.get_topic(topic.slug)
            except TopicNotFound:
                await self.deny(topic, callback, "the topic no longer exists", mode=mode)
                return
        if (
            mode == "subscribe"
            and await self.storage.find_websub_subscription(callback, topic.url) is None
        ):
            refusal = await self._subscriptions_full(callback, topic)
            if refusal is not None:
                logger.warning(
                    "websub subscription denied",
                    extra={"limit": refusal.limit, "callback": callback, "topic": topic.url},
                )
                await self.deny(topic, callback, refusal.reason, mode=mode)
                return
        challenge = secrets.token_urlsafe(32)
        params = {"hub.mode": mode, "hub.topic": topic.url, "hub.challenge": challenge}
        if mode == "subscribe":
            params["hub.lease_seconds"] = str(lease)
        confirmed = False
        for attempt in range(VERIFY_ATTEMPTS):
            status, body, error = await self.sender.get(with_query(callback, params))
            if status is not None and 200 <= status < 300:
                confirmed = body == challenge
                break
            if status is not None and 400 <= status < 500:
                break
            await asyncio.sleep(0.5 * (attempt + 1))
        if not confirmed:
            logger.info("websub intent not confirmed", extra={"callback": callback})
            detail = not_confirmed_detail(status, error, tries=attempt + 1)
            await self._record(mode, topic, callback, "not_confirmed", detail)
            return
        existing = await self.storage.find_websub_subscription(callback, topic.url)
        if mode == "unsubscribe":
            if existing is not None:
                await self.storage.delete_subscription(existing.id)
            await self._record(mode, topic, callback, "confirmed", "")
            return
        expires = utcnow() + timedelta(seconds=lease)
        if existing is None:
            await self.storage.create_subscription(
                id=new_subscription_id(),
                kind="websub",
                url=callback,
                topics=[EVERY_TOPIC] if topic.slug == ALL_TOPICS_SLUG else [topic.slug],
                events=[],
                secret=secret,
                lease_expires_at=expires,
                topic_url=topic.url,
            )
        else:
            await self.storage.update_subscription(
                existing.id,
                {
                    "secret": secret,
                    "lease_expires_at": expires,
                    "status": "active",
                    "failing_since": None,
                },
            )
        await self._record(mode, topic, callback, "confirmed", f"lease of {lease} s")

    async def _record(
        self, mode: str, topic: Topic, callback: str, result: VerificationResult, detail: str
    ) -> None:
        """Keep the outcome for ``GET /hub/status``."""
        verification = Verification(callback, topic.url, mode, utcnow(), result, detail)
        await self.storage.record_verification(verification)

    async def _subscriptions_full(self, callback: str, topic: Topic) -> Refusal | None:
        """The stored-subscription limit a new subscription would pass, if any (two
        index look-ups). Verifications under way at once may each pass it: the
        overshoot is at most ``hub_max_pending``."""
        host = (urlsplit(callback).hostname or "").lower()
        settings, count = self.settings, self.storage.count_websub_subscriptions
        if await count(host=host) >= settings.websub_max_per_host:
            reason = "too many subscriptions for this callback host"
            return Refusal("websub_max_per_host", 0, reason)
        if await count(topic_url=topic.url) >= settings.websub_max_per_topic:
            return Refusal("websub_max_per_topic", 0, "too many subscriptions for this topic")
        return None

    async def deny(self, topic: Topic, callback: str, reason: str, *, mode: str) -> None:
        """Tell the subscriber its ``mode`` request is denied, and keep that."""
        await self._record(mode, topic, callback, "denied", reason)
        params = {"hub.mode": "denied", "hub.topic": topic.url, "hub.reason": reason}
        await self.sender.get(with_query(callback, params))

    def publish_wait(self, topic: Topic) -> float:
        """Seconds until this feed may be published again (0: now). Anyone may ask
        the hub to publish, and one request sends to every subscriber of the feed:
        at most once per PUBLISH_INTERVAL per feed, so that it cannot be made a
        flood (every change is notified by the outbox anyway)."""
        key = (topic.slug, topic.fmt)
        last = self._published.get(key)
        now = time.monotonic()
        if last is not None and now - last < PUBLISH_INTERVAL:
            return PUBLISH_INTERVAL - (now - last)
        self._published[key] = now
        self._published.move_to_end(key)
        while len(self._published) > PUBLISHED_MEMORY:
            self._published.popitem(last=False)
        return 0.0

    async def publish(self, topic: Topic) -> int:
        """Send the current feed to every live subscriber of this feed URL now
        (best effort, no retries: article changes go through the outbox), at most
        PUBLISH_CONCURRENCY requests at a time."""
        subscriptions = [
            s
            for s in await self.storage.list_active_subscriptions(kind="websub")
            if s.topic_url == topic.url
        ]
        body = await current_feed(self.storage, self.settings, topic)
        for sub in subscriptions:
            self.spawn(self._publish_one(notification(sub, topic, body, self.settings.base_url)))
        return len(subscriptions)

    async def _publish_one(self, request: OutboundRequest) -> None:
        async with self._publish_slots:
            await self.sender.send(request)


async def current_feed(storage: Storage, settings: Settings, topic: Topic) -> bytes:
    base = settings.base_url
    meta = await render.topic_meta(storage, base, topic.slug)
    scope = None if topic.slug == ALL_TOPICS_SLUG else topic.slug
    articles = await storage.list_articles(topic=scope, limit=settings.feed_items)
    state = await storage.feed_state(scope)
    updated = render.last_modified(state, meta.created_at)
    deleted = await render.tombstones(storage, topic.slug, topic.fmt, updated)
    return render.build_feed(
        base,
        topic.slug,
        topic.fmt,
        meta,
        articles,
        self_url=topic.url,
        updated=updated,
        deleted=deleted,
    )


def notification(sub: Subscription, topic: Topic, body: bytes, base_url: str) -> OutboundRequest:
    headers = {
        "Content-Type": feeds.CONTENT_TYPES[topic.fmt],
        "Link": f'<{base_url}/hub>; rel="hub", <{topic.url}>; rel="self"',
    }
    if sub.secret:
        headers["X-Hub-Signature"] = signature(sub.secret, body)
    return OutboundRequest(url=sub.url, body=body, headers=headers)


async def websub_request(
    storage: Storage, settings: Settings, delivery: Delivery, event: Event, sub: Subscription
) -> OutboundRequest:
    """The feed in the subscribed format holding the changed entry (for a
    deletion: the current feed)."""
    topic = parse_topic(settings.base_url, sub.topic_url or "")
    if topic is None:
        raise ValueError(f"subscription {sub.id} has no topic URL of this hub")
    if event.type == "article.deleted":
        body = await current_feed(storage, settings, topic)
    else:
        meta = await render.topic_meta(storage, settings.base_url, topic.slug)
        article = Article.from_json(event.data)
        body = render.build_feed(
            settings.base_url,
            topic.slug,
            topic.fmt,
            meta,
            [article],
            self_url=topic.url,
            updated=event.created_at,
        )
    return notification(sub, topic, body, settings.base_url)
