"""The one storage interface; SQLite and PostgreSQL implement it.

Contract for every backend:

- Datetimes in and out are timezone-aware UTC. Verbs that take ``now`` use it
  for every timestamp they write (tests pass a fixed clock); ``None`` is "now".
- An article change and its ``events`` row are written in one transaction
  (the transactional outbox); a replace that changes nothing writes neither.
  Each event gets an id unique across databases (``records.new_event_id``).
- A ``published_at`` after the write's ``now`` schedules an article nobody has seen:
  it is stored with ``scheduled=True`` and NO event, in no topic's listing or count,
  and touches no feed state, until ``publish_due`` announces it (one
  ``article.published`` event, in the transaction that clears the flag: exactly once
  however many processes call it). Its edits and its deletion write no event either.
  A published article given a future ``published_at``: ``ArticleAlreadyPublished``.
- Errors: the ``storage.errors`` tree. ``ArticleNotFound`` and friends for
  missing rows, ``ArticleExists`` / ``TokenExists`` for conflicts,
  ``StorageUnavailable`` when the database cannot be reached, ``StorageError``
  for any other database failure. Programming errors pass through.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from ._access import AccessStorage
from .records import (
    Article,
    ArticleDraft,
    AttemptCount,
    Delivery,
    DeliveryAttempt,
    DeliveryOutcome,
    DeliveryStats,
    DeliveryStatus,
    Event,
    EventType,
    FanOutStep,
    FeedState,
    PutResult,
    Subscription,
    SubscriptionKind,
    SubscriptionStatus,
    Topic,
    Verification,
    Worker,
)

#: An event as the change log's readers need it: (seq, id, type, topics, stored body).
EventItem = tuple[int, str, str, tuple[str, ...], bytes | None]

#: A position in an article listing: (published_at, id) of the last item seen.
ListCursor = tuple[datetime, str]
#: Renders an event's webhook body from its type, the article as the event's snapshot
#: holds it, and the event's ``created_at`` (``Storage.set_event_renderer``).
EventRenderer = Callable[[EventType, Article, datetime], bytes]


class Storage(AccessStorage, Protocol):
    """Persistence for articles, topics, tokens, the event outbox and deliveries."""

    #: Pairs (events x subscriptions) one ``fan_out_events`` step should look at.
    fan_out_step: int

    async def close(self) -> None:
        """Release connections. Idempotent."""

    async def ping(self) -> None:
        """Round-trip to the database; raises ``StorageUnavailable`` when it is gone."""

    async def schema_version(self) -> int:
        """The highest migration applied."""

    # -- articles ---------------------------------------------------------------

    async def put_article(
        self, draft: ArticleDraft, *, create_only: bool = False, now: datetime | None = None
    ) -> PutResult:
        """Create or replace one article and write its event.

        ``create_only`` raises ``ArticleExists`` when the id is taken (a
        tombstone included). Replacing a tombstone brings the article back
        (outcome ``created``, event ``article.published``).
        """

    async def put_articles(
        self, drafts: Sequence[ArticleDraft], *, now: datetime | None = None
    ) -> list[PutResult]:
        """Create or replace many articles in one transaction, in order."""

    async def get_article(self, article_id: str) -> Article:
        """The article, tombstones included; ``ArticleNotFound`` otherwise."""

    async def get_article_by_slug(self, slug: str) -> Article:
        """As ``get_article``, looked up by slug."""

    async def list_articles(
        self,
        *,
        topic: str | None = None,
        limit: int = 50,
        before: ListCursor | None = None,
        after: ListCursor | None = None,
        scheduled: bool = False,
    ) -> list[Article]:
        """Live articles newest first by (published_at, id), strictly before ``before``.
        With ``after`` instead: the ones strictly newer, OLDEST first. Scheduled
        articles are not live (``Article.live``). ``scheduled=True``: the scheduled
        (not deleted) articles instead, for the operator (with ``before`` only)."""

    async def search_articles(
        self, query: str, *, topic: str | None = None, limit: int = 50
    ) -> list[Article]:
        """Live and scheduled articles (not deleted) whose title contains ``query``
        (case-insensitive for ASCII letters at least; ``%`` and ``_`` are plain
        characters), in ``topic`` when given, newest first by (published_at, id)."""

    async def list_deleted(
        self, *, topic: str | None = None, since: datetime, limit: int = 50
    ) -> list[Article]:
        """Tombstones deleted at or after ``since``, newest deletion first (then by id,
        descending), of ``topic`` (one of the topics the article had when deleted) or
        of every topic for None. A scheduled article's tombstone is left out: its
        deletion, like the article, was never announced."""

    async def next_scheduled(self) -> datetime | None:
        """The earliest ``published_at`` of a scheduled (not deleted) article, if any."""

    async def publish_due(self, *, now: datetime | None = None, limit: int = 500) -> list[Article]:
        """Announce up to ``limit`` scheduled articles whose ``published_at`` is at or
        before ``now``, in one transaction, earliest first: each is no longer
        scheduled, gets ``updated_at = now`` (the time of its event), its topic rows
        and counts, and an ``article.published`` event; its topics are marked changed,
        as a create would. Exactly once: an article published by another process
        (or call) meanwhile is not published again. Returns the published articles."""

    async def delete_article(self, article_id: str, *, now: datetime | None = None) -> Article:
        """Tombstone the article and write ``article.deleted``; deleting a
        tombstone again changes nothing. ``ArticleNotFound`` for unknown ids."""

    # -- topics -----------------------------------------------------------------

    async def list_topics(self) -> list[Topic]:
        """Every topic by slug, with its count of live articles."""

    async def get_topic(self, slug: str) -> Topic:
        """One topic; ``TopicNotFound`` otherwise."""

    async def put_topic(
        self, slug: str, *, title: str, description: str, now: datetime | None = None
    ) -> tuple[Topic, bool]:
        """Create or update a topic; returns it and whether it was created."""

    async def feed_state(self, topic: str | None) -> FeedState:
        """One indexed lookup: the last change to the topic's feed (``None``:
        every topic). Writes mark every topic an article enters or leaves.
        ``TopicNotFound`` for an unknown topic."""

    def cached_feed_state(self, topic: str | None) -> FeedState | None:
        """What ``feed_state`` would answer, when this process knows it to be
        current without any I/O; otherwise None (ask ``feed_state``)."""

    # -- the site's own settings ------------------------------------------------

    async def site_setting(self, key: str) -> str | None:
        """The stored value of a site setting (``SITE_BASE_URL``...), if any."""

    async def claim_site_setting(self, key: str, value: str, *, now: datetime | None = None) -> str:
        """Store ``value`` unless the key has one already; returns the stored value
        (this one, or the one that was there: one value wins between processes)."""

    async def set_site_setting(self, key: str, value: str, *, now: datetime | None = None) -> None:
        """Store ``value``, replacing any."""

    # -- the event log ----------------------------------------------------------

    async def list_events(
        self, *, after: int = 0, limit: int = 100, with_data: bool = True
    ) -> list[Event]:
        """Events with ``seq > after`` in order, with their stored ``body`` (or None);
        with ``with_data=False`` their ``data`` snapshots and bodies are left out
        (empty, None), for readers that only route them."""

    def set_event_renderer(self, render: EventRenderer | None) -> None:
        """Store every event written from now on with ``render(type, article,
        created_at)`` as its ``body`` (None: stop; bodies are then NULL). Set by each
        process that writes events, before it writes, with the database's base URL.
        The storage calls it inside its writes and never interprets the bytes: the
        layers above own the format. Correctness never depends on it: a NULL body is
        rendered from the snapshot when read, to the same bytes."""

    async def list_event_items(self, *, after: int = 0, limit: int = 100) -> list[EventItem]:
        """(seq, id, type, topics, stored body or None) of the events with ``seq >
        after``, in order, as plain tuples: the least a reader of the whole log needs
        (no snapshot, no times, no ``Event`` made)."""

    async def find_event(self, event_id: str) -> Event | None:
        """The event with that id (``Event.id``, as sent in ``webhook-id``), without
        its ``data`` snapshot; None when no stored event has it (never written, or
        pruned)."""

    async def event_horizon(self) -> int:
        """The highest seq ever pruned (0: nothing was): every event after it is
        still stored; events at or before it may be gone."""

    async def prune_events(
        self, *, before: datetime, limit: int = 10_000, now: datetime | None = None
    ) -> int:
        """Delete, oldest first, up to ``limit`` events created before ``before``,
        with their deliveries, in one transaction, and move the horizon to the last
        one deleted. Contiguous: it stops at the first event still needed, one with
        a delivery not yet ended (``pending`` or ``failed``) or not yet passed by
        every fan-out cursor. Returns how many events were deleted."""

    def watch_events(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Have ``callback`` called (on the event loop) soon after events are
        committed: at once for this process's own writes; for other processes'
        within ~20 ms (PostgreSQL: LISTEN/NOTIFY; SQLite: its WAL header, looked at
        while anyone watches). It may also be called when nothing new was
        committed: the caller reads the head (``feed_state(None).seq``). Returns
        the function that ends this watch."""

    async def list_changed_articles(
        self, *, since: datetime, after: ListCursor | None = None, limit: int = 50
    ) -> list[Article]:
        """Articles changed at or after ``since`` (``updated_at``), tombstones
        included and scheduled ones not, oldest change first by (updated_at, id),
        strictly after ``after``: what a partner resyncs from."""

    # -- attempts and verifications (status pages) ------------------------------

    async def list_attempts(
        self,
        subscription_id: str,
        *,
        since: datetime | None = None,
        limit: int = 20,
        delivery_id: int | None = None,
    ) -> list[DeliveryAttempt]:
        """The subscription's recorded attempts, newest first, made at or after
        ``since`` when given; only those of ``delivery_id`` when given."""

    async def get_attempt(self, attempt_id: int) -> DeliveryAttempt | None:
        """One recorded attempt (with its event id and type), if it is still kept."""

    async def count_attempts(
        self, *, since: datetime, bucket_seconds: int = 60
    ) -> list[AttemptCount]:
        """Attempts of every subscription made at or after ``since``, counted per
        (``bucket_seconds``-wide bucket of ``attempted_at``, outcome, succeeded),
        oldest bucket first. Buckets start at multiples of ``bucket_seconds`` since
        the Unix epoch; empty buckets are left out."""

    async def next_attempt_at(self, subscription_id: str) -> datetime | None:
        """When the subscription's next attempt is due: the earliest
        ``next_attempt_at`` of its deliveries not yet ended, if any."""

    async def prune_attempts(self, *, before: datetime, limit: int = 10_000) -> int:
        """Delete up to ``limit`` attempts made before ``before``; returns how many.
        Up to ``limit`` verifications older than ``before`` of pairs that are no
        subscription go too (not counted)."""

    async def record_verification(self, verification: Verification) -> None:
        """Keep the outcome of a verification of intent, replacing the pair's last."""

    async def get_verification(self, callback: str, topic_url: str) -> Verification | None:
        """The last verification recorded for that (callback, topic URL), if any."""

    # -- subscriptions and deliveries ------------------------------------------

    async def create_subscription(
        self,
        *,
        id: str,
        kind: SubscriptionKind,
        url: str,
        topics: Sequence[str],
        events: Sequence[str],
        secret: str | None,
        owner: str | None = None,
        status: SubscriptionStatus = "active",
        description: str = "",
        lease_expires_at: datetime | None = None,
        topic_url: str | None = None,
        now: datetime | None = None,
    ) -> Subscription:
        """Store a new subscription (``topic_url``: the WebSub ``hub.topic``)."""

    async def get_subscription(self, subscription_id: str) -> Subscription:
        """One subscription; ``SubscriptionNotFound`` otherwise."""

    async def find_websub_subscription(self, callback: str, topic_url: str) -> Subscription | None:
        """The WebSub subscription of this (callback, topic URL) pair, if any."""

    async def get_subscriptions(self, subscription_ids: Sequence[str]) -> dict[str, Subscription]:
        """The ones that exist, by id (missing ids are left out)."""

    async def list_subscriptions(
        self,
        *,
        owner: str | None = None,
        kind: SubscriptionKind | None = None,
        limit: int = 100,
        after_id: str | None = None,
    ) -> list[Subscription]:
        """Subscriptions ordered by id (ids sort by creation), strictly after
        ``after_id``; ``owner`` / ``kind`` filter when given."""

    async def list_active_subscriptions(
        self, *, now: datetime | None = None, kind: SubscriptionKind | None = None
    ) -> list[Subscription]:
        """Every subscription that should receive new events: status ``active``
        and, when it has a lease, a lease that has not expired at ``now``; only
        those of ``kind`` when given."""

    async def count_websub_subscriptions(
        self, *, host: str | None = None, topic_url: str | None = None
    ) -> int:
        """How many WebSub subscriptions have their callback on ``host`` and/or are of
        the feed ``topic_url`` (an index look-up, not a scan)."""

    async def update_subscription(
        self, subscription_id: str, changes: Mapping[str, Any], *, now: datetime | None = None
    ) -> Subscription:
        """Set the given fields and ``updated_at``. Keys are among
        ``SUBSCRIPTION_MUTABLE`` (records.py); others raise ``ValueError``.
        ``SubscriptionNotFound`` when it does not exist."""

    async def delete_subscription(self, subscription_id: str) -> None:
        """Remove it and its deliveries; ``SubscriptionNotFound`` when missing."""

    async def create_deliveries(
        self, event_seq: int, subscription_ids: Sequence[str], *, now: datetime | None = None
    ) -> int:
        """One pending delivery per subscription for the event, due now.
        Idempotent: existing (event, subscription) pairs are left alone.
        Returns how many were created."""

    async def fan_out(
        self,
        pairs: Sequence[tuple[int, str]],
        *,
        cursor: str,
        up_to: int,
        now: datetime | None = None,
    ) -> int:
        """In one transaction: a pending delivery, due ``now``, for each (event seq,
        subscription id) pair with none yet, and the cursor on to ``up_to`` (never
        back). Returns how many were made."""

    async def fan_out_events(
        self,
        *,
        kind: SubscriptionKind,
        cursor: str,
        after: int,
        up_to: int,
        after_subscription: str = "",
        limit: int,
        now: datetime | None = None,
    ) -> FanOutStep:
        """One set-based step of a fan-out, in one transaction: a pending delivery,
        due ``now``, for each event ``after < seq <= up_to`` and each of the next
        ``limit`` active subscriptions (lease unexpired at ``now``) of ``kind`` by id
        after ``after_subscription`` that wants it (``webhooks.matches``), unless the
        pair has one. The last step (fewer than ``limit`` left) moves the cursor too."""

    async def get_cursor(self, name: str) -> int:
        """The named fan-out cursor: the last event seq fanned out (0 at first)."""

    async def get_events(self, seqs: Sequence[int]) -> dict[int, Event]:
        """The events with those seqs, by seq."""

    async def get_event_ids(self, seqs: Sequence[int]) -> dict[int, str]:
        """The ids (``Event.id``, the ``webhook-id``) of the events with those seqs, by
        seq: what a delivery listing shows, without the snapshots."""

    async def get_delivery(self, delivery_id: int) -> Delivery:
        """One delivery; ``DeliveryNotFound`` otherwise."""

    async def list_deliveries(
        self,
        subscription_id: str,
        *,
        status: DeliveryStatus | None = None,
        limit: int = 50,
        before_id: int | None = None,
        event_type: EventType | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[Delivery]:
        """A subscription's deliveries, newest (highest id) first, strictly
        below ``before_id``; ``status``, the event's type, and ``created_at`` at or
        after ``since`` / before ``until`` filter when given."""

    async def list_failing_subscriptions(self, *, limit: int = 20) -> list[Subscription]:
        """Subscriptions with a ``failing_since``, longest failing first."""

    async def complete_deliveries(
        self,
        outcomes: Sequence[DeliveryOutcome],
        *,
        worker: str,
        disable_after: timedelta,
        now: datetime | None = None,
    ) -> list[str]:
        """Record attempts in one transaction. For each outcome: ``attempts``
        +1, the new status, ``next_attempt_at`` (when given), the last status
        code / error / response body (as given) / latency, ``delivered_at``
        when delivered, and the lease cleared. The subscription: on success
        ``last_success_at = now`` and ``failing_since`` cleared; on failure
        ``failing_since`` set if unset. A webhook subscription whose
        ``failing_since`` is at or before ``now - disable_after`` becomes
        ``disabled``. Each outcome is also recorded as a ``DeliveryAttempt``
        (``attempted_at = now``). Returns the ids of subscriptions disabled
        by this call.
        Only a delivery still under the attempt's claim (``worker``'s, with the
        outcome's ``claimed_until``) takes its status, due and delivered times and
        lease end: one retried, claimed again, or taken over meanwhile keeps them
        (the attempt is counted and logged), so a retry during a send is not lost.
        Outcomes for deliveries that no longer exist are ignored."""

    async def retry_delivery(self, delivery_id: int, *, now: datetime | None = None) -> Delivery:
        """Make one delivery due now (status ``pending``, lease cleared), whatever
        its status; ``DeliveryNotFound`` otherwise."""

    async def recover_deliveries(
        self, subscription_id: str, *, since: datetime, now: datetime | None = None
    ) -> int:
        """Make every ``failed`` or ``dead`` delivery of the subscription created
        at or after ``since`` due now (status ``pending``); returns how many."""

    async def delivery_stats(self, *, now: datetime | None = None) -> DeliveryStats:
        """Queue depth over all subscriptions."""

    # -- live processes ---------------------------------------------------------

    async def register_worker(
        self, worker_id: str, *, hostname: str, pid: int, kind: str, now: datetime | None = None
    ) -> None:
        """Record a process that claims deliveries as alive (again), at ``now`` or (by
        default) the database's time where it has a clock of its own."""

    async def heartbeat_worker(self, worker_id: str, *, now: datetime | None = None) -> bool:
        """Record that the process is still alive; False when its row is gone (another
        process took it for dead and released its claims): register again."""

    async def unregister_worker(self, worker_id: str) -> None:
        """Forget a process that is stopping (its claims were handed back)."""

    async def release_workers(
        self,
        *,
        stale_after: timedelta,
        keep: str,
        dead: Sequence[str] = (),
        now: datetime | None = None,
    ) -> dict[str, int]:
        """Take as dead every process silent for ``stale_after`` (by the database's
        clock where it has one, else this process's; ``now``: judged as of then) or
        named in ``dead``, but never ``keep`` (the caller): release the deliveries they
        hold so that they are claimable at once, and forget them. Returns {worker id:
        deliveries released}."""

    async def list_workers(self, *, now: datetime | None = None) -> list[Worker]:
        """Every registered process, oldest first, with the deliveries it holds."""

    async def claim_deliveries(
        self,
        *,
        worker: str,
        limit: int,
        lease: timedelta,
        now: datetime | None = None,
        kind: SubscriptionKind | None = None,
        per_owner: int | None = None,
        owner_rooms: Mapping[str, int] | None = None,
    ) -> list[Delivery]:
        """Lease up to ``limit`` due deliveries (pending or failed, due, and not
        under another live lease) to ``worker`` until ``now + lease``. Two
        claimers never get the same delivery while its lease holds.

        Shared out between owners (``Subscription.owner_key``): at most
        ``owner_rooms[key]`` (default ``per_owner``; default: no cap) of one owner, the
        first of each owner before the second of any, and within an owner first
        attempts ahead of retries, then the longest due; drawn from the
        ``claim_scan(limit)`` longest-due deliveries whose owner has room, so that a
        claim's cost does not grow with the backlog. ``kind``: only deliveries of that
        kind of subscription (else webhooks', then WebSub's)."""

    async def release_delivery(self, delivery_id: int, *, worker: str) -> None:
        """Give a claimed delivery back before its lease runs out."""

    async def defer_deliveries(
        self, delivery_ids: Sequence[int], *, worker: str, until: datetime
    ) -> None:
        """Give claimed deliveries back, due again at ``until``, without counting
        an attempt (the dispatcher's backlog for one host is full)."""
