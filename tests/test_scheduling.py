"""A future published_at schedules an article: nothing of it reaches feeds, the
reader-facing listing or partners until that time; then it is published and pushed
exactly once, also across two processes and a restart. Both backends."""

from __future__ import annotations

import asyncio
import json
import signal
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import feedparser
from conftest import Client, ServerFactory, expect_problem, free_port
from receiver import Receiver
from standardwebhooks import Webhook
from test_delivery_durability import start

from storage import Storage, open_storage
from storage.records import format_time
from syndicate.web.auth import create_token

FEEDS = [
    f"/feeds/{topic}.{ext}" for topic in ("liver-health", "all") for ext in ("rss", "atom", "json")
]
#: How far ahead the article is scheduled: long enough to look at everything first.
AHEAD = timedelta(seconds=3)


def article(published_at: datetime, **changes: Any) -> dict[str, Any]:
    return {
        "id": "soon",
        "title": "Coming soon: the liver",
        "content": "<p>Not yet.</p>",
        "topics": ["liver-health"],
        "published_at": format_time(published_at),
        **changes,
    }


async def subscribed_service(
    start_server: ServerFactory, tokens: dict[str, str], receiver: Receiver
) -> tuple[Client, str]:
    """A service whose partner subscribed ``receiver``'s /hook to liver-health, with
    the operator's token; and the subscription's secret."""
    service = await start_server(allow_private_targets=True)
    service.token = tokens["operator"]
    body = {"url": receiver.url("/hook"), "topics": ["liver-health"]}
    async with service.request(
        "POST", "/api/subscriptions", json=body, token=tokens["partner"]
    ) as r:
        secret: str = (await r.json())["secret"]
    return service, secret


async def feed_ids(client: Client, path: str) -> list[str]:
    async with client.request("GET", path) as resp:
        assert resp.status == 200, path
        body = await resp.read()
    if path.endswith(".json"):
        return [item["id"] for item in json.loads(body)["items"]]
    parsed = feedparser.parse(body)
    assert not parsed.bozo, (path, parsed.get("bozo_exception"))
    return [entry.get("id", "") for entry in parsed.entries]


async def test_a_scheduled_article_appears_and_is_pushed_once_at_its_time(
    start_server: ServerFactory, tokens: dict[str, str], receiver: Receiver
) -> None:
    service, secret = await subscribed_service(start_server, tokens, receiver)
    async with service.request("POST", "/api/articles", json=article(datetime.now(UTC))) as r:
        assert r.status == 201  # something already published, so the feeds are not empty

    when = datetime.now(UTC) + AHEAD
    async with service.request("POST", "/api/articles", json=article(when, id="later")) as r:
        assert r.status == 201, await r.text()
        created = await r.json()
    assert created["status"] == "scheduled"
    guid = created["guid"]
    await receiver.wait_for(lambda: len(receiver.at("/hook")) == 1)

    for path in FEEDS:
        assert guid not in await feed_ids(service, path), path
    async with service.request("GET", "/api/articles", token=tokens["partner"]) as r:
        assert "later" not in [a["id"] for a in (await r.json())["articles"]]
    async with service.request("GET", "/api/articles/later", token=tokens["partner"]) as r:
        await expect_problem(r, 404)
    async with service.request("GET", "/api/articles/later") as r:
        assert (await r.json())["status"] == "scheduled"
    async with service.request("GET", "/api/articles?status=scheduled") as r:
        assert [a["id"] for a in (await r.json())["articles"]] == ["later"]
    path = "/api/articles?status=scheduled"
    async with service.request("GET", path, token=tokens["partner"]) as r:
        await expect_problem(r, 403)
    async with service.request("GET", "/api/topics") as r:
        counts = {t["slug"]: t["article_count"] for t in (await r.json())["topics"]}
    assert counts["liver-health"] == 1
    # An edit before the time is stored and still tells nobody.
    edit = article(when, id="later", title="Coming soon: the liver, revised")
    async with service.request("PUT", "/api/articles/later", json=edit) as r:
        assert r.status == 200 and (await r.json())["status"] == "scheduled"
    await asyncio.sleep(0.5)
    assert len(receiver.at("/hook")) == 1

    await receiver.wait_for(lambda: len(receiver.at("/hook")) == 2, timeout=AHEAD.seconds + 10)
    assert datetime.now(UTC) >= when
    pushed = Webhook(secret).verify(receiver.at("/hook")[1].body, receiver.at("/hook")[1].headers)
    assert pushed["type"] == "article.published"
    assert pushed["data"]["title"] == "Coming soon: the liver, revised"
    assert pushed["data"]["status"] == "published"
    for path in FEEDS:
        assert guid in await feed_ids(service, path), path
    async with service.request("GET", "/api/articles", token=tokens["partner"]) as r:
        assert (await r.json())["articles"][0]["id"] == "later"
    async with service.request("GET", "/api/articles?status=scheduled") as r:
        assert (await r.json())["articles"] == []
    await asyncio.sleep(2.5)  # more than the scheduler's longest sleep
    assert len(receiver.at("/hook")) == 2, "pushed once"


async def test_rescheduling_a_published_article_is_refused(client: Client) -> None:
    async with client.request("POST", "/api/articles", json=article(datetime.now(UTC))) as r:
        assert r.status == 201
    future = article(datetime.now(UTC) + timedelta(days=1))
    async with client.request("PUT", "/api/articles/soon", json=future) as r:
        body = await expect_problem(r, 409)
    assert [e["field"] for e in body["errors"]] == ["published_at"]
    assert "already published" in body["detail"]


async def test_a_batch_rescheduling_a_published_article_rejects_that_item_only(
    client: Client, store: Storage
) -> None:
    async with client.request("POST", "/api/articles", json=article(datetime.now(UTC))) as r:
        assert r.status == 201
    future = datetime.now(UTC) + timedelta(days=1)
    batch = {
        "articles": [
            article(datetime.now(UTC), id="fresh", title="Fresh"),
            article(future),
            article(future, id="later", title="Later"),
        ]
    }
    async with client.request("POST", "/api/articles/batch", json=batch) as r:
        assert r.status == 200, await r.text()
        results = (await r.json())["results"]
    assert [x["status"] for x in results] == ["created", "rejected", "created"]
    assert results[1]["errors"][0]["field"] == "articles.1.published_at"
    assert "already published" in results[1]["errors"][0]["message"]
    assert (await store.get_article("later")).scheduled


async def test_a_scheduled_article_moved_to_the_past_is_published_now(
    client: Client, store: Storage
) -> None:
    later = datetime.now(UTC) + timedelta(days=1)
    async with client.request("PUT", "/api/articles/soon", json=article(later)) as r:
        assert r.status == 201 and (await r.json())["status"] == "scheduled"
    now = datetime.now(UTC) - timedelta(seconds=1)
    async with client.request("PUT", "/api/articles/soon", json=article(now)) as r:
        assert r.status == 200 and (await r.json())["status"] == "published"
    assert [(e.type, e.article_id) for e in await store.list_events()] == [
        ("article.published", "soon")
    ]
    # Deleting a scheduled article tells nobody either.
    async with client.request("PUT", "/api/articles/gone", json=article(later, id="gone")) as r:
        assert r.status == 201
    async with client.request("DELETE", "/api/articles/gone") as r:
        assert r.status == 204
    assert len(await store.list_events()) == 1


async def test_edits_made_while_scheduled_are_not_an_update_once_published(
    client: Client, store: Storage
) -> None:
    """Readers' first version of a scheduled article is its published one: its Atom
    entry's updated is its publication time and its page has no "Updated" line,
    whether publish_due announces it or an edit moves it into the past."""
    later = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    for article_id in ("due", "moved"):
        for title in ("First draft", "Second draft"):
            body = article(later, id=article_id, title=title)
            async with client.request("PUT", f"/api/articles/{article_id}", json=body) as r:
                assert r.status in (200, 201)
    past = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    async with client.request(
        "PUT", "/api/articles/moved", json=article(past, id="moved", title="Final")
    ) as r:
        assert r.status == 200 and (await r.json())["status"] == "published"
    [published] = await store.publish_due(now=later + timedelta(seconds=2))
    assert published.id == "due"
    async with client.request("GET", "/feeds/liver-health.atom") as resp:
        parsed = feedparser.parse(await resp.read())
    updated = {e.title: e.updated_parsed for e in parsed.entries}
    published_times = {e.title: e.published_parsed for e in parsed.entries}
    assert set(updated) == {"Second draft", "Final"}
    assert updated == published_times
    for article_id in ("due", "moved"):
        async with client.request("GET", f"/articles/{article_id}") as resp:
            assert resp.status == 200, article_id
            assert "Updated" not in await resp.text()


async def test_a_scheduled_article_moved_to_the_past_is_pushed_to_earlier_subscribers(
    start_server: ServerFactory, tokens: dict[str, str], receiver: Receiver
) -> None:
    """Its event is stamped with the time it is published, not its (earlier)
    published_at: webhooks skip events older than the subscription."""
    service, secret = await subscribed_service(start_server, tokens, receiver)
    later = datetime.now(UTC) + timedelta(days=1)
    async with service.request("PUT", "/api/articles/soon", json=article(later)) as r:
        assert r.status == 201
    earlier = datetime.now(UTC) - timedelta(hours=6)
    async with service.request("PUT", "/api/articles/soon", json=article(earlier)) as r:
        assert r.status == 200 and (await r.json())["status"] == "published"
    await receiver.wait_for(lambda: len(receiver.at("/hook")) == 1)
    delivery = receiver.at("/hook")[0]
    pushed = Webhook(secret).verify(delivery.body, delivery.headers)
    assert pushed["type"] == "article.published" and pushed["data"]["id"] == "soon"
    assert pushed["data"]["version"] == 1


async def test_two_processes_and_a_restart_publish_and_push_once(
    database_url: str, receiver: Receiver
) -> None:
    store = await open_storage(database_url)
    try:
        token, _ = await create_token(store, name="ops", role="operator")
        await store.create_subscription(
            id="sub_1",
            kind="webhook",
            url=receiver.url("/hook"),
            topics=["*"],
            events=[],
            secret="whsec_" + "A" * 43 + "=",
            owner="partner",
        )
    finally:
        await store.close()
    port = free_port()
    processes = [
        await start("serve", "--port", str(port), database_url=database_url),
        await start("worker", database_url=database_url),
    ]
    try:
        when = datetime.now(UTC) + AHEAD
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"http://127.0.0.1:{port}/api/articles",
                json=article(when),
                headers={"Authorization": f"Bearer {token}"},
            ) as resp:
                assert resp.status == 201, await resp.text()
        # The process that took the write dies before the time, and comes back.
        processes[0].send_signal(signal.SIGKILL)
        await processes[0].wait()
        assert datetime.now(UTC) < when, "the restart came before the time"
        processes[0] = await start("serve", "--port", str(port), database_url=database_url)
        assert receiver.at("/hook") == []

        await receiver.wait_for(lambda: receiver.at("/hook"), timeout=AHEAD.seconds + 15)
        assert datetime.now(UTC) >= when
        await asyncio.sleep(2.5)  # more than the scheduler's longest sleep in both
        hooks = receiver.at("/hook")
        assert len(hooks) == 1 and hooks[0].message_id, "pushed once"
        store = await open_storage(database_url)
        try:
            events = await store.list_events()
        finally:
            await store.close()
        assert [(e.type, e.article_id) for e in events] == [("article.published", "soon")]
        assert hooks[0].message_id == events[0].id
    finally:
        for process in processes:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                await asyncio.wait_for(process.wait(), timeout=20)
