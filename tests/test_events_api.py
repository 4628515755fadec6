"""``GET /api/events``: the change log as an API. Items are the webhook bodies with
their ids (compared with real pushes, verified with standardwebhooks), in order,
paged by cursor or resumed from a ``webhook-id``; filters; every bad input; a partner
down for the whole retry schedule recovers exactly what it missed; long-polls answer
on a write from this process and from another. Both backends, real servers."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from conftest import Client, ServerFactory, error_fields, expect_problem
from receiver import Receiver, respond_with
from test_delivery import subscribe, verify

from storage import Storage, open_storage
from storage.records import ArticleDraft, utcnow
from syndicate.web.appkeys import STORAGE
from syndicate.web.changelog import CHANGE_LOG, ChangeLog, EventFilter, render
from syndicate.web.eventquery import cursor_for, resolve_after

FAST = {
    "allow_private_targets": True,
    "retry_schedule": (0.05, 0.05),
    "delivery_timeout": 2.0,
    "delivery_connect_timeout": 1.0,
}


def article(article_id: str, topics: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": article_id,
        "title": f"Title {article_id}",
        "content": f"<p>About {article_id}.</p>",
        "topics": topics or ["liver-health"],
        "published_at": "2026-11-20T08:00:00Z",
        **extra,
    }


def draft(article_id: str, topics: tuple[str, ...] = ("liver-health",)) -> ArticleDraft:
    return ArticleDraft(
        id=article_id,
        guid=f"tag:example.org,2026:article/{article_id}",
        slug=article_id,
        title=f"Title {article_id}",
        summary="Summary",
        content="<p>Body</p>",
        content_type="html",
        topics=topics,
        published_at=utcnow(),
    )


async def post(client: Client, body: dict[str, Any]) -> None:
    async with client.request("POST", "/api/articles", json=body) as resp:
        assert resp.status == 201, await resp.text()


async def events(client: Client, query: str = "", *, token: str | None = None) -> dict[str, Any]:
    async with client.request("GET", f"/api/events{query}", token=token) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Cache-Control"] == "no-store"
        assert resp.content_type == "application/json"
        body: dict[str, Any] = json.loads(await resp.read())
    return body


async def all_events(client: Client, query: str = "", limit: int = 2) -> list[dict[str, Any]]:
    """Every event, paging with next_cursor."""
    got: list[dict[str, Any]] = []
    sep = "&" if query else ""
    page = await events(client, f"?limit={limit}{sep}{query}")
    for _ in range(100):
        got += page["events"]
        if not page["has_more"]:
            return got
        page = await events(client, f"?limit={limit}&after={page['next_cursor']}{sep}{query}")
    raise AssertionError("paging did not end")


@pytest.fixture
async def service(start_server: ServerFactory, tokens: dict[str, str]) -> Client:
    client = await start_server(**FAST)
    client.token = tokens["operator"]
    return client


async def test_items_are_the_webhook_bodies_with_their_ids(
    service: Client, receiver: Receiver, tokens: dict[str, str]
) -> None:
    sub = await subscribe(service, tokens["partner"], receiver.url("/hook"), ["*"])
    await post(service, article("a"))
    async with service.request("PUT", "/api/articles/a", json=article("a", title="New")) as resp:
        assert resp.status == 200
    async with service.request("DELETE", "/api/articles/a") as resp:
        assert resp.status == 204
    await receiver.wait_for(lambda: len(receiver.at("/hook")) == 3)

    async with service.request("GET", "/api/events", token=tokens["partner"]) as resp:
        raw = await resp.read()
    body = json.loads(raw)
    assert body["has_more"] is False and body["next_cursor"]
    pushes = receiver.at("/hook")
    assert [e["id"] for e in body["events"]] == [p.message_id for p in pushes]
    assert [e["type"] for e in body["events"]] == [
        "article.published",
        "article.updated",
        "article.deleted",
    ]
    for item, push in zip(body["events"], pushes, strict=True):
        payload = verify(sub["secret"], push)
        assert {k: v for k, v in item.items() if k != "id"} == payload
        # Byte for byte: the pushed body with "id" first.
        assert b'{"id":"%s",%s' % (push.message_id.encode(), push.body[1:]) in raw
    assert body["events"][2]["data"] == {
        "id": "a",
        "guid": body["events"][0]["data"]["guid"],
        "topics": ["liver-health"],
        "deleted_at": body["events"][2]["data"]["deleted_at"],
    }


async def test_paging_in_order_and_resuming_from_an_event_id(
    service: Client, store: Storage, tokens: dict[str, str]
) -> None:
    batch = {"articles": [article(f"p{i}") for i in range(5)]}
    async with service.request("POST", "/api/articles/batch", json=batch) as resp:
        assert resp.status == 200
    await post(service, article("p5"))
    stored = [e.id for e in await store.list_events()]
    assert len(stored) == 6

    paged = await all_events(service)
    assert [e["id"] for e in paged] == stored
    assert [e["data"]["id"] for e in paged] == [f"p{i}" for i in range(6)]

    after_second = await events(service, f"?after={stored[1]}", token=tokens["partner"])
    assert [e["id"] for e in after_second["events"]] == stored[2:]
    last = await events(service, f"?after={stored[-1]}")
    assert last == {"events": [], "next_cursor": last["next_cursor"], "has_more": False}
    # A poller keeps passing the cursor: it sees the next change, and only it.
    await post(service, article("p6"))
    fresh = await events(service, f"?after={last['next_cursor']}")
    assert [e["data"]["id"] for e in fresh["events"]] == ["p6"]


async def test_filters_by_topic_and_type(service: Client) -> None:
    await post(service, article("l1", ["liver-health"]))
    await post(service, article("d1", ["diabetes"]))
    await post(service, article("b1", ["liver-health", "diabetes"]))
    await post(service, article("n1", ["nutrition"]))
    async with service.request("DELETE", "/api/articles/d1") as resp:
        assert resp.status == 204

    def ids(got: list[dict[str, Any]]) -> list[str]:
        return [f"{e['type'].split('.')[1]}:{e['data']['id']}" for e in got]

    assert ids(await all_events(service, "topics=diabetes")) == [
        "published:d1",
        "published:b1",
        "deleted:d1",
    ]
    both = ["published:l1", "published:d1", "published:b1", "deleted:d1"]
    assert ids(await all_events(service, "topics=liver-health,diabetes")) == both
    assert ids(await all_events(service, "topics=liver-health&topics=diabetes")) == both
    assert len(await all_events(service, "topics=*")) == 5
    assert ids(await all_events(service, "types=article.deleted")) == ["deleted:d1"]
    assert ids(await all_events(service, "topics=nutrition&types=article.published")) == [
        "published:n1"
    ]
    # Nothing matches: the cursor still moves past what was looked at.
    none = await events(service, "?types=article.updated")
    assert none["events"] == [] and none["has_more"] is False
    async with service.request("PUT", "/api/articles/l1", json=article("l1", title="x")) as resp:
        assert resp.status == 200
    later = await events(service, f"?types=article.updated&after={none['next_cursor']}")
    assert ids(later["events"]) == ["updated:l1"]


async def test_bad_input_is_a_problem_naming_the_field(
    service: Client, store: Storage, tokens: dict[str, str]
) -> None:
    await post(service, article("x"))
    unknown_id = "msg_" + uuid.UUID(int=(int(time.time() * 1000) << 80) | (7 << 76)).hex
    cases = [
        ("?after=nonsense", 400, "after"),
        ("?after=cur_", 400, "after"),
        ("?after=cur_ffffffffff", 400, "after"),  # past the end of this log
        ("?after=msg_123", 400, "after"),
        (f"?after={unknown_id}", 404, "after"),
        ("?topics=Not%20A%20Slug", 422, "topics"),
        ("?topics=no-such-topic", 422, "topics"),
        ("?topics=liver-health,", 422, "topics"),
        ("?types=article.created", 422, "types"),
        ("?limit=0", 422, "limit"),
        ("?limit=1001", 422, "limit"),
        ("?limit=ten", 422, "limit"),
        ("?wait=31", 422, "wait"),
        ("?wait=-1", 422, "wait"),
        ("?wait=nan", 422, "wait"),
        ("?wait=soon", 422, "wait"),
        ("?wait=1_0", 422, "wait"),
        ("?wait=%EF%BC%95", 422, "wait"),  # a full-width 5
        ("?after=cur_1&after=cur_2", 422, "after"),
        ("?limit=5&limit=6", 422, "limit"),
        ("?since=2026-01-01", 422, "since"),
    ]
    for query, status, field in cases:
        async with service.request("GET", f"/api/events{query}") as resp:
            body = await expect_problem(resp, status)
        assert field in error_fields(body), (query, body)
    async with service.request("GET", "/api/events", token="") as resp:
        await expect_problem(resp, 401)


async def test_a_partner_down_for_the_whole_schedule_pulls_what_it_missed(
    service: Client, receiver: Receiver, tokens: dict[str, str]
) -> None:
    sub = await subscribe(service, tokens["partner"], receiver.url("/hook"), ["*"])
    await post(service, article("seen"))
    await receiver.wait_for(lambda: receiver.at("/hook"))
    last_seen = receiver.at("/hook")[0].message_id

    receiver.behaviours["/hook"] = respond_with(503)
    await post(service, article("m1"))
    async with service.request(
        "POST",
        "/api/articles/batch",
        json={"articles": [article("m2"), article("m3", ["diabetes"])]},
    ) as resp:
        assert resp.status == 200
    async with service.request("PUT", "/api/articles/m1", json=article("m1", title="v2")) as resp:
        assert resp.status == 200
    async with service.request("DELETE", "/api/articles/seen") as resp:
        assert resp.status == 204

    async def dead() -> int:
        async with service.request(
            "GET", f"/api/subscriptions/{sub['id']}/deliveries?status=dead", token=tokens["partner"]
        ) as resp:
            return len((await resp.json())["deliveries"])

    for _ in range(200):
        if await dead() == 5:
            break
        await asyncio.sleep(0.05)
    assert await dead() == 5, "every missed push ended dead"
    missed = list(dict.fromkeys(r.message_id for r in receiver.at("/hook")[1:]))
    assert len(missed) == 5

    page = await events(service, f"?after={last_seen}", token=tokens["partner"])
    assert [e["id"] for e in page["events"]] == missed
    assert page["has_more"] is False
    for item, push in zip(
        page["events"],
        [next(r for r in receiver.at("/hook") if r.message_id == m) for m in missed],
        strict=True,
    ):
        assert {k: v for k, v in item.items() if k != "id"} == verify(sub["secret"], push)


# -- long-polls ----------------------------------------------------------------------


async def _long_poll(
    client: Client, query: str, *, token: str | None = None
) -> tuple[dict[str, Any], float]:
    async with client.request("GET", f"/api/events{query}", token=token) as resp:
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
    return body, time.monotonic()


async def _answers_within_100_ms(poller: Client, writer: Client) -> None:
    head = await events(poller, "")
    poll = asyncio.create_task(_long_poll(poller, f"?wait=10&after={head['next_cursor']}"))
    await asyncio.sleep(0.3)  # the poll is parked: nothing to await from outside
    assert not poll.done()
    await post(writer, article("late"))
    written = time.monotonic()
    body, answered = await poll
    assert [e["data"]["id"] for e in body["events"]] == ["late"]
    assert answered - written < 0.1, f"answered {answered - written:.3f} s after the write"


async def test_a_long_poll_answers_on_a_write_here(service: Client) -> None:
    await post(service, article("first"))
    await _answers_within_100_ms(service, service)


@pytest.fixture
async def second_store(database_url: str) -> AsyncIterator[Storage]:
    """Another opening of the same database: what another process writes through."""
    other = await open_storage(database_url)
    yield other
    await other.close()


async def test_a_long_poll_answers_on_a_write_by_another_process(
    second_store: Storage,  # first: closed after the servers that use it
    service: Client,
    start_server: ServerFactory,
    tokens: dict[str, str],
) -> None:
    other = await start_server(storage=second_store, **FAST)
    other.token = tokens["operator"]
    await post(other, article("first"))
    await _answers_within_100_ms(service, other)


async def test_a_long_poll_times_out_empty_with_its_cursor(service: Client) -> None:
    await post(service, article("only"))
    head = await events(service, "")
    started = time.monotonic()
    body = await events(service, f"?wait=0.3&after={head['next_cursor']}")
    assert 0.25 <= time.monotonic() - started < 2
    assert body == {"events": [], "next_cursor": head["next_cursor"], "has_more": False}
    # A filter that matches nothing that arrives: still empty at the timeout, and the
    # cursor moves past what arrived.
    poll = asyncio.create_task(
        _long_poll(service, f"?wait=0.5&types=article.deleted&after={head['next_cursor']}")
    )
    await post(service, article("another"))
    body, _ = await poll
    assert body["events"] == [] and body["next_cursor"] != head["next_cursor"]
    after = await events(service, f"?after={body['next_cursor']}")
    assert after["events"] == []


# -- the change log's reader, on its own -----------------------------------------------


async def test_the_window_and_storage_serve_the_same_items(store: Storage) -> None:
    """A window of 3 items: pages read from it, from storage behind it, and across
    the two are the log in order, filtered or not, each body rendered as pushed."""
    for n in range(10):
        topics = ("liver-health",) if n % 3 else ("diabetes",)
        await store.put_article(draft(f"w{n}", topics=topics))
    stored = await store.list_events()
    log = ChangeLog(store, "http://example.org", window_items=3)
    await log.start()
    try:
        for n in range(10, 14):
            await store.put_article(draft(f"w{n}"))
        stored = await store.list_events()
        everything = EventFilter()
        diabetes = EventFilter(topics=frozenset({"diabetes"}))
        for flt in (everything, diabetes):
            for limit in (1, 2, 5):
                got, after = [], 0
                for _ in range(50):
                    page = await log.read(after, flt, limit)
                    assert len(page.items) <= limit
                    got += page.items
                    after = page.last_seq
                    if not page.more:
                        break
                want = [e for e in stored if flt.matches(e)]
                assert [i.id for i in got] == [e.id for e in want], (flt, limit)
                assert [i.body for i in got] == [render(e, log.base_url).body for e in want]
                assert after == stored[-1].seq
        assert await log.head() == stored[-1].seq
        assert not await log.wait(stored[-1].seq, 0.05)
    finally:
        await log.stop()
    assert not await log.wait(0, 1), "a stopped log answers at once"


# -- what an outside review found --------------------------------------------------------


async def test_a_cursor_another_process_issued_is_taken_before_this_one_hears_of_it(
    second_store: Storage, store: Storage
) -> None:
    """A client following next_cursor across processes (``--workers 2``, a load
    balancer) got 400 "past the end of the change log" when the cursor came from a
    process that had committed a write this one had not yet heard of: the refusal
    was made on the head this process knew, not the database's."""

    def draft(article_id: str) -> ArticleDraft:
        return ArticleDraft(
            article_id,
            f"tag:x,2026:{article_id}",
            article_id,
            "T",
            "S",
            "<p>x</p>",
            "html",
            ("liver-health",),
        )

    await store.put_article(draft("first"))
    log = ChangeLog(store, "http://127.0.0.1")
    await log.start()
    app = web.Application()
    app[CHANGE_LOG], app[STORAGE] = log, store
    try:
        # Watched from now on: it answers from what it has heard (no query).
        assert not await log.wait(await log.head(), 0)
        await second_store.put_article(draft("elsewhere"))  # "another process"
        head = (await second_store.feed_state(None)).seq
        request = make_mocked_request("GET", "/api/events", app=app)
        assert await resolve_after(request, cursor_for(head)) == head
    finally:
        await log.stop()


async def test_an_event_id_from_far_in_the_future_is_not_found(service: Client) -> None:
    """Its first 48 bits are a time past the year 9999: it was a 500."""
    await post(service, article("first"))
    for after in ("msg_ffffffffffffffffffffffffffffffff", "msg_e677d21fdc0000000000000000000000"):
        async with service.request("GET", f"/api/events?after={after}") as resp:
            body = await expect_problem(resp, 404)
        assert body["errors"][0]["field"] == "after"


async def test_a_page_is_bounded_in_bytes(service: Client) -> None:
    """1,000 items of articles near the body limit were a gigabyte in one answer; a
    page now ends past 4 MiB (one item at least) and the rest follows."""
    big = "<p>" + "word " * 180_000 + "</p>"  # ~900 KB
    for n in range(6):
        await post(service, {**article(f"big{n}"), "content": big})
    first = await events(service, "?limit=1000")
    assert 1 <= len(first["events"]) < 6 and first["has_more"]
    rest = await events(service, f"?limit=1000&after={first['next_cursor']}")
    ids = [e["data"]["id"] for e in first["events"] + rest["events"]]
    assert ids == [f"big{n}" for n in range(6)]
    filtered = await all_events(service, "topics=liver-health", limit=1000)
    assert [e["data"]["id"] for e in filtered] == ids


async def test_long_polls_are_capped_per_token(service: Client, tokens: dict[str, str]) -> None:
    """Uncapped, one partner token's long-polls held every file descriptor of the
    server (an outside review: /healthz and the feeds unreachable for 30 s)."""
    await post(service, article("first"))
    head = (await events(service, ""))["next_cursor"]
    partner = tokens["partner"]
    waiting = [
        asyncio.create_task(_long_poll(service, f"?wait=5&after={head}", token=partner))
        for _ in range(10)
    ]
    await asyncio.sleep(0.3)  # all ten in and waiting
    async with service.request("GET", f"/api/events?wait=5&after={head}", token=partner) as r:
        body = await expect_problem(r, 429)
        assert int(r.headers["Retry-After"]) > 0 and "10 long-polls" in body["detail"]
    # A plain poll of this token is not held up.
    async with service.request("GET", f"/api/events?after={head}", token=partner) as r:
        assert r.status == 200
    await post(service, article("second"))  # answers the ten
    for task in waiting:
        body, _ = await task
        assert [e["data"]["id"] for e in body["events"]] == ["second"]
    async with service.request("GET", f"/api/events?wait=0.1&after={head}", token=partner) as r:
        assert r.status == 200
