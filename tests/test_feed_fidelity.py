"""Issue 20 in the feed formats: images, languages, last changes and text, as readers
see them (feedparser on RSS and Atom, the JSON Feed as parsed JSON), through the real
service on both backends."""

from __future__ import annotations

import asyncio
import calendar
import html
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import feedparser
import pytest
from conftest import Client, ServerFactory
from lxml import etree  # type: ignore[import-untyped]
from test_websub import FAST, Subscriber, post_article, subscribe

from storage import Storage
from syndicate.content.articles import encode_cursor

#: Every character that XML, HTML or a CDATA section treats specially, and markup.
NASTY = "A & B < C ]]> <b>x</b> \"q\" 'a' &amp;"


async def post(client: Client, *articles: dict[str, Any]) -> None:
    async with client.request("POST", "/api/articles/batch", json={"articles": articles}) as r:
        assert r.status == 200
        body = await r.json()
        assert body["created"] == len(articles), body


async def read(client: Client, topic: str, fmt: str) -> Any:
    """The feed as a reader sees it: feedparser for RSS and Atom, JSON for JSON Feed."""
    async with client.request("GET", f"/feeds/{topic}.{fmt}", token="") as resp:
        assert resp.status == 200
        body = await resp.read()
    if fmt == "json":
        return json.loads(body)
    parsed = feedparser.parse(body)
    assert parsed.bozo == 0, parsed.get("bozo_exception")
    return parsed


async def put_topic(client: Client, slug: str, **fields: str) -> None:
    async with client.request("PUT", f"/api/topics/{slug}", json=fields) as resp:
        assert resp.status in (200, 201), await resp.text()


def shown(value: str, detail: Any) -> str:
    """The text a reader shows for a feedparser value: HTML is shown as HTML."""
    return html.unescape(value) if detail.type == "text/html" else str(value)


def when(parsed: Any) -> datetime:
    """A feedparser time (a UTC struct_time) as an aware datetime."""
    return datetime.fromtimestamp(calendar.timegm(parsed), UTC)


def article(id: str, **fields: Any) -> dict[str, Any]:
    return {"id": id, "title": f"Title {id}", "content": "<p>body</p>", "topics": ["t"]} | fields


async def test_the_article_image_reaches_every_format(client: Client) -> None:
    """Finding 4: the image was only in JSON Feed; RSS and Atom readers showed none."""
    await post(
        client,
        article("webp", image="https://img.example.org/a/photo.webp?w=800"),
        article("unknown", image="https://img.example.org/render?id=7"),
        article("none"),
    )
    rss = {e.id.rsplit("/", 1)[1]: e for e in (await read(client, "t", "rss")).entries}
    image = "https://img.example.org/a/photo.webp?w=800"
    assert rss["webp"].enclosures == [{"href": image, "type": "image/webp", "length": "0"}]
    assert rss["webp"].media_content == [{"url": image, "type": "image/webp", "medium": "image"}]
    assert rss["unknown"].enclosures[0]["type"] == "image/jpeg", "a default image type"
    assert rss["none"].enclosures == [] and "media_content" not in rss["none"]
    atom = {e.id.rsplit("/", 1)[1]: e for e in (await read(client, "t", "atom")).entries}
    assert atom["webp"].enclosures == [{"href": image, "type": "image/webp"}]
    assert atom["none"].enclosures == []
    assert atom["webp"].link.endswith("/articles/title-webp"), "the alternate link stays"
    items = {i["id"].rsplit("/", 1)[1]: i for i in (await read(client, "t", "json"))["items"]}
    assert items["webp"]["image"] == image
    assert "image" not in items["none"]


async def test_languages_reach_every_format(client: Client) -> None:
    """Finding 5: the language was only in JSON Feed. Each entry carries its own; the
    feed carries one when every entry on the page shares it."""
    await post(
        client,
        article("ar1", language="ar", topics=["arabic", "mixed"]),
        article("ar2", language="ar", topics=["arabic", "mixed"]),
        article("en1", language="en", topics=["mixed"]),
    )
    arabic = await read(client, "arabic", "rss")
    assert arabic.feed.language == "ar"
    assert [e.language for e in arabic.entries] == ["ar", "ar"]  # dc:language
    mixed = await read(client, "mixed", "rss")
    assert "language" not in mixed.feed
    assert sorted(e.language for e in mixed.entries) == ["ar", "ar", "en"]
    assert sorted(e.content[0].language for e in mixed.entries) == ["ar", "ar", "en"]  # xml:lang

    arabic = await read(client, "arabic", "atom")
    assert arabic.feed.language == "ar"  # xml:lang on <feed>
    assert [e.title_detail.language for e in arabic.entries] == ["ar", "ar"]
    mixed = await read(client, "mixed", "atom")
    assert "language" not in mixed.feed
    assert sorted(e.title_detail.language for e in mixed.entries) == ["ar", "ar", "en"]
    assert sorted(e.content[0].language for e in mixed.entries) == ["ar", "ar", "en"]

    assert (await read(client, "arabic", "json"))["language"] == "ar"
    mixed = await read(client, "mixed", "json")
    assert "language" not in mixed
    assert sorted(i["language"] for i in mixed["items"]) == ["ar", "ar", "en"]


async def test_updated_is_the_last_real_change(client: Client) -> None:
    """Finding 6: every entry of one batch had the ingest time as ``updated`` (the W3C
    validator: DuplicateUpdated). An article never changed was last changed when it
    was published; an edit moves it to the time of the edit."""
    times = {
        "old": datetime(2024, 3, 1, 9, 30, tzinfo=UTC),
        "mid": datetime(2025, 7, 14, 18, 0, 5, tzinfo=UTC),
        "new": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    }
    await post(client, *(article(k, published_at=t.isoformat()) for k, t in times.items()))
    atom = await read(client, "t", "atom")
    for entry in atom.entries:
        published = times[entry.id.rsplit("/", 1)[1]]
        assert when(entry.updated_parsed) == published
    for item in (await read(client, "t", "json"))["items"]:
        published = times[item["id"].rsplit("/", 1)[1]]
        assert datetime.fromisoformat(item["date_modified"]) == published
        assert item["date_modified"] == item["date_published"]

    before_edit = datetime.now(UTC).replace(microsecond=0)
    edit = article("mid", title="Edited", published_at=times["mid"].isoformat())
    async with client.request("PUT", "/api/articles/mid", json=edit) as resp:
        assert resp.status == 200
    entries = {e.id.rsplit("/", 1)[1]: e for e in (await read(client, "t", "atom")).entries}
    assert when(entries["mid"].updated_parsed) >= before_edit, "an edit is a change"
    assert when(entries["mid"].published_parsed) == times["mid"]
    assert when(entries["old"].updated_parsed) == times["old"], "the others keep theirs"


@pytest.mark.parametrize("fmt", ["rss", "atom"])
async def test_text_comes_back_exactly_as_written(client: Client, fmt: str) -> None:
    """Text in every field is escaped exactly once for each format: a reader shows the
    title, summary, author and topic title as the operator wrote them, markup and
    references as text (RSS titles are read as HTML when they look like HTML, so such
    a title is escaped for HTML; one that does not stays plain)."""
    await put_topic(client, "t", title=NASTY, description=NASTY)
    await post(
        client,
        article("nasty", title=NASTY, summary=NASTY, author=NASTY),
        article("plain", title="Fish & chips < 5 €", summary="Tom & Jerry"),
    )
    parsed = await read(client, "t", fmt)
    assert shown(parsed.feed.title, parsed.feed.title_detail) == NASTY
    assert shown(parsed.feed.subtitle, parsed.feed.subtitle_detail) == NASTY
    entries = {e.id.rsplit("/", 1)[1]: e for e in parsed.entries}
    nasty, plain = entries["nasty"], entries["plain"]
    assert shown(nasty.title, nasty.title_detail) == NASTY
    assert shown(nasty.summary, nasty.summary_detail) == NASTY
    assert nasty.author == NASTY
    assert (nasty.tags[0].term if fmt == "rss" else nasty.tags[0].label) == NASTY
    assert (plain.title, plain.title_detail.type) == ("Fish & chips < 5 €", "text/plain")


@pytest.mark.parametrize("fmt", ["rss", "atom"])
async def test_a_topic_description_is_text(client: Client, fmt: str) -> None:
    """RSS's channel description is HTML to readers, as an item's is: a topic
    description that is not HTML-looking text came out as a live (sanitized) tag."""
    description = "<img src=x onerror=alert(1)> & <em>more"
    await put_topic(client, "t", description=description)
    await post(client, article("one"))
    parsed = await read(client, "t", fmt)
    assert shown(parsed.feed.subtitle, parsed.feed.subtitle_detail) == description


async def test_json_feed_text_is_plain(client: Client) -> None:
    await put_topic(client, "t", title=NASTY, description=NASTY)
    await post(client, article("nasty", title=NASTY, summary=NASTY, author=NASTY))
    feed = await read(client, "t", "json")
    assert (feed["title"], feed["description"]) == (NASTY, NASTY)
    item = feed["items"][0]
    assert (item["title"], item["summary"], item["authors"]) == (NASTY, NASTY, [{"name": NASTY}])
    assert item["tags"] == [NASTY]


# -- RFC 6721: deletions reach readers ----------------------------------------------

TOMBSTONE = "{http://purl.org/atompub/tombstones/1.0}deleted-entry"


async def raw(client: Client, path: str) -> bytes:
    async with client.request("GET", path, token="") as resp:
        assert resp.status == 200
        body: bytes = await resp.read()
        return body


def announced(body: bytes) -> list[tuple[str, str]]:
    """(ref, when) of each ``at:deleted-entry`` of an Atom feed."""
    root = etree.fromstring(body)
    return [(e.get("ref"), e.get("when")) for e in root.iter(TOMBSTONE)]


async def test_deleted_entries_are_announced_in_atom(client: Client, store: Storage) -> None:
    """A deleted article vanished from its feeds without a word: a reader that had it
    kept it. The first page of each Atom feed it was in announces it (RFC 6721); the
    other formats have no way to say it."""
    await post(client, article("gone", topics=["t", "u"]), article("kept"))
    async with client.request("DELETE", "/api/articles/gone") as resp:
        assert resp.status == 204
    gone = await store.get_article("gone")
    assert gone.deleted_at is not None
    for feed in ("t", "u", "all"):
        body = await raw(client, f"/feeds/{feed}.atom")
        [(ref, when)] = announced(body)
        assert ref == gone.guid and datetime.fromisoformat(when) == gone.deleted_at
        parsed = feedparser.parse(body)
        assert parsed.bozo == 0
        assert [e.id for e in parsed.entries] == ([] if feed == "u" else [gone.guid[:-4] + "kept"])
    older = encode_cursor(await store.get_article("kept"))
    assert announced(await raw(client, f"/feeds/t.atom?before={older}")) == [], "first page only"
    for fmt in ("rss", "json"):
        assert b"article/gone" not in await raw(client, f"/feeds/t.{fmt}")


async def test_a_deletion_is_announced_for_thirty_days_of_the_feed(
    client: Client, store: Storage
) -> None:
    """Counted back from the feed's own last change (not the clock), so the same data
    renders the same bytes and the cached feed stays exact."""
    await post(client, article("recent"), article("old"))
    now = datetime.now(UTC)
    await store.delete_article("recent", now=now - timedelta(days=29))
    await store.delete_article("old", now=now - timedelta(days=31))
    guid = (await store.get_article("recent")).guid
    assert [ref for ref, _ in announced(await raw(client, "/feeds/t.atom"))] == [guid]


async def test_a_websub_deletion_notice_carries_the_tombstone(
    start_server: ServerFactory, tokens: dict[str, str], store: Storage
) -> None:
    """The notification of a deletion is the current feed: its subscribers learn of
    the deletion as pollers do."""
    hub = await start_server(**FAST)
    hub.token = tokens["operator"]
    subscriber = Subscriber()
    await subscriber.start()
    try:
        await put_topic(hub, "liver-health")
        await subscribe(hub, subscriber, "atom")
        await post_article(hub)
        await subscriber.wait_for(lambda: len(subscriber.posts()) == 1)
        assert announced(subscriber.posts()[0].body) == []
        async with hub.request("DELETE", "/api/articles/w1") as resp:
            assert resp.status == 204
        await subscriber.wait_for(lambda: len(subscriber.posts()) == 2)
        gone = await store.get_article("w1")
        assert [ref for ref, _ in announced(subscriber.posts()[1].body)] == [gone.guid]
    finally:
        await subscriber.close()


@pytest.mark.parametrize("fmt", ["rss", "atom"])
async def test_reader_shows_images_languages_and_changes(
    client: Client, tmp_path: Path, fmt: str
) -> None:
    """The ``reader`` library, as a feed reader stores what it polls: the image as an
    enclosure, each entry's language (Atom) and its own last change, then an edit."""
    import reader as reader_lib

    published = datetime(2025, 5, 6, 7, 8, 9, tzinfo=UTC)
    await post(
        client,
        article("pic", image="https://img.example.org/p.png", language="ar"),
        article("dated", published_at=published.isoformat()),
    )
    url = f"{client.base_url}/feeds/t.{fmt}"
    rdr = reader_lib.make_reader(str(tmp_path / "reader.sqlite"))

    def entries() -> dict[str, Any]:
        rdr.update_feeds(scheduled=False)
        return {e.id.rsplit("/", 1)[1]: e for e in rdr.get_entries()}

    try:
        await asyncio.to_thread(rdr.add_feed, url)
        seen = await asyncio.to_thread(entries)
        [enclosure] = seen["pic"].enclosures
        assert (enclosure.href, enclosure.type) == ("https://img.example.org/p.png", "image/png")
        assert [c.language for c in seen["pic"].content] == ["ar"]
        if fmt == "atom":
            assert seen["dated"].updated == published
        edit = article("dated", title="Dated, edited", published_at=published.isoformat())
        async with client.request("PUT", "/api/articles/dated", json=edit) as resp:
            assert resp.status == 200
        seen = await asyncio.to_thread(entries)
        assert seen["dated"].title == "Dated, edited"
        if fmt == "atom":
            assert seen["dated"].updated is not None and seen["dated"].updated > published
    finally:
        await asyncio.to_thread(rdr.close)
