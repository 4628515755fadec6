"""What the portal (issue 22) reads and writes: sessions, single-use sign-in links, the
attempt detail, attempt counts, delivery filters, failing subscriptions and the article
search. The same contract on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from conftest import ServerFactory
from receiver import Receiver, respond_with
from test_storage_contract import draft
from test_storage_delivery import settle

from storage import Storage
from storage.records import DeliveryOutcome, Token, utcnow
from syndicate.core.settings import Settings
from syndicate.delivery.retention import Retention

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
WINDOW = timedelta(days=5)


async def subscribe(store: Storage, sub_id: str) -> None:
    await store.create_subscription(
        id=sub_id,
        kind="webhook",
        url=f"https://example.org/hook/{sub_id}",
        topics=["*"],
        events=["article.published", "article.updated"],
        secret="whsec_x",
        owner="acme",
        now=T0,
    )


async def queue(store: Storage, subs: list[str], events: int = 1) -> list[int]:
    """Subscriptions ``subs`` and one pending delivery per (new event, subscription);
    the events' seqs."""
    for sub_id in subs:
        await subscribe(store, sub_id)
    for n in range(events):
        await store.put_article(draft(f"a{n}"), now=T0)
    seqs = [e.seq for e in (await store.list_events(limit=10_000))[-events:]]
    pairs = [(seq, sid) for seq in seqs for sid in subs]
    assert await store.fan_out(pairs, cursor="main", up_to=seqs[-1], now=T0) == len(pairs)
    return seqs


def outcome(delivery_id: int, sub_id: str, status: str, **fields: Any) -> DeliveryOutcome:
    succeeded = fields.pop("succeeded", status == "delivered")
    return DeliveryOutcome(
        delivery_id=delivery_id,
        subscription_id=sub_id,
        status=status,  # type: ignore[arg-type]
        succeeded=succeeded,
        **fields,
    )


async def complete(store: Storage, at: datetime, *outcomes: DeliveryOutcome) -> None:
    await settle(store, list(outcomes), now=at)


async def token(store: Storage, name: str = "acme") -> Token:
    return await store.create_token(
        name=name, role="partner", token_hash=f"hash-{uuid.uuid4().hex}", now=T0
    )


# -- sessions -----------------------------------------------------------------


async def test_a_session_acts_as_its_token_until_it_expires(store: Storage) -> None:
    acme = await token(store)
    ends = T0 + HOUR
    await store.create_portal_session(session_hash="s1", token_id=acme.id, expires_at=ends, now=T0)

    session = await store.get_portal_session("s1", now=T0 + timedelta(minutes=59))
    assert session is not None
    assert session.token == acme
    assert (session.created_at, session.expires_at) == (T0, ends)
    assert session.expires_at.tzinfo is UTC

    assert await store.get_portal_session("s1", now=ends) is None, "expired at its end"
    assert await store.get_portal_session("nope", now=T0) is None


async def test_a_session_of_a_revoked_token_is_no_session(store: Storage) -> None:
    acme = await token(store)
    await store.revoke_token("acme", now=T0)
    # Made after the revocation (a sign-in racing it): still refused.
    await store.create_portal_session(
        session_hash="late", token_id=acme.id, expires_at=T0 + HOUR, now=T0
    )
    assert await store.get_portal_session("late", now=T0) is None


async def test_sign_out_one_session_or_all(store: Storage) -> None:
    acme, other = await token(store), await token(store, "other")
    for n, owner in enumerate([acme, acme, acme, other]):
        await store.create_portal_session(
            session_hash=f"s{n}", token_id=owner.id, expires_at=T0 + HOUR, now=T0
        )
    await store.delete_portal_session("s0")
    await store.delete_portal_session("s0")  # nothing left to end: no error
    assert await store.get_portal_session("s0", now=T0) is None
    assert await store.get_portal_session("s1", now=T0) is not None

    assert await store.delete_portal_sessions(acme.id) == 2
    assert await store.delete_portal_sessions(acme.id) == 0
    assert await store.get_portal_session("s2", now=T0) is None
    kept = await store.get_portal_session("s3", now=T0)
    assert kept is not None and kept.token.name == "other"


# -- sign-in links --------------------------------------------------------------


async def test_a_link_signs_in_once(store: Storage) -> None:
    acme = await token(store)
    await store.create_portal_link(link_hash="l1", token_id=acme.id, expires_at=T0 + HOUR, now=T0)
    assert await store.use_portal_link("l1", now=T0 + timedelta(minutes=5)) == acme
    assert await store.use_portal_link("l1", now=T0 + timedelta(minutes=6)) is None
    assert await store.use_portal_link("unknown", now=T0) is None


async def test_an_expired_link_or_one_of_a_revoked_token_signs_no_one_in(store: Storage) -> None:
    acme, other = await token(store), await token(store, "other")
    await store.create_portal_link(link_hash="old", token_id=acme.id, expires_at=T0 + HOUR, now=T0)
    assert await store.use_portal_link("old", now=T0 + HOUR) is None
    assert await store.use_portal_link("old", now=T0) == acme, "an expired use spends nothing"

    await store.revoke_token("other", now=T0)
    await store.create_portal_link(
        link_hash="late", token_id=other.id, expires_at=T0 + HOUR, now=T0
    )
    assert await store.use_portal_link("late", now=T0) is None


async def test_concurrent_uses_of_a_link_sign_in_exactly_once(store: Storage) -> None:
    acme = await token(store)
    links = [f"link-{n}" for n in range(10)]
    for link in links:
        await store.create_portal_link(
            link_hash=link, token_id=acme.id, expires_at=T0 + HOUR, now=T0
        )
    # Five uses of each link at once: on PostgreSQL, on as many pooled connections.
    uses = [store.use_portal_link(link, now=T0) for link in links for _ in range(5)]
    results = await asyncio.gather(*uses)
    for n in range(len(links)):
        mine = results[n * 5 : n * 5 + 5]
        assert [r for r in mine if r is not None] == [acme], links[n]


async def test_revoking_a_token_ends_its_sessions_and_unused_links(store: Storage) -> None:
    acme, other = await token(store), await token(store, "other")
    for name, owner in [("a1", acme), ("a2", acme), ("o1", other)]:
        await store.create_portal_session(
            session_hash=name, token_id=owner.id, expires_at=T0 + HOUR, now=T0
        )
        await store.create_portal_link(
            link_hash=name, token_id=owner.id, expires_at=T0 + HOUR, now=T0
        )
    assert await store.use_portal_link("a2", now=T0) == acme

    revoked = await store.revoke_token("acme", now=T0 + timedelta(minutes=1))
    assert revoked is not None and revoked.revoked_at is not None
    # Gone, not only hidden by the revocation: nothing left to delete.
    assert await store.delete_portal_sessions(acme.id) == 0
    assert await store.get_portal_session("a1", now=T0) is None
    assert await store.use_portal_link("a1", now=T0) is None
    # A new token of the name inherits nothing.
    renewed = await token(store)
    assert renewed.id != acme.id
    assert await store.get_portal_session("a2", now=T0) is None

    kept = await store.get_portal_session("o1", now=T0)
    assert kept is not None and kept.token == other
    assert await store.use_portal_link("o1", now=T0) == other


async def test_get_live_token_by_name(store: Storage) -> None:
    acme = await token(store)
    assert await store.get_live_token("acme") == acme
    assert await store.get_live_token("nobody") is None
    await store.revoke_token("acme", now=T0)
    assert await store.get_live_token("acme") is None
    renewed = await store.create_token(name="acme", role="partner", token_hash="new", now=T0)
    assert await store.get_live_token("acme") == renewed


async def test_prune_portal_deletes_expired_sessions_and_spent_or_expired_links(
    store: Storage,
) -> None:
    acme = await token(store)
    now = T0 + 2 * HOUR
    for n in range(3):
        await store.create_portal_session(
            session_hash=f"old{n}", token_id=acme.id, expires_at=T0 + HOUR, now=T0
        )
    await store.create_portal_session(
        session_hash="live", token_id=acme.id, expires_at=now + HOUR, now=T0
    )
    for link, ends in [("old", T0 + HOUR), ("used", now + HOUR), ("live", now + HOUR)]:
        await store.create_portal_link(link_hash=link, token_id=acme.id, expires_at=ends, now=T0)
    assert await store.use_portal_link("used", now=T0) == acme

    assert await store.prune_portal(now=now, limit=2) == 2
    assert await store.prune_portal(now=now, limit=10) == 3
    assert await store.prune_portal(now=now) == 0
    # Pruning expired sessions: the next ones are the live ones.
    assert await store.delete_portal_sessions(acme.id) == 1

    assert await store.use_portal_link("live", now=now) == acme
    assert await store.prune_portal(now=now) == 1, "the link just used"


# -- attempts ---------------------------------------------------------------------


async def test_attempts_keep_the_answer_and_when_it_was_sent(store: Storage) -> None:
    seqs = await queue(store, ["s1"], events=2)
    d1, d2 = sorted(await store.list_deliveries("s1"), key=lambda d: d.id)
    sent = T0 + timedelta(seconds=4, microseconds=123_456)
    at = T0 + timedelta(seconds=5)
    await complete(
        store,
        at,
        outcome(
            d1.id,
            "s1",
            "failed",
            status_code=503,
            response_body="down for maintenance",
            sent_at=sent,
            next_attempt_at=at + HOUR,
        ),
        outcome(d2.id, "s1", "dead", error="subscription gone"),  # none sent
    )
    await complete(
        store,
        at + HOUR,
        outcome(d1.id, "s1", "delivered", status_code=200, response_body="ok", sent_at=at + HOUR),
    )

    newest, second, oldest = await store.list_attempts("s1")
    assert (newest.delivery_id, newest.response_body, newest.sent_at) == (d1.id, "ok", at + HOUR)
    assert newest.event_type == "article.published" and newest.event_id is not None
    failed = second if second.delivery_id == d1.id else oldest
    dead = oldest if failed is second else second
    assert (failed.response_body, failed.sent_at) == ("down for maintenance", sent)
    assert failed.sent_at is not None and failed.sent_at.tzinfo is UTC
    assert (dead.delivery_id, dead.response_body, dead.sent_at) == (d2.id, None, None)
    assert dead.event_type == "article.published"
    ids = {newest.id, second.id, oldest.id}
    assert len(ids) == 3 and min(ids) > 0

    for attempt in (newest, second, oldest):
        assert await store.get_attempt(attempt.id) == attempt
    assert await store.get_attempt(max(ids) + 1000) is None

    assert await store.list_attempts("s1", delivery_id=d1.id) == [newest, failed]
    assert await store.list_attempts("s1", delivery_id=d2.id) == [dead]
    assert await store.list_attempts("s1", delivery_id=d1.id, since=at + timedelta(1)) == []
    assert await store.list_attempts("s1", delivery_id=d1.id, limit=1) == [newest]
    assert await store.list_attempts("other", delivery_id=d1.id) == []

    # Once the event is pruned, its attempts are still kept, without its id and type.
    await store.prune_events(before=T0 + 10 * HOUR)
    events = [e.seq for e in await store.list_events(limit=10)]
    assert seqs[0] not in events and seqs[1] in events
    pruned = d1 if d1.event_seq == seqs[0] else d2
    kept = (await store.list_attempts("s1", delivery_id=pruned.id))[-1]
    assert (kept.event_id, kept.event_type) == (None, None)
    assert await store.get_attempt(kept.id) == kept


async def test_a_real_delivery_records_when_it_was_signed_and_the_answer(
    store: Storage, start_server: ServerFactory, tokens: dict[str, str], receiver: Receiver
) -> None:
    receiver.behaviours["/busy"] = respond_with(503)
    client = await start_server(
        allow_private_targets=True, retry_schedule=(3600.0,), delivery_timeout=2.0
    )
    body = {"url": receiver.url("/busy"), "topics": ["liver-health"]}
    async with client.request(
        "POST", "/api/subscriptions", json=body, token=tokens["partner"]
    ) as resp:
        assert resp.status == 201, await resp.text()
        sub_id = (await resp.json())["id"]
    article: dict[str, Any] = {
        "id": "liver-1",
        "title": "Fatty liver",
        "content": "<p>About the liver.</p>",
        "topics": ["liver-health"],
    }
    async with client.request(
        "POST", "/api/articles", json=article, token=tokens["operator"]
    ) as resp:
        assert resp.status == 201, await resp.text()

    deadline = time.monotonic() + 10
    while not (attempts := await store.list_attempts(sub_id)):
        assert time.monotonic() < deadline, "no attempt recorded"
        await asyncio.sleep(0.02)
    (attempt,) = attempts
    (request,) = receiver.at("/busy")
    signed = datetime.fromtimestamp(int(request.headers["webhook-timestamp"]), UTC)
    assert attempt.sent_at == signed <= attempt.attempted_at
    assert (attempt.status_code, attempt.response_body) == (503, "answer 503")
    assert attempt.event_id == request.headers["webhook-id"]
    assert attempt.event_type == "article.published"
    assert await store.get_attempt(attempt.id) == attempt


async def test_the_retention_round_prunes_the_portal(store: Storage) -> None:
    acme = await token(store)
    now = utcnow()
    for n, ends in enumerate([now - HOUR, now - HOUR, now - HOUR, now + HOUR]):
        await store.create_portal_session(
            session_hash=f"s{n}", token_id=acme.id, expires_at=ends, now=now - 2 * HOUR
        )
        await store.create_portal_link(
            link_hash=f"l{n}", token_id=acme.id, expires_at=ends, now=now - 2 * HOUR
        )
    pruned = await Retention(store, Settings(), batch=2).run_once()
    assert pruned.portal == 6
    assert await store.get_portal_session("s3") is not None
    assert await store.use_portal_link("l3") == acme


async def test_count_attempts_per_bucket_and_outcome(store: Storage) -> None:
    await queue(store, ["s1", "s2"])
    ((d1,), (d2,)) = [await store.list_deliveries(s) for s in ("s1", "s2")]
    second = timedelta(seconds=1)
    failed = outcome(d1.id, "s1", "failed", next_attempt_at=T0 + HOUR)
    await complete(store, T0 - 5 * second, failed)  # before ``since``
    await complete(store, T0 + 10 * second, failed, outcome(d2.id, "s2", "delivered"))
    await complete(store, T0 + 59 * second + timedelta(microseconds=999_999), failed)
    await complete(store, T0 + 60 * second, outcome(d1.id, "s1", "delivered"))
    await complete(store, T0 + 185 * second, outcome(d2.id, "s2", "dead"))

    counts = await store.count_attempts(since=T0)
    assert [(c.bucket, c.outcome, c.succeeded, c.count) for c in counts] == [
        (T0, "delivered", True, 1),
        (T0, "failed", False, 2),
        (T0 + 60 * second, "delivered", True, 1),
        (T0 + 180 * second, "dead", False, 1),
    ]
    assert all(c.bucket.tzinfo is UTC for c in counts)

    hourly = await store.count_attempts(since=T0 - HOUR, bucket_seconds=3600)
    assert [(c.bucket, c.outcome, c.count) for c in hourly] == [
        (T0 - HOUR, "failed", 1),
        (T0, "dead", 1),
        (T0, "delivered", 2),
        (T0, "failed", 2),
    ]

    # Buckets start at multiples of the width since the epoch, not at ``since``.
    epoch = int((T0 + 10 * second).timestamp())
    start = datetime.fromtimestamp(epoch // 7 * 7, UTC)
    (first, *_) = await store.count_attempts(since=T0 + 10 * second, bucket_seconds=7)
    assert first.bucket == start
    assert await store.count_attempts(since=T0 + HOUR) == []


# -- deliveries and subscriptions ------------------------------------------------


async def test_list_deliveries_by_event_type_and_time(store: Storage) -> None:
    await subscribe(store, "s1")
    await store.put_article(draft("a0"), now=T0)
    await store.put_article(draft("a0", title="Changed"), now=T0 + HOUR)
    published, updated = await store.list_events(limit=10)
    assert (published.type, updated.type) == ("article.published", "article.updated")
    await store.fan_out([(published.seq, "s1")], cursor="main", up_to=published.seq, now=T0)
    await store.fan_out([(updated.seq, "s1")], cursor="main", up_to=updated.seq, now=T0 + HOUR)
    first, second = sorted(await store.list_deliveries("s1"), key=lambda d: d.id)
    await complete(store, T0 + HOUR, outcome(first.id, "s1", "delivered"))

    def ids(deliveries: list[Any]) -> list[int]:
        return [d.id for d in deliveries]

    assert ids(await store.list_deliveries("s1", event_type="article.published")) == [first.id]
    assert ids(await store.list_deliveries("s1", event_type="article.updated")) == [second.id]
    assert await store.list_deliveries("s1", event_type="article.deleted") == []
    assert ids(await store.list_deliveries("s1", since=T0 + HOUR)) == [second.id]
    assert ids(await store.list_deliveries("s1", since=T0)) == [second.id, first.id]
    assert ids(await store.list_deliveries("s1", until=T0 + HOUR)) == [first.id]
    assert await store.list_deliveries("s1", since=T0 + HOUR, until=T0 + HOUR) == []
    assert ids(
        await store.list_deliveries("s1", status="pending", since=T0 - HOUR, until=T0 + 2 * HOUR)
    ) == [second.id]
    assert (
        ids(await store.list_deliveries("s1", event_type="article.updated", status="delivered"))
        == []
    )
    assert ids(await store.list_deliveries("s1", since=T0, before_id=second.id)) == [first.id]
    assert ids(await store.list_deliveries("s1", since=T0, limit=1)) == [second.id]
    assert await store.list_deliveries("s2", since=T0) == []


async def test_failing_subscriptions_longest_failing_first(store: Storage) -> None:
    await queue(store, ["s1", "s2", "s3"])
    (d1,), (d2,), (d3,) = [await store.list_deliveries(s) for s in ("s1", "s2", "s3")]
    await complete(store, T0 + HOUR, outcome(d2.id, "s2", "failed", next_attempt_at=T0 + HOUR))
    await complete(
        store,
        T0 + 2 * HOUR,
        outcome(d1.id, "s1", "failed", next_attempt_at=T0 + HOUR),
        outcome(d3.id, "s3", "delivered"),
    )
    failing = await store.list_failing_subscriptions()
    assert [(s.id, s.failing_since) for s in failing] == [("s2", T0 + HOUR), ("s1", T0 + 2 * HOUR)]
    assert [s.id for s in await store.list_failing_subscriptions(limit=1)] == ["s2"]

    await complete(store, T0 + 3 * HOUR, outcome(d2.id, "s2", "delivered"))
    assert [s.id for s in await store.list_failing_subscriptions()] == ["s1"]


# -- articles ---------------------------------------------------------------------


async def test_search_articles_by_title(store: Storage) -> None:
    titles = {
        "pct": "50% off liver tests",
        "five": "500 ways to rest",
        "under": "A_B testing",
        "ab": "AB testing",
        "slash": "Back\\slash liver",
        "caps": "LIVER Health",
        "old": "liver basics",
        "gone": "Liver gone",
    }
    for n, (article_id, title) in enumerate(titles.items()):
        topics = ("diet",) if article_id == "old" else ("liver-health",)
        published = T0 + timedelta(minutes=n)
        await store.put_article(
            draft(article_id, title=title, topics=topics, published_at=published), now=T0 + HOUR
        )
    await store.delete_article("gone", now=T0 + HOUR)
    await store.put_article(draft("soon", title="Liver soon", published_at=T0 + 9 * HOUR), now=T0)

    async def found(query: str, **kwargs: Any) -> list[str]:
        return [a.id for a in await store.search_articles(query, **kwargs)]

    # Case ignored, scheduled included, deleted not, newest first.
    assert await found("liver") == ["soon", "old", "caps", "slash", "pct"]
    assert await found("LiVeR", topic="diet") == ["old"]
    assert await found("liver", limit=2) == ["soon", "old"]
    # %, _ and \ are plain characters.
    assert await found("50%") == ["pct"]
    assert await found("%") == ["pct"]
    assert await found("A_B") == ["under"]
    assert await found("_") == ["under"]
    assert await found("k\\s") == ["slash"]
    assert await found("nothing like it") == []
    assert (await store.search_articles("soon"))[0].scheduled
