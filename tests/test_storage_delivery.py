"""Push delivery storage verbs: the same contract on SQLite and PostgreSQL.

Subscriptions (listing, updates, deletion), fan-out with its cursor, the
delivery queue (listing, completing batches, retries, recovery, stats) and the
webhook failure window.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest
from test_storage_contract import T0, draft

from storage import (
    DeliveryNotFound,
    Storage,
    SubscriptionNotFound,
    open_storage,
)
from storage.records import DeliveryOutcome, DeliveryStats, FanOutStep
from syndicate.delivery import webhooks

LEASE = timedelta(seconds=30)
WINDOW = timedelta(days=5)


async def subscribe(store: Storage, sub_id: str, **overrides: Any) -> None:
    fields: dict[str, Any] = {
        "id": sub_id,
        "kind": "webhook",
        "url": f"https://example.org/hook/{sub_id}",
        "topics": ["*"],
        "events": ["article.published"],
        "secret": "whsec_x",
        "owner": "acme",
        "now": T0,
    }
    fields.update(overrides)
    await store.create_subscription(**fields)


async def publish(store: Storage, count: int, *, prefix: str = "a") -> list[int]:
    """``count`` new articles; the seqs of their events."""
    for n in range(count):
        await store.put_article(draft(f"{prefix}{n}"), now=T0)
    events = await store.list_events(limit=10_000)
    return [e.seq for e in events[-count:]]


async def queue(store: Storage, subs: list[str], events: int = 1, *, now: datetime = T0) -> None:
    """Subscriptions ``subs`` and one pending delivery per (event, subscription)."""
    for sub_id in subs:
        await subscribe(store, sub_id)
    seqs = await publish(store, events)
    pairs = [(seq, sid) for seq in seqs for sid in subs]
    assert await store.fan_out(pairs, cursor="main", up_to=seqs[-1], now=now) == len(pairs)


def outcome(delivery_id: int, sub_id: str, status: str, **fields: Any) -> DeliveryOutcome:
    succeeded = fields.pop("succeeded", status == "delivered")
    return DeliveryOutcome(
        delivery_id=delivery_id,
        subscription_id=sub_id,
        status=status,  # type: ignore[arg-type]
        succeeded=succeeded,
        **fields,
    )


async def settle(
    store: Storage,
    outcomes: list[DeliveryOutcome],
    *,
    now: datetime,
    worker: str = "w",
    disable_after: timedelta = WINDOW,
) -> list[str]:
    """Record ``outcomes`` as the dispatcher does: on deliveries ``worker`` has claimed
    (an outcome only moves a delivery its writer holds). Claims whatever is unclaimed
    (whenever due), records, then hands the rest back as they were."""
    anytime = T0 + timedelta(days=3650)
    held = await store.claim_deliveries(worker=worker, limit=100_000, lease=LEASE, now=anytime)
    disabled = await store.complete_deliveries(
        outcomes, worker=worker, disable_after=disable_after, now=now
    )
    recorded = {o.delivery_id for o in outcomes}
    rest: dict[datetime, list[int]] = {}
    for d in held:
        if d.id not in recorded:
            rest.setdefault(d.next_attempt_at, []).append(d.id)
    for due, ids in rest.items():
        await store.defer_deliveries(ids, worker=worker, until=due)
    return disabled


async def fail(store: Storage, sub_id: str, *, now: datetime) -> list[str]:
    """Record one failed attempt on the subscription's newest delivery."""
    newest = (await store.list_deliveries(sub_id, limit=1))[0]
    retry_at = now + timedelta(minutes=5)
    return await settle(
        store,
        [outcome(newest.id, sub_id, "failed", status_code=500, next_attempt_at=retry_at)],
        now=now,
    )


# -- subscriptions -------------------------------------------------------------


async def test_topic_url_and_get_subscriptions(store: Storage) -> None:
    await subscribe(store, "s1")
    await subscribe(
        store,
        "s2",
        kind="websub",
        secret=None,
        owner=None,
        topic_url="https://feeds.example.org/feeds/liver-health.atom",
    )
    websub = await store.get_subscription("s2")
    assert websub.topic_url == "https://feeds.example.org/feeds/liver-health.atom"
    assert (await store.get_subscription("s1")).topic_url is None
    found = await store.get_subscriptions(["s2", "s1", "missing", "s1"])
    assert set(found) == {"s1", "s2"}
    assert found["s2"] == websub
    assert await store.get_subscriptions([]) == {}


async def test_list_subscriptions_filters_and_pages(store: Storage) -> None:
    await subscribe(store, "s1", owner="acme")
    await subscribe(store, "s2", owner="other")
    await subscribe(store, "s3", owner="acme", kind="websub")
    await subscribe(store, "s4", owner=None, kind="websub")
    await subscribe(store, "s5", owner="acme")

    async def ids(**kwargs: Any) -> list[str]:
        return [s.id for s in await store.list_subscriptions(**kwargs)]

    assert await ids() == ["s1", "s2", "s3", "s4", "s5"]
    assert await ids(owner="acme") == ["s1", "s3", "s5"]
    assert await ids(kind="websub") == ["s3", "s4"]
    assert await ids(owner="acme", kind="webhook") == ["s1", "s5"]
    assert await ids(owner="nobody") == []
    assert await ids(limit=2) == ["s1", "s2"]
    assert await ids(limit=2, after_id="s2") == ["s3", "s4"]
    assert await ids(owner="acme", limit=1, after_id="s1") == ["s3"]
    assert await ids(after_id="s5") == []


async def test_list_active_subscriptions(store: Storage) -> None:
    now = T0 + timedelta(days=1)
    await subscribe(store, "no-lease")
    await subscribe(store, "lease-ahead", kind="websub", lease_expires_at=now + timedelta(hours=1))
    await subscribe(store, "lease-over", kind="websub", lease_expires_at=now - timedelta(hours=1))
    await subscribe(store, "lease-ends-now", kind="websub", lease_expires_at=now)
    await subscribe(store, "pending", kind="websub", status="pending")
    await subscribe(store, "disabled", status="disabled")
    active = await store.list_active_subscriptions(now=now)
    assert [s.id for s in active] == ["lease-ahead", "no-lease"]
    later = await store.list_active_subscriptions(now=now + timedelta(hours=2))
    assert [s.id for s in later] == ["no-lease"]


async def test_update_subscription(store: Storage) -> None:
    await subscribe(store, "s1")
    later = T0 + timedelta(hours=1)
    expires = T0 + timedelta(days=1)
    changes = {
        "url": "https://example.org/new",
        "topics": ("diet", "liver-health"),
        "events": ["article.published", "article.deleted"],
        "description": "Partner feed",
        "secret": "whsec_new",
        "previous_secret": "whsec_x",
        "previous_secret_expires_at": expires,
        "topic_url": "https://feeds.example.org/feeds/diet.rss",
    }
    updated = await store.update_subscription("s1", changes, now=later)
    assert updated == await store.get_subscription("s1")
    assert updated.url == "https://example.org/new"
    assert updated.topics == ("diet", "liver-health")
    assert updated.events == ("article.published", "article.deleted")
    assert (updated.description, updated.secret) == ("Partner feed", "whsec_new")
    assert updated.previous_secret == "whsec_x"
    assert updated.previous_secret_expires_at == expires
    assert updated.topic_url == "https://feeds.example.org/feeds/diet.rss"
    assert (updated.created_at, updated.updated_at) == (T0, later)
    assert (updated.kind, updated.owner) == ("webhook", "acme"), "untouched fields stay"

    cleared = await store.update_subscription(
        "s1",
        {
            "previous_secret": None,
            "previous_secret_expires_at": None,
            "status": "disabled",
            "failing_since": later,
            "last_success_at": T0,
            "lease_expires_at": expires,
        },
        now=later + timedelta(minutes=1),
    )
    assert cleared.previous_secret is None and cleared.previous_secret_expires_at is None
    assert (cleared.status, cleared.failing_since, cleared.last_success_at) == (
        "disabled",
        later,
        T0,
    )
    assert cleared.lease_expires_at == expires and cleared.secret == "whsec_new"

    touched = await store.update_subscription("s1", {}, now=later + timedelta(hours=1))
    assert touched.updated_at == later + timedelta(hours=1)
    assert dataclasses.replace(touched, updated_at=cleared.updated_at) == cleared

    with pytest.raises(SubscriptionNotFound):
        await store.update_subscription("nope", {"description": "x"}, now=later)


@pytest.mark.parametrize(
    "changes",
    [
        {"id": "other"},
        {"kind": "websub", "description": "x"},
        {"owner": "mallory"},
        {"created_at": T0},
        {"description = 'x', status": "disabled"},
        {"topics": "liver-health"},
        {"failing_since": "2026-11-20T08:00:00Z"},
        {"lease_expires_at": datetime(2026, 11, 20, 8, 0)},
    ],
)
async def test_update_subscription_rejects_bad_changes(
    store: Storage, changes: dict[str, Any]
) -> None:
    await subscribe(store, "s1")
    before = await store.get_subscription("s1")
    with pytest.raises(ValueError):
        await store.update_subscription("s1", changes, now=T0 + timedelta(hours=1))
    with pytest.raises(ValueError):
        await store.update_subscription("missing", changes)
    assert await store.get_subscription("s1") == before


async def test_delete_subscription_takes_its_deliveries(store: Storage) -> None:
    await queue(store, ["s1", "s2"], events=2)
    gone = [d.id for d in await store.list_deliveries("s1")]
    assert len(gone) == 2
    await store.delete_subscription("s1")
    with pytest.raises(SubscriptionNotFound):
        await store.get_subscription("s1")
    with pytest.raises(SubscriptionNotFound):
        await store.delete_subscription("s1")
    for delivery_id in gone:
        with pytest.raises(DeliveryNotFound):
            await store.get_delivery(delivery_id)
    assert await store.list_deliveries("s1") == []
    assert len(await store.list_deliveries("s2")) == 2
    assert (await store.delivery_stats(now=T0)).pending == 2


# -- fan-out -------------------------------------------------------------------


async def test_fan_out_is_idempotent_and_the_cursor_only_moves_forward(store: Storage) -> None:
    await subscribe(store, "s1")
    await subscribe(store, "s2")
    first, second = await publish(store, 2)
    assert await store.get_cursor("main") == 0

    pairs = [(first, "s1"), (first, "s2"), (second, "s1")]
    assert await store.fan_out(pairs, cursor="main", up_to=second, now=T0) == 3
    assert await store.get_cursor("main") == second
    assert await store.get_cursor("other") == 0

    later = T0 + timedelta(minutes=1)
    again = [*pairs, (second, "s2"), (second, "s2")]
    assert await store.fan_out(again, cursor="main", up_to=first, now=later) == 1
    assert await store.get_cursor("main") == second, "never backward"
    assert await store.fan_out([], cursor="main", up_to=second + 10, now=later) == 0
    assert await store.get_cursor("main") == second + 10
    assert await store.fan_out([], cursor="other", up_to=first, now=later) == 0
    assert await store.get_cursor("other") == first

    s1 = await store.list_deliveries("s1")
    assert [d.event_seq for d in s1] == [second, first]
    for delivery in s1:
        assert (delivery.status, delivery.attempts) == ("pending", 0)
        assert delivery.next_attempt_at == delivery.created_at == T0
        assert delivery.claimed_by is None and delivery.delivered_at is None
    (late,) = await store.list_deliveries("s2", limit=1)
    assert (late.event_seq, late.created_at, late.next_attempt_at) == (second, later, later)


async def test_fan_out_skips_subscriptions_deleted_meanwhile(store: Storage) -> None:
    await subscribe(store, "s1")
    (seq,) = await publish(store, 1)
    pairs = [(seq, "s1"), (seq, "deleted-meanwhile")]
    assert await store.fan_out(pairs, cursor="main", up_to=seq, now=T0) == 1
    assert await store.get_cursor("main") == seq


async def test_fan_out_two_thousand_pairs_in_one_call(store: Storage) -> None:
    subs = [f"s{n:03d}" for n in range(100)]
    for sub_id in subs:
        await subscribe(store, sub_id)
    seqs = await publish(store, 20)
    pairs = [(seq, sid) for seq in seqs for sid in subs]
    assert len(pairs) == 2000
    assert await store.fan_out(pairs, cursor="main", up_to=seqs[-1], now=T0) == 2000
    assert await store.fan_out(pairs, cursor="main", up_to=seqs[-1], now=T0) == 0
    stats = await store.delivery_stats(now=T0)
    assert (stats.pending, stats.due) == (2000, 2000)
    assert len(await store.list_deliveries("s042", limit=100)) == 20


async def test_fan_out_events_matches_in_the_database_in_steps(store: Storage) -> None:
    """The set-based fan-out makes exactly the pairs ``webhooks.matches`` wants (type,
    topics, "*", no events before the subscription), of active subscriptions of the
    kind only, over steps of ``limit`` subscriptions; the cursor moves with the last."""
    hour = timedelta(hours=1)
    await subscribe(store, "all", topics=["*"], events=[])
    await subscribe(store, "liver", topics=["liver-health"])
    await subscribe(store, "heart", topics=["heart"])
    await subscribe(store, "gone-only", events=["article.deleted"])
    await subscribe(store, "late", now=T0 + hour)
    await subscribe(store, "off", status="disabled")
    await subscribe(store, "lapsed", lease_expires_at=T0 + hour)
    await subscribe(store, "leased", lease_expires_at=T0 + 3 * hour)
    await subscribe(store, "ws", kind="websub", topics=["liver-health"], events=[])
    await store.put_article(draft("a1"), now=T0)
    await store.put_article(draft("a2", topics=("heart", "liver-health")), now=T0 + 2 * hour)
    await store.delete_article("a1", now=T0 + 2 * hour)
    events = await store.list_events()
    assert [e.type for e in events] == ["article.published", "article.published", "article.deleted"]
    now = T0 + 2 * hour

    steps: list[str | None] = []
    after = ""
    while True:
        step = await store.fan_out_events(
            kind="webhook", cursor="main", after=0, up_to=events[-1].seq,
            after_subscription=after, limit=2, now=now,
        )  # fmt: skip
        steps.append(step.last_subscription)
        assert await store.get_cursor("main") == (events[-1].seq if step.done else 0)
        if step.done:
            break
        assert step.last_subscription is not None
        after = step.last_subscription
    # Active webhooks by id: all, gone-only, heart, late, leased, liver (lapsed, off: no);
    # the step after a full one finds none left, and ends it.
    assert steps == ["gone-only", "late", "liver", None]

    made = {
        (d.event_seq, sub)
        for sub in ("all", "liver", "heart", "gone-only", "late", "off", "lapsed", "leased", "ws")
        for d in await store.list_deliveries(sub)
    }
    first, second, deleted = (e.seq for e in events)
    assert made == {
        (first, "all"), (second, "all"), (deleted, "all"),
        (first, "liver"), (second, "liver"),
        (second, "heart"),
        (deleted, "gone-only"),
        (second, "late"),
        (first, "leased"), (second, "leased"),
    }  # fmt: skip
    active = await store.list_active_subscriptions(now=now, kind="webhook")
    wanted = {(e.seq, s.id) for e in events for s in active if webhooks.matches(s, e)}
    assert made == wanted, "the same rule as webhooks.matches"
    for sub in ("all", "late"):
        for delivery in await store.list_deliveries(sub):
            assert (delivery.status, delivery.next_attempt_at) == ("pending", now)

    # Again: nothing twice; the WebSub kind has a cursor and subscriptions of its own.
    again = await store.fan_out_events(
        kind="webhook", cursor="main", after=0, up_to=deleted, limit=100, now=now
    )
    assert (again.created, again.done) == (0, True)
    websub = await store.fan_out_events(
        kind="websub", cursor="ws", after=first, up_to=deleted, limit=100, now=now
    )
    assert (websub.created, websub.last_subscription, websub.done) == (2, "ws", True)
    assert await store.get_cursor("ws") == deleted
    assert {d.event_seq for d in await store.list_deliveries("ws")} == {second, deleted}
    nobody = await store.fan_out_events(
        kind="websub", cursor="ws", after=0, up_to=deleted, after_subscription="ws", limit=5
    )
    assert nobody == FanOutStep(0, None, True)


async def test_get_events_by_seq(store: Storage) -> None:
    seqs = await publish(store, 3)
    everything = {e.seq: e for e in await store.list_events()}
    found = await store.get_events([seqs[2], seqs[0], 999_999])
    assert found == {seqs[0]: everything[seqs[0]], seqs[2]: everything[seqs[2]]}
    assert found[seqs[0]].data["id"] == "a0" and found[seqs[0]].created_at == T0
    assert await store.get_events([]) == {}


# -- the delivery queue --------------------------------------------------------


async def test_list_deliveries_order_filter_and_cursor(store: Storage) -> None:
    await queue(store, ["s1", "s2"], events=5)
    listed = await store.list_deliveries("s1")
    ids = [d.id for d in listed]
    assert len(ids) == 5 and ids == sorted(ids, reverse=True), "newest id first"
    assert {d.subscription_id for d in listed} == {"s1"}

    assert [d.id for d in await store.list_deliveries("s1", limit=2)] == ids[:2]
    page = await store.list_deliveries("s1", limit=2, before_id=ids[1])
    assert [d.id for d in page] == ids[2:4]
    assert await store.list_deliveries("s1", before_id=ids[-1]) == []

    done = T0 + timedelta(seconds=5)
    await settle(
        store,
        [
            outcome(ids[0], "s1", "delivered"),
            outcome(ids[2], "s1", "dead", succeeded=False),
            outcome(ids[3], "s1", "delivered"),
        ],
        now=done,
    )
    delivered = await store.list_deliveries("s1", status="delivered")
    assert [d.id for d in delivered] == [ids[0], ids[3]]
    assert [d.id for d in await store.list_deliveries("s1", status="dead")] == [ids[2]]
    assert [d.id for d in await store.list_deliveries("s1", status="pending")] == [ids[1], ids[4]]
    assert await store.list_deliveries("s1", status="failed") == []
    page = await store.list_deliveries("s1", status="delivered", before_id=ids[0])
    assert [d.id for d in page] == [ids[3]]
    assert await store.list_deliveries("nope") == []


async def test_complete_deliveries_mixed_batch(store: Storage) -> None:
    await queue(store, ["good", "bad"], events=3)
    claimed = await store.claim_deliveries(worker="w1", limit=10, lease=LEASE, now=T0)
    assert len(claimed) == 6
    good = [d.id for d in await store.list_deliveries("good")]
    bad = [d.id for d in await store.list_deliveries("bad")]
    now = T0 + timedelta(seconds=10)
    retry_at = now + timedelta(minutes=5)
    outcomes = [
        outcome(good[0], "good", "delivered", status_code=204, latency_ms=12.5, response_body="ok"),
        outcome(
            good[1],
            "good",
            "failed",
            status_code=503,
            error="unavailable",
            next_attempt_at=retry_at,
            succeeded=False,
        ),
        outcome(
            bad[0],
            "bad",
            "failed",
            status_code=500,
            error="boom",
            response_body="oops",
            next_attempt_at=retry_at,
            latency_ms=40.0,
        ),
        outcome(bad[1], "bad", "dead", error="connect timeout"),
        outcome(999_999, "good", "delivered"),
    ]
    disabled = await store.complete_deliveries(outcomes, worker="w1", disable_after=WINDOW, now=now)
    assert disabled == []

    delivered = await store.get_delivery(good[0])
    assert (delivered.status, delivered.attempts, delivered.delivered_at) == ("delivered", 1, now)
    assert (delivered.last_status_code, delivered.last_latency_ms) == (204, 12.5)
    assert (delivered.last_response_body, delivered.last_error) == ("ok", None)
    assert delivered.next_attempt_at == T0, "left alone when the outcome gives none"
    assert delivered.claimed_by is None and delivered.claimed_until is None

    failed = await store.get_delivery(bad[0])
    assert (failed.status, failed.attempts, failed.next_attempt_at) == ("failed", 1, retry_at)
    assert (failed.last_status_code, failed.last_error) == (500, "boom")
    assert (failed.last_response_body, failed.last_latency_ms) == ("oops", 40.0)
    assert failed.delivered_at is None and failed.claimed_by is None

    dead = await store.get_delivery(bad[1])
    assert (dead.status, dead.attempts, dead.last_error) == ("dead", 1, "connect timeout")
    assert dead.last_status_code is None and dead.claimed_until is None

    untouched = await store.get_delivery(bad[2])
    assert (untouched.status, untouched.attempts, untouched.claimed_by) == ("pending", 0, "w1")

    good_sub = await store.get_subscription("good")
    assert (good_sub.last_success_at, good_sub.failing_since) == (now, None)
    bad_sub = await store.get_subscription("bad")
    assert (bad_sub.last_success_at, bad_sub.failing_since) == (None, now)
    assert bad_sub.updated_at == T0 and bad_sub.status == "active"

    # Later: a retry succeeds; the last_* fields are overwritten, None included.
    later = now + timedelta(minutes=10)
    again = await store.claim_deliveries(worker="w1", limit=10, lease=LEASE, now=later)
    assert {bad[0], bad[2]} <= {d.id for d in again}
    await store.complete_deliveries(
        [
            outcome(bad[0], "bad", "delivered", status_code=200),
            outcome(bad[2], "bad", "failed", next_attempt_at=later, succeeded=False),
        ],
        worker="w1",
        disable_after=WINDOW,
        now=later,
    )
    redelivered = await store.get_delivery(bad[0])
    assert (redelivered.status, redelivered.attempts) == ("delivered", 2)
    assert (redelivered.last_error, redelivered.last_response_body) == (None, None)
    assert (redelivered.last_latency_ms, redelivered.delivered_at) == (None, later)
    bad_sub = await store.get_subscription("bad")
    assert (bad_sub.last_success_at, bad_sub.failing_since) == (later, None), "any success wins"

    assert await store.complete_deliveries([], worker="w", disable_after=WINDOW, now=later) == []
    assert (
        await store.complete_deliveries(
            [outcome(123_456, "gone", "failed")], worker="w", disable_after=WINDOW, now=later
        )
        == []
    )


async def test_failure_window_keeps_its_start(store: Storage) -> None:
    await queue(store, ["s1"])
    await fail(store, "s1", now=T0)
    await fail(store, "s1", now=T0 + timedelta(hours=1))
    assert (await store.get_subscription("s1")).failing_since == T0


async def test_webhooks_failing_past_the_window_are_disabled(store: Storage) -> None:
    await queue(store, ["hook", "hook2", "paused"])
    await subscribe(store, "websub", kind="websub", secret=None)
    (seq,) = await publish(store, 1, prefix="w")
    await store.fan_out([(seq, "websub")], cursor="main", up_to=seq, now=T0)

    for sub_id in ("hook", "hook2", "paused", "websub"):
        assert await fail(store, sub_id, now=T0) == []
    await store.update_subscription("paused", {"status": "pending"}, now=T0)

    almost = T0 + WINDOW - timedelta(seconds=1)
    assert await fail(store, "hook", now=almost) == []
    assert (await store.get_subscription("hook")).status == "active"

    at_window = T0 + WINDOW
    deliveries = {
        sid: (await store.list_deliveries(sid, limit=1))[0].id
        for sid in ("hook", "hook2", "paused", "websub")
    }
    batch = [
        outcome(deliveries[sid], sid, "failed", next_attempt_at=at_window, succeeded=False)
        for sid in ("hook", "hook2", "paused", "websub")
    ]
    disabled = await store.complete_deliveries(
        batch, worker="w", disable_after=WINDOW, now=at_window
    )
    assert sorted(disabled) == ["hook", "hook2"]
    for sid in ("hook", "hook2"):
        sub = await store.get_subscription(sid)
        assert (sub.status, sub.updated_at, sub.failing_since) == ("disabled", at_window, T0)
    assert (await store.get_subscription("websub")).status == "active", "websub is never disabled"
    assert (await store.get_subscription("paused")).status == "pending", "only active ones"

    again = await store.complete_deliveries(
        batch[:1], worker="w", disable_after=WINDOW, now=at_window + timedelta(hours=1)
    )
    assert again == [], "already disabled: not reported twice"


async def test_a_success_in_the_batch_prevents_disabling(store: Storage) -> None:
    await queue(store, ["s1"], events=2)
    await fail(store, "s1", now=T0)
    late = T0 + WINDOW * 2
    newer, older = (d.id for d in await store.list_deliveries("s1"))
    disabled = await store.complete_deliveries(
        [outcome(newer, "s1", "failed", succeeded=False), outcome(older, "s1", "delivered")],
        worker="w",
        disable_after=WINDOW,
        now=late,
    )
    assert disabled == []
    sub = await store.get_subscription("s1")
    assert (sub.status, sub.failing_since, sub.last_success_at) == ("active", None, late)


async def test_a_failed_delivery_is_claimable_again_when_due(store: Storage) -> None:
    await queue(store, ["s1"])
    (claimed,) = await store.claim_deliveries(worker="w", limit=5, lease=LEASE, now=T0)
    retry_at = T0 + timedelta(minutes=5)
    await store.complete_deliveries(
        [outcome(claimed.id, "s1", "failed", status_code=502, next_attempt_at=retry_at)],
        worker="w",
        disable_after=WINDOW,
        now=T0 + timedelta(seconds=1),
    )
    after_lease = T0 + LEASE + timedelta(seconds=1)
    assert await store.claim_deliveries(worker="w", limit=5, lease=LEASE, now=after_lease) == []
    just_before = retry_at - timedelta(microseconds=1)
    assert await store.claim_deliveries(worker="w", limit=5, lease=LEASE, now=just_before) == []
    (again,) = await store.claim_deliveries(worker="w2", limit=5, lease=LEASE, now=retry_at)
    assert (again.id, again.status, again.attempts, again.claimed_by) == (
        claimed.id,
        "failed",
        1,
        "w2",
    )


async def test_retry_delivery(store: Storage) -> None:
    await queue(store, ["s1"])
    (delivery,) = await store.claim_deliveries(worker="w", limit=5, lease=LEASE, now=T0)
    await store.complete_deliveries(
        [outcome(delivery.id, "s1", "dead", error="gave up")],
        worker="w",
        disable_after=WINDOW,
        now=T0,
    )
    now = T0 + timedelta(days=2)
    retried = await store.retry_delivery(delivery.id, now=now)
    assert retried == await store.get_delivery(delivery.id)
    assert (retried.status, retried.next_attempt_at, retried.attempts) == ("pending", now, 1)
    assert retried.claimed_by is None and retried.last_error == "gave up"
    (claimed,) = await store.claim_deliveries(worker="w", limit=5, lease=LEASE, now=now)
    assert claimed.id == delivery.id

    # Even a delivery under a live lease is made due (and the lease cleared).
    retried = await store.retry_delivery(delivery.id, now=now)
    assert retried.claimed_until is None and retried.claimed_by is None
    with pytest.raises(DeliveryNotFound):
        await store.retry_delivery(999_999, now=now)


async def test_an_attempt_ending_after_its_claim_was_let_go_leaves_the_status(
    store: Storage,
) -> None:
    """A retry while the delivery is being sent, or a late writer whose lease another
    worker took over: the attempt is recorded, but the delivery stays as the retry or
    the new claim left it, so the asked-for send is not lost (nor a newer outcome
    overwritten)."""
    await queue(store, ["s1", "s2"])
    first, second = await store.claim_deliveries(worker="w1", limit=5, lease=LEASE, now=T0)
    retried_at = T0 + timedelta(seconds=1)
    await store.retry_delivery(first.id, now=retried_at)
    now = T0 + timedelta(seconds=2)
    await store.complete_deliveries(
        [outcome(first.id, "s1", "delivered", status_code=200)],
        worker="w1",
        disable_after=WINDOW,
        now=now,
    )
    after = await store.get_delivery(first.id)
    assert (after.status, after.next_attempt_at, after.attempts) == ("pending", retried_at, 1)
    assert after.last_status_code == 200 and after.claimed_by is None
    assert [a.outcome for a in await store.list_attempts("s1")] == ["delivered"]
    assert (await store.get_subscription("s1")).last_success_at == now
    (again,) = await store.claim_deliveries(worker="w2", limit=5, lease=LEASE, now=now)
    assert again.id == first.id, "the retry is still due"

    # w1's lease on the second ran out and w2 took it: w1's late failure is only logged.
    later = T0 + LEASE + timedelta(seconds=1)
    (taken,) = await store.claim_deliveries(worker="w2", limit=5, lease=LEASE, now=later)
    assert taken.id == second.id
    retry_at = later + timedelta(minutes=5)
    await store.complete_deliveries(
        [outcome(second.id, "s2", "failed", status_code=503, next_attempt_at=retry_at)],
        worker="w1",
        disable_after=WINDOW,
        now=later,
    )
    kept = await store.get_delivery(second.id)
    assert (kept.status, kept.claimed_by, kept.attempts) == ("pending", "w2", 1)
    await store.complete_deliveries(
        [outcome(second.id, "s2", "delivered", status_code=204)],
        worker="w2",
        disable_after=WINDOW,
        now=later,
    )
    done = await store.get_delivery(second.id)
    assert (done.status, done.claimed_by, done.attempts) == ("delivered", None, 2)


async def test_a_stale_claims_outcome_leaves_the_same_workers_newer_claim(
    store: Storage,
) -> None:
    """One process (the usual SQLite serve): a retry during a send is claimed again by
    the same worker. The first send's outcome ends the first claim only: it is logged,
    and the newer claim's outcome is the one that counts."""
    await queue(store, ["s1"])
    (first,) = await store.claim_deliveries(worker="w", limit=5, lease=LEASE, now=T0)
    retried_at = T0 + timedelta(seconds=1)
    await store.retry_delivery(first.id, now=retried_at)
    (second,) = await store.claim_deliveries(worker="w", limit=5, lease=LEASE, now=retried_at)
    assert second.id == first.id and second.claimed_until != first.claimed_until
    late = T0 + timedelta(seconds=15)
    await store.complete_deliveries(
        [
            outcome(
                first.id,
                "s1",
                "delivered",
                status_code=200,
                claimed_until=first.claimed_until,
            )
        ],
        worker="w",
        disable_after=WINDOW,
        now=late,
    )
    kept = await store.get_delivery(first.id)
    assert (kept.status, kept.claimed_by, kept.claimed_until) == (
        "pending",
        "w",
        second.claimed_until,
    )
    assert kept.delivered_at is None, "an outcome not applied sets no delivered time"
    assert (kept.attempts, kept.last_status_code) == (1, 200)
    retry_at = late + timedelta(minutes=1)
    await store.complete_deliveries(
        [
            outcome(
                first.id,
                "s1",
                "failed",
                status_code=503,
                next_attempt_at=retry_at,
                claimed_until=second.claimed_until,
            )
        ],
        worker="w",
        disable_after=WINDOW,
        now=late,
    )
    ended = await store.get_delivery(first.id)
    assert (ended.status, ended.next_attempt_at, ended.claimed_by) == ("failed", retry_at, None)
    assert [a.outcome for a in await store.list_attempts("s1")] == ["failed", "delivered"]


async def test_recover_deliveries_since(store: Storage) -> None:
    await subscribe(store, "s1")
    await subscribe(store, "s2")
    seqs = await publish(store, 6)
    for n, seq in enumerate(seqs):
        created = T0 + timedelta(hours=n)
        await store.fan_out([(seq, "s1"), (seq, "s2")], cursor="main", up_to=seq, now=created)
    by_seq = {d.event_seq: d.id for d in await store.list_deliveries("s1")}
    statuses = ["dead", "failed", "dead", "failed", "delivered", "pending"]
    done = T0 + timedelta(days=1)
    await settle(
        store,
        [
            outcome(by_seq[seq], "s1", status, next_attempt_at=done + timedelta(days=9))
            for seq, status in zip(seqs, statuses, strict=True)
            if status != "pending"
        ],
        now=done,
    )
    s2_dead = (await store.list_deliveries("s2", limit=1))[0]
    await settle(store, [outcome(s2_dead.id, "s2", "dead")], now=done)

    now = T0 + timedelta(days=2)
    since = T0 + timedelta(hours=2)  # at the third delivery's created_at: included
    assert await store.recover_deliveries("s1", since=since, now=now) == 2
    after = {d.event_seq: d for d in await store.list_deliveries("s1")}
    for seq, status in zip(seqs, statuses, strict=True):
        delivery = after[seq]
        if seq in seqs[2:4]:
            assert (delivery.status, delivery.next_attempt_at) == ("pending", now)
            assert delivery.claimed_by is None and delivery.attempts == 1
        else:
            assert delivery.status == status, "older, delivered or pending: untouched"
    assert (await store.get_delivery(s2_dead.id)).status == "dead", "other subscriptions too"
    assert await store.recover_deliveries("s1", since=since, now=now) == 0
    assert await store.recover_deliveries("nope", since=T0, now=now) == 0


async def test_delivery_stats(store: Storage) -> None:
    assert await store.delivery_stats(now=T0) == DeliveryStats(0, 0, None)
    await subscribe(store, "s1")
    seqs = await publish(store, 4)
    for n, seq in enumerate(seqs):
        await store.fan_out([(seq, "s1")], cursor="main", up_to=seq, now=T0 + timedelta(hours=n))
    oldest, second, third, _ = [d.id for d in reversed(await store.list_deliveries("s1"))]
    now = T0 + timedelta(hours=3)
    await settle(
        store,
        [
            outcome(oldest, "s1", "delivered"),
            outcome(second, "s1", "failed", next_attempt_at=now + timedelta(hours=1)),
            outcome(third, "s1", "dead"),
        ],
        now=now,
    )
    stats = await store.delivery_stats(now=now)
    assert stats == DeliveryStats(pending=2, due=1, oldest_pending_at=T0 + timedelta(hours=1))
    assert stats.oldest_pending_at is not None and stats.oldest_pending_at.tzinfo is not None
    later = await store.delivery_stats(now=now + timedelta(hours=1))
    assert (later.pending, later.due) == (2, 2)


async def test_defer_deliveries(store: Storage) -> None:
    await queue(store, ["s1", "s2"])
    claimed = await store.claim_deliveries(worker="w", limit=5, lease=LEASE, now=T0)
    until = T0 + timedelta(minutes=2)
    ids = [d.id for d in claimed]
    await store.defer_deliveries(ids, worker="someone-else", until=until)
    assert {(await store.get_delivery(i)).claimed_by for i in ids} == {"w"}
    await store.defer_deliveries(ids, worker="w", until=until)
    for delivery_id in ids:
        delivery = await store.get_delivery(delivery_id)
        assert (delivery.attempts, delivery.next_attempt_at) == (0, until)
        assert delivery.status == "pending" and delivery.claimed_by is None
    early = until - timedelta(seconds=1)
    assert await store.claim_deliveries(worker="x", limit=5, lease=LEASE, now=early) == []
    assert len(await store.claim_deliveries(worker="x", limit=5, lease=LEASE, now=until)) == 2


async def test_concurrent_batches_on_shared_subscriptions(database_url: str) -> None:
    """Two processes completing batches that touch the same subscriptions in
    opposite orders neither deadlock nor lose an attempt."""
    first = await open_storage(database_url)
    second = await open_storage(database_url)
    try:
        subs = [f"s{n}" for n in range(8)]
        for sub_id in subs:
            await subscribe(first, sub_id)
        seqs = await publish(first, 10)
        pairs = [(seq, sid) for seq in seqs for sid in subs]
        await first.fan_out(pairs, cursor="main", up_to=seqs[-1], now=T0)
        by_sub = {sid: [d.id for d in await first.list_deliveries(sid)] for sid in subs}

        async def report(store: Storage, rounds: range, reverse: bool) -> None:
            for n in rounds:
                order = list(reversed(subs)) if reverse else subs
                batch = [
                    outcome(by_sub[sid][n], sid, "failed", succeeded=n % 3 == 0) for sid in order
                ]
                await store.complete_deliveries(
                    batch, worker="w", disable_after=WINDOW, now=T0 + timedelta(seconds=n)
                )

        await asyncio.gather(
            report(first, range(0, 10, 2), False), report(second, range(1, 10, 2), True)
        )
        for sid in subs:
            attempts = [d.attempts for d in await first.list_deliveries(sid)]
            assert attempts == [1] * 10
    finally:
        await first.close()
        await second.close()


# -- fair claims, owners and live processes -----------------------------------


async def test_subscriptions_carry_their_owner_key(store: Storage) -> None:
    await subscribe(store, "p1", owner="acme", url="https://a.example.org/x")
    await subscribe(store, "op", owner=None, url="https://Hooks.Example.org/y")
    await subscribe(
        store,
        "ws",
        kind="websub",
        owner=None,
        url="https://cb.example.net/z",
        topic_url="https://feeds.example/feeds/t.atom",
    )
    subs = await store.get_subscriptions(["p1", "op", "ws"])
    assert {k: s.owner_key for k, s in subs.items()} == {
        "p1": "partner:acme",
        "op": "host:hooks.example.org",
        "ws": "callback:cb.example.net",
    }
    moved = await store.update_subscription("op", {"url": "https://new.example.org/y"})
    assert moved.owner_key == "host:new.example.org", "an operator's webhook follows its host"
    kept = await store.update_subscription("p1", {"url": "https://b.example.org/x"})
    assert kept.owner_key == "partner:acme", "a partner's stays the partner's"
    assert await store.count_websub_subscriptions(host="cb.example.net") == 1
    assert (
        await store.count_websub_subscriptions(topic_url="https://feeds.example/feeds/t.atom") == 1
    )
    assert await store.count_websub_subscriptions(host="a.example.org") == 0


async def test_claims_are_shared_out_between_owners(store: Storage) -> None:
    """One owner's backlog does not fill a claim: the first of each owner comes
    before the second of any, an owner's room caps what it gets, and an owner with
    no room is passed over."""
    await subscribe(store, "big", owner="big")
    await subscribe(store, "small", owner="small")
    seqs = await publish(store, 6)
    await store.fan_out([(s, "big") for s in seqs], cursor="main", up_to=seqs[-1], now=T0)
    await store.fan_out([(seqs[-1], "small")], cursor="main", up_to=seqs[-1], now=T0)
    later = T0 + timedelta(seconds=1)

    claimed = await store.claim_deliveries(worker="w", limit=2, lease=LEASE, now=later)
    assert sorted(d.subscription_id for d in claimed) == ["big", "small"]

    assert (
        await store.claim_deliveries(
            worker="w", limit=10, lease=LEASE, now=later, owner_rooms={"partner:big": 0}
        )
        == []
    )
    capped = await store.claim_deliveries(worker="w", limit=10, lease=LEASE, now=later, per_owner=2)
    assert [d.subscription_id for d in capped] == ["big", "big"]
    assert [d.event_seq for d in capped] == seqs[1:3], "oldest first within an owner"


async def test_claims_put_first_attempts_ahead_of_retries_and_filter_by_kind(
    store: Storage,
) -> None:
    await queue(store, ["r1"])
    (first,) = await store.claim_deliveries(worker="w", limit=5, lease=LEASE, now=T0)
    due = T0 + timedelta(seconds=10)
    await store.complete_deliveries(
        [outcome(first.id, "r1", "failed", status_code=503, next_attempt_at=T0)],
        worker="w",
        disable_after=WINDOW,
        now=T0,
    )
    await subscribe(store, "new", owner="acme")
    await subscribe(
        store,
        "ws",
        kind="websub",
        owner=None,
        url="https://cb.example.net/z",
        lease_expires_at=due + timedelta(days=1),
        topic_url="https://feeds.example/f/t.atom",
    )
    (seq,) = await publish(store, 1, prefix="n")
    await store.fan_out([(seq, "new"), (seq, "ws")], cursor="main", up_to=seq, now=due)

    webhooks = await store.claim_deliveries(
        worker="w", limit=1, lease=LEASE, now=due, kind="webhook", per_owner=5
    )
    assert [(d.subscription_id, d.attempts) for d in webhooks] == [("new", 0)], (
        "a first attempt ahead of a retry due earlier"
    )
    websub = await store.claim_deliveries(worker="w", limit=5, lease=LEASE, now=due, kind="websub")
    assert [d.subscription_id for d in websub] == ["ws"]


async def test_a_dead_workers_claims_are_released(store: Storage) -> None:
    await queue(store, ["s1", "s2"])
    await store.register_worker("dead", hostname="h", pid=1, kind="serve", now=T0)
    await store.register_worker("live", hostname="h", pid=2, kind="worker", now=T0)
    claimed = await store.claim_deliveries(worker="dead", limit=5, lease=LEASE, now=T0)
    assert len(claimed) == 2
    later = T0 + timedelta(seconds=10)
    assert await store.heartbeat_worker("live", now=later)
    workers = {w.id: w for w in await store.list_workers(now=T0)}
    assert (workers["dead"].held, workers["live"].held) == (2, 0)

    released = await store.release_workers(stale_after=timedelta(seconds=8), now=later, keep="live")
    assert released == {"dead": 2}
    assert [w.id for w in await store.list_workers(now=later)] == ["live"]
    again = await store.claim_deliveries(worker="live", limit=5, lease=LEASE, now=later)
    assert len(again) == 2, "claimable at once, long before the lease ends"
    assert not await store.heartbeat_worker("dead", now=later), "it must register again"
    assert (
        await store.release_workers(stale_after=timedelta(0), now=later, dead=["live"], keep="live")
        == {}
    ), "never the caller"


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_large_fan_out_refreshes_the_deliveries_statistics(
    store: Storage, database_url: str
) -> None:
    """A fan-out of thousands leaves PostgreSQL's planner with fresh statistics of the
    deliveries (a claim planned on the empty table's took 1.4 s with 10,000 due)."""
    await subscribe(store, "sub_0")
    [seq] = await publish(store, 1)
    conn = await asyncpg.connect(database_url)
    try:
        # 6,000 more subscriptions like the first (setup, not under test).
        await conn.execute(
            "INSERT INTO subscriptions (id, kind, owner, url, topics, events, secret, status,"
            " description, created_at, updated_at)"
            " SELECT 'sub_' || n, kind, owner, url, topics, events, secret, status,"
            " description, created_at, updated_at"
            " FROM subscriptions, generate_series(1, 6000) AS n WHERE id = 'sub_0'"
        )
        reltuples = "SELECT reltuples FROM pg_class WHERE relname = 'deliveries'"
        assert await conn.fetchval(reltuples) < 1
        ids = [f"sub_{n}" for n in range(6001)]
        for start in range(0, len(ids), 1000):  # as FanOut writes them
            chunk = [(seq, sid) for sid in ids[start : start + 1000]]
            await store.fan_out(chunk, cursor="test", up_to=seq)
        assert await conn.fetchval(reltuples) >= 5000
    finally:
        await conn.close()


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_subscription_deleted_during_a_fan_out_step_is_passed_over(
    store: Storage, database_url: str
) -> None:
    """The step read the subscription, then its delete committed before the step did:
    the foreign key refuses that row, and the step is taken again without it rather
    than failing (as a WebSub callback answering 410 deletes its subscription)."""
    for sub_id in ("s1", "s2", "s3"):
        await subscribe(store, sub_id)
    [seq] = await publish(store, 1)
    conn = await asyncpg.connect(database_url)
    try:
        deleting = conn.transaction()
        await deleting.start()
        await conn.execute("DELETE FROM subscriptions WHERE id = 's2'")
        step = asyncio.create_task(
            store.fan_out_events(kind="webhook", cursor="main", after=0, up_to=seq, limit=10)
        )
        await asyncio.sleep(0.5)  # the step waits for the deleted row's lock
        assert not step.done()
        await deleting.commit()
        made = await asyncio.wait_for(step, 10)
    finally:
        await conn.close()
    assert (made.created, made.done) == (2, True)
    assert await store.get_cursor("main") == seq
    assert [len(await store.list_deliveries(s)) for s in ("s1", "s3")] == [1, 1]
