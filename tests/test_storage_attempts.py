"""The attempt log and the verification record (what the status pages show): the same
contract on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from test_storage_contract import T0
from test_storage_delivery import WINDOW, outcome, queue, settle, subscribe

from storage import Storage
from storage.records import Verification

CALLBACK = "https://sub.example.org/cb?token=abc"
TOPIC = "https://feeds.example.org/feeds/liver-health.atom"


async def test_every_outcome_is_recorded_as_an_attempt(store: Storage) -> None:
    await queue(store, ["s1", "s2"], events=2)
    d1, d2 = sorted(await store.list_deliveries("s1"), key=lambda d: d.id)
    (e2,) = [d for d in await store.list_deliveries("s2") if d.event_seq == d1.event_seq]
    events = await store.get_event_ids([d1.event_seq, d2.event_seq])
    at = T0 + timedelta(seconds=5)
    retry = at + timedelta(minutes=5)
    await store.complete_deliveries(
        [
            outcome(
                d1.id,
                "s1",
                "failed",
                status_code=503,
                error="HTTP 503",
                latency_ms=12.5,
                response_body="down for maintenance",
                next_attempt_at=retry,
            ),
            outcome(d2.id, "s1", "delivered", status_code=204, latency_ms=3.0),
            outcome(e2.id, "s2", "dead", error="subscription gone"),
            outcome(999_999, "s2", "delivered"),  # no such delivery: ignored
        ],
        worker="w",
        disable_after=WINDOW,
        now=at,
    )
    later = at + timedelta(minutes=5)
    await store.complete_deliveries(
        [outcome(d1.id, "s1", "delivered", status_code=200, latency_ms=7.0)],
        worker="w",
        disable_after=WINDOW,
        now=later,
    )

    newest, second, oldest = await store.list_attempts("s1")
    assert (newest.delivery_id, newest.attempted_at, newest.outcome) == (d1.id, later, "delivered")
    assert newest.succeeded and newest.status_code == 200 and newest.latency_ms == 7.0
    assert newest.event_id == events[d1.event_seq] and newest.event_id.startswith("msg_")
    assert {second.delivery_id, oldest.delivery_id} == {d1.id, d2.id}
    failed = second if second.delivery_id == d1.id else oldest
    assert (failed.subscription_id, failed.attempted_at, failed.outcome) == ("s1", at, "failed")
    assert not failed.succeeded
    assert (failed.status_code, failed.latency_ms, failed.error) == (503, 12.5, "HTTP 503")
    ok = oldest if failed is second else second
    assert ok.succeeded and ok.outcome == "delivered" and ok.event_id == events[d2.event_seq]

    (dead,) = await store.list_attempts("s2")
    assert (dead.delivery_id, dead.outcome, dead.succeeded) == (e2.id, "dead", False)
    assert (dead.status_code, dead.latency_ms, dead.error) == (None, None, "subscription gone")


async def test_list_attempts_order_since_and_limit(store: Storage) -> None:
    await queue(store, ["s1"])
    (delivery,) = await store.list_deliveries("s1")
    times = [T0 + timedelta(minutes=m) for m in range(5)]
    for n, at in enumerate(times):
        await store.complete_deliveries(
            [outcome(delivery.id, "s1", "failed", status_code=500 + n)],
            worker="w",
            disable_after=WINDOW,
            now=at,
        )
    everything = await store.list_attempts("s1", limit=100)
    assert [a.attempted_at for a in everything] == times[::-1]
    assert [a.status_code for a in everything] == [504, 503, 502, 501, 500]
    assert [a.status_code for a in await store.list_attempts("s1", limit=2)] == [504, 503]
    since = await store.list_attempts("s1", since=times[2], limit=100)
    assert [a.attempted_at for a in since] == times[:1:-1], "at or after since"
    assert await store.list_attempts("s1", since=times[-1] + timedelta(seconds=1)) == []
    assert await store.list_attempts("nobody") == []


async def test_next_attempt_at_is_the_earliest_unended_delivery(store: Storage) -> None:
    await queue(store, ["s1"], events=3)
    first, second, third = sorted(await store.list_deliveries("s1"), key=lambda d: d.id)
    assert await store.next_attempt_at("s1") == T0, "pending deliveries are due at creation"
    soon, later = T0 + timedelta(minutes=1), T0 + timedelta(hours=1)
    await settle(
        store,
        [
            outcome(first.id, "s1", "delivered"),
            outcome(second.id, "s1", "failed", next_attempt_at=later),
            outcome(third.id, "s1", "failed", next_attempt_at=soon),
        ],
        now=T0,
    )
    assert await store.next_attempt_at("s1") == soon
    await settle(store, [outcome(third.id, "s1", "dead")], now=soon)
    assert await store.next_attempt_at("s1") == later
    await settle(store, [outcome(second.id, "s1", "delivered")], now=later)
    assert await store.next_attempt_at("s1") is None, "nothing left to try"
    assert await store.next_attempt_at("nobody") is None


async def test_prune_attempts_deletes_the_old_ones_up_to_the_limit(store: Storage) -> None:
    await queue(store, ["s1"])
    (delivery,) = await store.list_deliveries("s1")
    for minutes in range(6):
        await store.complete_deliveries(
            [outcome(delivery.id, "s1", "failed")],
            worker="w",
            disable_after=WINDOW,
            now=T0 + timedelta(minutes=minutes),
        )
    cutoff = T0 + timedelta(minutes=4)
    assert await store.prune_attempts(before=cutoff, limit=3) == 3
    assert await store.prune_attempts(before=cutoff) == 1
    assert await store.prune_attempts(before=cutoff) == 0
    left = await store.list_attempts("s1")
    assert [a.attempted_at for a in left] == [T0 + timedelta(minutes=5), cutoff]


async def test_deleting_a_subscription_deletes_its_attempts(store: Storage) -> None:
    await queue(store, ["s1", "s2"])
    for sub_id in ("s1", "s2"):
        (delivery,) = await store.list_deliveries(sub_id)
        await store.complete_deliveries(
            [outcome(delivery.id, sub_id, "delivered")], worker="w", disable_after=WINDOW, now=T0
        )
    await store.delete_subscription("s1")
    assert await store.list_attempts("s1") == []
    assert len(await store.list_attempts("s2")) == 1
    # Recreated under the same id, it starts with no history.
    await subscribe(store, "s1")
    assert await store.list_attempts("s1") == []
    assert await store.prune_attempts(before=T0 + timedelta(days=1)) == 1


async def test_verifications_keep_the_last_per_pair(store: Storage) -> None:
    assert await store.get_verification(CALLBACK, TOPIC) is None
    denied = Verification(CALLBACK, TOPIC, "subscribe", T0, "denied", "too many subscriptions")
    await store.record_verification(denied)
    assert await store.get_verification(CALLBACK, TOPIC) == denied
    assert await store.get_verification(CALLBACK, TOPIC.replace("atom", "rss")) is None
    assert await store.get_verification(CALLBACK + "x", TOPIC) is None

    confirmed = Verification(CALLBACK, TOPIC, "subscribe", T0 + timedelta(minutes=1), "confirmed")
    await store.record_verification(confirmed)
    assert await store.get_verification(CALLBACK, TOPIC) == confirmed
    # One that started earlier and finished later does not hide the newest.
    await store.record_verification(denied)
    assert await store.get_verification(CALLBACK, TOPIC) == confirmed
    other = Verification(
        CALLBACK, TOPIC, "unsubscribe", T0 + timedelta(minutes=2), "not_confirmed", "HTTP 404"
    )
    await store.record_verification(other)
    assert await store.get_verification(CALLBACK, TOPIC) == other


async def test_pruning_forgets_old_verifications_of_no_subscription(store: Storage) -> None:
    old = Verification(CALLBACK, TOPIC, "subscribe", T0, "not_confirmed", "HTTP 404")
    kept_callback = "https://kept.example.org/cb"
    kept = Verification(kept_callback, TOPIC, "subscribe", T0, "confirmed")
    recent = Verification(
        "https://new.example.org/cb", TOPIC, "subscribe", T0 + timedelta(days=2), "denied", "no"
    )
    for verification in (old, kept, recent):
        await store.record_verification(verification)
    await subscribe(
        store, "w1", kind="websub", url=kept_callback, topic_url=TOPIC, secret=None, owner=None
    )
    await store.prune_attempts(before=T0 + timedelta(days=1))
    assert await store.get_verification(CALLBACK, TOPIC) is None
    assert await store.get_verification(kept_callback, TOPIC) == kept, "a live subscription's"
    assert await store.get_verification(recent.callback, TOPIC) == recent
