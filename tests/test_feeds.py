"""Topic feeds: golden bytes, real parsers, HTTP caching, invalidation, paging, real readers."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import html
import json
import os
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path
from typing import Any

import feedparser
import pytest
from conftest import Client, ServerFactory, clean_env, expect_problem
from lxml import etree  # type: ignore[import-untyped]
from yarl import URL

import feeds
from storage import Storage, open_storage
from storage.records import Article
from syndicate.content.articles import to_draft
from syndicate.content.models import ArticleIn
from syndicate.content.text import render_content, summarize
from syndicate.web.routes.feeds import FEED_CACHE

GOLDEN = Path(__file__).parent / "golden"
ATOM = "{http://www.w3.org/2005/Atom}"
FORMATS: tuple[feeds.FeedFormat, ...] = ("rss", "atom", "json")
LIVER_TITLES = [
    "How to treat jaundice hepatitis",
    "What does liver calcification mean?",
    "What causes the liver to have a rough surface?",
    "What are the common causes of high bilirubin?",
]


# -- the pure renderers: golden files ----------------------------------------------


def parse(resp: Any, body: bytes) -> Any:
    """feedparser as a reader runs it, with the response's headers. feedparser 6.0
    has no JSON Feed support: those are checked against JSON Feed 1.1 here and
    returned in feedparser's shape."""
    if resp.headers["Content-Type"].startswith("application/feed+json"):
        doc = json.loads(body)
        validate_json_feed(doc)
        entries = [
            feedparser.FeedParserDict(id=i["id"], title=i.get("title")) for i in doc["items"]
        ]
        feed = feedparser.FeedParserDict(title=doc["title"], links=[])
        return feedparser.FeedParserDict(bozo=0, entries=entries, feed=feed, version="json11")
    return feedparser.parse(body, response_headers={k.lower(): v for k, v in resp.headers.items()})


def validate_json_feed(doc: dict[str, Any]) -> None:
    """JSON Feed 1.1: the required fields and the types of the ones we send."""
    assert doc["version"] == "https://jsonfeed.org/version/1.1"
    assert isinstance(doc["title"], str) and doc["title"]
    assert isinstance(doc["items"], list)
    for key in ("home_page_url", "feed_url", "next_url", "description"):
        assert key not in doc or isinstance(doc[key], str)
    for item in doc["items"]:
        assert isinstance(item["id"], str) and item["id"]
        assert isinstance(item.get("content_html") or item.get("content_text"), str)
        for key in ("date_published", "date_modified"):
            if key in item:
                assert datetime.fromisoformat(item[key]).tzinfo is not None
        for author in item.get("authors", []):
            assert isinstance(author["name"], str)
        assert all(isinstance(tag, str) for tag in item.get("tags", []))


def golden_inputs(seed_articles: list[dict[str, Any]]) -> tuple[feeds.FeedInfo, list[Any]]:
    base = "https://feeds.example.org"
    t0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    items = []
    liver = [a for a in seed_articles if "liver-health" in a["topics"]]
    for raw in sorted(liver, key=lambda a: a["published_at"], reverse=True):
        content = render_content(raw["content"], "html")
        article = Article(
            id=raw["id"],
            guid=f"tag:feeds.example.org,2026:article/{raw['id']}",
            slug=raw["id"],
            title=raw["title"],
            summary=summarize(content),
            content=content,
            content_type="html",
            topics=tuple(raw["topics"]),
            author=raw.get("author"),
            url=None,
            image=f"{base}/images/{raw['id']}.png" if raw["id"] == "liver-calcification" else None,
            language="en",
            published_at=datetime.fromisoformat(raw["published_at"]),
            updated_at=t0,
            created_at=t0,
            version=1,
        )
        category = feeds.Category("liver-health", "Liver health", f"{base}/topics/")
        items.append(feeds.FeedItem(article, f"{base}/articles/{raw['id']}", [category]))
    info = feeds.FeedInfo(
        id=f"{base}/feeds/liver-health.atom",
        title="Liver health",
        description="Articles about liver health",
        home_url=f"{base}/topics/liver-health",
        self_url=f"{base}/feeds/liver-health.FMT",
        updated=t0,
        hub_url=f"{base}/hub",
        deleted=[
            feeds.Tombstone(
                "tag:feeds.example.org,2026:article/retracted",
                datetime(2026, 11, 22, 17, 30, tzinfo=UTC),
                f"{base}/articles/retracted",
            )
        ],
    )
    return info, items


@pytest.mark.parametrize("fmt", FORMATS)
def test_rendering_matches_golden_file(
    seed_articles: list[dict[str, Any]], fmt: feeds.FeedFormat
) -> None:
    info, items = golden_inputs(seed_articles)
    url = info.self_url.replace("FMT", fmt)
    info = dataclasses.replace(info, self_url=url, first_url=url, next_url=f"{url}?before=abc")
    body = feeds.render(fmt, info, items)
    assert body == feeds.render(fmt, info, items), "same data, same bytes"
    path = GOLDEN / f"liver-health.{fmt}"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_bytes(body)
    assert body == path.read_bytes()


# -- over HTTP ---------------------------------------------------------------------


async def load(client: Client, seed_articles: list[dict[str, Any]]) -> Client:
    async with client.request("POST", "/api/articles/batch", json={"articles": seed_articles}) as r:
        assert r.status == 200
        assert (await r.json())["created"] == len(seed_articles)
    return client


@pytest.fixture
async def loaded(client: Client, seed_articles: list[dict[str, Any]]) -> Client:
    return await load(client, seed_articles)


@pytest.fixture(params=[True, False], ids=["fast-paths", "plain-paths"])
async def loaded_either(
    request: pytest.FixtureRequest,
    start_server: ServerFactory,
    tokens: dict[str, str],
    seed_articles: list[dict[str, Any]],
) -> Client:
    """``loaded``, served with the feed route's own matcher (``fast_paths``, on
    aiohttp's private ``Resource._match``) and with aiohttp's plain one: the two
    must answer alike."""
    client = await start_server(fast_paths=request.param)
    client.token = tokens["operator"]
    return await load(client, seed_articles)


async def get(client: Client, path: str, **headers: str) -> tuple[Any, bytes]:
    """GET as a plain reader would: no Accept-Encoding unless given, body as sent."""
    headers.setdefault("Accept-Encoding", "identity")
    async with client.request(
        "GET", path, token="", headers=headers, auto_decompress=False
    ) as resp:
        return resp, await resp.read()


async def test_liver_atom_lists_the_three_articles_newest_first(loaded: Client) -> None:
    resp, body = await get(loaded, "/feeds/liver-health.atom")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/atom+xml; charset=utf-8"
    parsed = parse(resp, body)
    assert parsed.bozo == 0, parsed.get("bozo_exception")
    assert [e.title for e in parsed.entries] == LIVER_TITLES
    entry = parsed.entries[1]
    assert entry.id.endswith(":article/liver-calcification")
    assert entry.link == f"{loaded.base_url}/articles/what-does-liver-calcification-mean"
    assert entry.author == "Health desk"
    assert "intrahepatic calcification" in entry.content[0].value
    assert entry.content[0].type == "text/html"
    assert entry.summary.endswith("…")
    assert entry.published_parsed[:3] == (2026, 11, 21)
    assert [t.term for t in entry.tags] == ["liver-health"]


@pytest.mark.parametrize("fmt", FORMATS)
async def test_every_feed_parses_cleanly(loaded: Client, fmt: str) -> None:
    async with loaded.request("GET", "/api/topics") as resp:
        topics = [t["slug"] for t in (await resp.json())["topics"]] + ["all"]
    for topic in topics:
        resp, body = await get(loaded, f"/feeds/{topic}.{fmt}")
        assert resp.status == 200
        assert resp.headers["Content-Type"] == feeds.CONTENT_TYPES[fmt]  # type: ignore[index]
        self_url = f"{loaded.base_url}/feeds/{topic}.{fmt}"
        assert resp.headers["Link"] == (
            f'<{loaded.base_url}/hub>; rel="hub", <{self_url}>; rel="self"'
        )
        parsed = parse(resp, body)
        assert parsed.bozo == 0, (topic, parsed.get("bozo_exception"))
        assert parsed.entries, topic
        if fmt == "json":
            check_json_feed(json.loads(body), self_url, f"{loaded.base_url}/hub")
        else:
            check_xml_links(body, fmt, self_url, f"{loaded.base_url}/hub")
    resp, body = await get(loaded, f"/feeds/all.{fmt}")
    assert len(parse(resp, body).entries) == 18


def check_xml_links(body: bytes, fmt: str, self_url: str, hub: str) -> None:
    root = etree.fromstring(body)
    scope = root if fmt == "atom" else root.find("channel")
    assert scope is not None
    links = {(el.get("rel"), el.get("href")) for el in scope.findall(f"{ATOM}link")}
    assert ("self", self_url) in links and ("hub", hub) in links
    assert len([rel for rel, _ in links if rel == "self"]) == 1
    if fmt == "rss":
        for item in root.iter("item"):
            assert item.findtext("guid") and item.findtext("description")
            assert item.findtext("{http://purl.org/rss/1.0/modules/content/}encoded")


def check_json_feed(doc: dict[str, Any], self_url: str, hub: str) -> None:
    validate_json_feed(doc)
    assert doc["feed_url"] == self_url
    assert doc["hubs"] == [{"type": "WebSub", "url": hub}]
    assert all(item["url"].startswith("http") for item in doc["items"])


async def test_unknown_topic_404_and_empty_topic_is_valid(loaded: Client) -> None:
    resp, _ = await get(loaded, "/feeds/no-such-topic.rss")
    await expect_problem(resp, 404)
    async with loaded.request("PUT", "/api/topics/empty", json={}) as resp:
        assert resp.status == 201
    for fmt in FORMATS:
        resp, body = await get(loaded, f"/feeds/empty.{fmt}")
        assert resp.status == 200
        parsed = parse(resp, body)
        assert parsed.bozo == 0 and parsed.entries == []
    resp, _ = await get(loaded, "/feeds/liver-health.xml")
    assert resp.status == 404


async def test_feed_paths_outside_the_route_are_404_and_other_methods_405(
    loaded_either: Client,
) -> None:
    """The feed route matches exactly ``/feeds/<topic slug>.<rss|atom|json>``, every
    time (also once the same path has been served before), and answers other methods
    with 405 and ``Allow``."""
    good = "/feeds/liver-health.json"
    bad = [
        "/feeds/Liver-health.rss",
        "/feeds/liver-health",
        "/feeds/.rss",
        "/feeds/-liver.rss",
        "/feeds/liver-health.rss.rss",
        "/feeds/liver%2Fhealth.rss",
        f"/feeds/{'a' * 65}.rss",
        "/feeds/liver-health.RSS",
        "/feeds/",
        "/feeds",
    ]
    for _ in range(2):
        resp, _ = await get(loaded_either, good)
        assert resp.status == 200
        for path in bad:
            url = URL(loaded_either.url(path), encoded=True)
            async with loaded_either.session.get(url) as resp:
                problem = await expect_problem(resp, 404)
                assert "no topic" not in problem["detail"], f"{path} is not a feed path"
        async with loaded_either.request("GET", f"/feeds/{'a' * 64}.rss", token="") as resp:
            problem = await expect_problem(resp, 404)  # a feed path, but no such topic
            assert problem["detail"] == f"no topic {'a' * 64!r}"
    async with loaded_either.request("POST", good, token="", data=b"x") as resp:
        await expect_problem(resp, 405)
        assert {m.strip() for m in resp.headers["Allow"].split(",")} == {"GET", "HEAD"}
    async with loaded_either.request("HEAD", good, token="") as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("application/feed")


async def test_conditional_get_head_and_gzip(loaded_either: Client) -> None:
    path = "/feeds/liver-health.rss"
    first, body = await get(loaded_either, path)
    etag, last_modified = first.headers["ETag"], first.headers["Last-Modified"]
    assert etag.startswith('"') and not etag.startswith("W/")
    assert first.headers["Cache-Control"] == "public, max-age=300"
    assert first.headers["Vary"] == "Accept-Encoding"
    again, body2 = await get(loaded_either, path)
    assert (again.headers["ETag"], again.headers["Last-Modified"], body2) == (
        etag,
        last_modified,
        body,
    )

    for inm in (etag, f"W/{etag}", f'"nope", {etag}', "*"):
        resp, empty = await get(loaded_either, path, **{"If-None-Match": inm})
        assert resp.status == 304, inm
        assert empty == b""
        assert resp.headers["ETag"] == etag
        assert resp.headers["Cache-Control"] == "public, max-age=300"
        assert resp.headers["Vary"] == "Accept-Encoding"

    modified = parsedate_to_datetime(last_modified)
    later = format_datetime(modified + timedelta(hours=1), usegmt=True)
    earlier = format_datetime(modified - timedelta(seconds=1), usegmt=True)
    resp, _ = await get(loaded_either, path, **{"If-Modified-Since": last_modified})
    assert resp.status == 304
    resp, _ = await get(loaded_either, path, **{"If-Modified-Since": later})
    assert resp.status == 304, "not modified since, not equality"
    resp, _ = await get(loaded_either, path, **{"If-Modified-Since": earlier})
    assert resp.status == 200
    resp, _ = await get(
        loaded_either, path, **{"If-None-Match": '"other"', "If-Modified-Since": later}
    )
    assert resp.status == 200, "If-None-Match takes precedence"
    resp, _ = await get(loaded_either, path, **{"If-Modified-Since": "garbage"})
    assert resp.status == 200

    async with loaded_either.request(
        "HEAD", path, token="", headers={"Accept-Encoding": "identity"}
    ) as resp:
        assert resp.status == 200 and resp.headers["ETag"] == etag
        assert await resp.read() == b""

    resp, zipped = await get(loaded_either, path, **{"Accept-Encoding": "gzip, deflate"})
    assert resp.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(zipped) == body
    gz_etag = resp.headers["ETag"]
    assert gz_etag != etag
    resp, _ = await get(
        loaded_either, path, **{"Accept-Encoding": "gzip", "If-None-Match": gz_etag}
    )
    assert resp.status == 304
    resp, plain = await get(loaded_either, path, **{"Accept-Encoding": "gzip;q=0"})
    assert "Content-Encoding" not in resp.headers and plain == body


async def test_writes_invalidate_exactly_the_touched_feeds(
    loaded: Client, seed_articles: list[dict[str, Any]]
) -> None:
    watched = ["liver-health", "diabetes", "all"]

    async def etags() -> dict[str, str]:
        out = {}
        for topic in watched:
            resp, _ = await get(loaded, f"/feeds/{topic}.atom")
            out[topic] = resp.headers["ETag"] + resp.headers["Last-Modified"]
        return out

    cache = loaded.server.app[FEED_CACHE]
    before = await etags()
    renders = cache.renders
    assert await etags() == before
    assert cache.renders == renders, "reading an unchanged feed renders nothing"

    new = {
        "id": "liver-new",
        "title": "Fatty liver",
        "content": "<p>x</p>",
        "topics": ["liver-health"],
        "published_at": "2026-11-23T08:00:00Z",
    }
    async with loaded.request("POST", "/api/articles", json=new) as resp:
        assert resp.status == 201
    await asyncio.sleep(1.1)  # Last-Modified has one-second resolution
    after_post = await etags()
    assert after_post["liver-health"] != before["liver-health"]
    assert after_post["all"] != before["all"]
    assert after_post["diabetes"] == before["diabetes"]
    resp, body = await get(loaded, "/feeds/liver-health.atom")
    assert parse(resp, body).entries[0].title == "Fatty liver"

    async with loaded.request("PUT", "/api/articles/liver-new", json=new) as resp:
        assert resp.status == 200
    assert await etags() == after_post, "an unchanged PUT changes no feed"

    async with loaded.request(
        "PUT", "/api/articles/liver-new", json={**new, "title": "Fatty liver, revised"}
    ) as resp:
        assert resp.status == 200
    after_edit = await etags()
    assert after_edit["liver-health"] != after_post["liver-health"]
    assert after_edit["diabetes"] == before["diabetes"]

    async with loaded.request("DELETE", "/api/articles/liver-new") as resp:
        assert resp.status == 204
    after_delete = await etags()
    assert after_delete["liver-health"] != after_edit["liver-health"]
    resp, body = await get(loaded, "/feeds/liver-health.atom")
    assert [e.title for e in parse(resp, body).entries] == LIVER_TITLES

    async with loaded.request("PUT", "/api/topics/diabetes", json={"title": "Diabetes care"}) as r:
        assert r.status == 200
    resp, body = await get(loaded, "/feeds/diabetes.atom")
    assert parse(resp, body).feed.title == "Diabetes care"


async def test_paging_walks_every_article_once(
    start_server: ServerFactory, tokens: dict[str, str], seed_articles: list[dict[str, Any]]
) -> None:
    client = await start_server(feed_items=4)
    client.token = tokens["operator"]
    async with client.request("POST", "/api/articles/batch", json={"articles": seed_articles}):
        pass
    for fmt in FORMATS:
        seen: list[str] = []
        url: str | None = f"{client.base_url}/feeds/all.{fmt}"
        pages = 0
        while url:
            resp, body = await get(client, url.removeprefix(client.base_url))
            assert resp.status == 200
            pages += 1
            expected_age = 300 if pages == 1 else 86400
            assert resp.headers["Cache-Control"] == f"public, max-age={expected_age}"
            parsed = parse(resp, body)
            assert parsed.bozo == 0
            seen += [e.id for e in parsed.entries]
            if fmt == "json":
                url = json.loads(body).get("next_url")
            else:
                rels = {link.rel: link.href for link in parsed.feed.links}
                assert rels["first"] == f"{client.base_url}/feeds/all.{fmt}"
                url = rels.get("next")
        assert pages == 5
        assert len(seen) == len(set(seen)) == 18
    resp, _ = await get(client, "/feeds/all.rss?before=not-a-cursor")
    await expect_problem(resp, 422)


async def test_a_feed_survives_characters_xml_cannot_carry(client: Client) -> None:
    nasty = {
        "id": "nasty",
        "title": "Bad\u0000 chars\u0008 \ufffe here",
        "content": "<p>a\u0001b\u001fc \ud83d\ude00 שלום e\u0301</p>",
        "summary": "\u000bsum",
        "author": "\u0002A",
        "topics": ["t"],
    }
    async with client.request("POST", "/api/articles", json=nasty) as resp:
        assert resp.status == 201
    for fmt in FORMATS:
        resp, body = await get(client, f"/feeds/t.{fmt}")
        assert resp.status == 200
        parsed = parse(resp, body)
        assert parsed.bozo == 0, parsed.get("bozo_exception")
        assert parsed.entries[0].title == "Bad chars here"
        if fmt != "json":
            etree.fromstring(body)


async def test_an_rss_summary_is_text_in_every_reader(client: Client) -> None:
    """Issue 20, finding 1: RSS ``<description>`` is HTML to every reader, so a summary
    (plain text) must be escaped for HTML as well as for XML. It came out escaped once:
    feedparser showed a live ``<b onmouseover=...>``, and ``A & B < C`` was not HTML.
    Atom and JSON Feed carry it as text already; all three must show the same text."""
    summary = "<b onmouseover=alert(1)>summary</b> S: A & B < C"
    article = {
        "id": "s1",
        "title": "T",
        "content": "<p>body</p>",
        "summary": summary,
        "topics": ["t"],
    }
    async with client.request("POST", "/api/articles", json=article) as resp:
        assert resp.status == 201
    resp, body = await get(client, "/feeds/t.rss")
    item = etree.fromstring(body).find("channel/item")
    description = item.findtext("description")
    assert description == html.escape(summary, quote=False), "HTML text of the summary"
    assert "<b" not in parse(resp, body).entries[0].summary, "feedparser shows no live tag"
    encoded = item.findtext("{http://purl.org/rss/1.0/modules/content/}encoded")
    assert encoded == "<p>body</p>", "the full HTML in content:encoded"
    resp, body = await get(client, "/feeds/t.atom")
    assert parse(resp, body).entries[0].summary == summary, "Atom: type=text, as given"
    resp, body = await get(client, "/feeds/t.json")
    assert json.loads(body)["items"][0]["summary"] == summary, "JSON Feed: plain text"


@pytest.fixture
async def two_stores(database_url: str) -> AsyncIterator[tuple[Storage, Storage]]:
    """Two independent connections to one database (request before start_server,
    so they close after the servers using them have stopped)."""
    first, second = await open_storage(database_url), await open_storage(database_url)
    yield first, second
    await first.close()
    await second.close()


async def test_two_instances_on_one_database_stay_exact(
    two_stores: tuple[Storage, Storage], start_server: ServerFactory, tokens: dict[str, str]
) -> None:
    first_store, second_store = two_stores
    writer = await start_server(storage=first_store)
    writer.token = tokens["operator"]
    reader_app = await start_server(storage=second_store)
    article = {"id": "one", "title": "One", "content": "x", "topics": ["liver-health"]}
    async with writer.request("POST", "/api/articles", json=article) as resp:
        assert resp.status == 201
    resp, body = await get(reader_app, "/feeds/liver-health.atom")
    assert [e.title for e in parse(resp, body).entries] == ["One"]
    resp, body = await get(reader_app, "/feeds/liver-health.atom")

    article = {"id": "two", "title": "Two", "content": "x", "topics": ["liver-health"]}
    async with writer.request("POST", "/api/articles", json=article) as resp:
        assert resp.status == 201
    resp, body = await get(reader_app, "/feeds/liver-health.atom")
    assert [e.title for e in parse(resp, body).entries] == ["Two", "One"]
    async with writer.request("DELETE", "/api/articles/one") as resp:
        assert resp.status == 204
    resp, body = await get(reader_app, "/feeds/all.json")
    assert [i["title"] for i in json.loads(body)["items"]] == ["Two"]


async def run_cli(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "syndicate",
        *args,
        env=clean_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_a_write_by_another_process_shows_in_the_next_read(
    loaded: Client, database_url: str, tmp_path: Path
) -> None:
    """An operator imports with the CLI (another process) while the service serves
    cached feeds: the very next read has the article, and the old ETag gets a 200."""
    path = "/feeds/liver-health.rss"
    first, _ = await get(loaded, path)
    etag = first.headers["ETag"]
    for _ in range(2):  # cached and known current: answered without asking the database
        assert (await get(loaded, path, **{"If-None-Match": etag}))[0].status == 304
    new = {
        "id": "from-cli",
        "title": "From the CLI",
        "content": "<p>x</p>",
        "topics": ["liver-health"],
    }
    (tmp_path / "new.json").write_text(json.dumps({"articles": [new]}))
    await run_cli("import", str(tmp_path / "new.json"), "--database", database_url, "--no-progress")
    resp, body = await get(loaded, path, **{"If-None-Match": etag})
    assert resp.status == 200
    assert "From the CLI" in [e.title for e in parse(resp, body).entries]
    assert resp.headers["ETag"] != etag


async def test_sqlite_knows_its_feed_state_is_current_until_anyone_commits(
    tmp_path: Path,
) -> None:
    """SQLite answers an unchanged feed's state from memory (no I/O per request)
    until any process commits anything; then it asks again."""
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    store = await open_storage(url)
    try:
        item = ArticleIn.model_validate({"title": "T", "content": "x", "topics": ["t"]})
        await store.put_article(to_draft(item, host="127.0.0.1", article_id="a"))
        assert store.cached_feed_state("t") is None, "never read yet"
        state = await store.feed_state("t")
        assert store.cached_feed_state("t") == state
        await run_cli("token", "create", "--role", "partner", "--name", "p", "--database", url)
        assert store.cached_feed_state("t") is None, "another process committed"
        assert await store.feed_state("t") == state, "a commit elsewhere, the topic unchanged"
        assert store.cached_feed_state("t") == state
        await store.put_article(to_draft(item, host="127.0.0.1", article_id="b"))
        assert store.cached_feed_state("t") is None, "our own commit counts too"
        assert (await store.feed_state("t")).seq > state.seq
    finally:
        await store.close()
    assert store.cached_feed_state("t") is None, "closed: nothing is known"


async def test_reader_library_subscribes_polls_and_gets_304s(
    loaded: Client, tmp_path: Path
) -> None:
    import reader as reader_lib

    url = f"{loaded.base_url}/feeds/liver-health.rss"
    rdr = reader_lib.make_reader(str(tmp_path / "reader.sqlite"))

    def update() -> list[Any]:
        return [r.value for r in rdr.update_feeds_iter(scheduled=False)]

    try:
        await asyncio.to_thread(rdr.add_feed, url)
        results = await asyncio.to_thread(update)
        assert results[0] is not None and results[0].new == 4
        titles = [e.title or "" for e in await asyncio.to_thread(lambda: list(rdr.get_entries()))]
        assert sorted(titles) == sorted(LIVER_TITLES)
        for _ in range(2):
            results = await asyncio.to_thread(update)
            assert results == [None], "unchanged feed: the conditional request got 304"

        new = {
            "id": "liver-new",
            "title": "Fatty liver",
            "content": "<p>x</p>",
            "topics": ["liver-health"],
        }
        async with loaded.request("POST", "/api/articles", json=new) as resp:
            assert resp.status == 201
        results = await asyncio.to_thread(update)
        assert results[0] is not None and results[0].new == 1
        entry = await asyncio.to_thread(lambda: rdr.get_entry((url, new_guid(loaded, "liver-new"))))
        assert entry.title == "Fatty liver"
    finally:
        await asyncio.to_thread(rdr.close)


def new_guid(client: Client, article_id: str) -> str:
    year = datetime.now(UTC).year
    return f"tag:127.0.0.1,{year}:article/{article_id}"


async def test_feed_content_is_what_storage_holds(store: Storage, client: Client) -> None:
    item = ArticleIn.model_validate(
        {"title": "Md", "content": "# Head\n\n*em*", "content_type": "markdown", "topics": ["t"]}
    )
    await store.put_article(to_draft(item, host="127.0.0.1", article_id="md"))
    _, body = await get(client, "/feeds/t.json")
    doc = json.loads(body)
    assert doc["items"][0]["content_html"].startswith("<h1>Head</h1>")


async def test_large_feeds_arrive_whole_with_every_header(client: Client) -> None:
    """A feed of 50 long articles (~600 KB) goes out as headers then body: complete,
    with its length, request id and nosniff, and the connection still reusable."""
    text = "<p>" + "Calcified liver lesions are usually harmless. " * 250 + "</p>"
    articles = [
        {"id": f"long-{i}", "title": f"Long read {i}", "content": text, "topics": ["big"]}
        for i in range(50)
    ]
    async with client.request("POST", "/api/articles/batch", json={"articles": articles}) as r:
        assert r.status == 200
    for encoding in ("identity", "gzip", "identity"):
        resp, body = await get(client, "/feeds/big.rss", **{"Accept-Encoding": encoding})
        assert resp.status == 200
        assert int(resp.headers["Content-Length"]) == len(body)
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert len(resp.headers["X-Request-Id"]) == 32
        if encoding == "gzip":
            body = gzip.decompress(body)
        assert len(body) > 500_000
        parsed = feedparser.parse(body)
        assert parsed.bozo == 0 and len(parsed.entries) == 50
    async with client.request(
        "HEAD", "/feeds/big.rss", token="", headers={"Accept-Encoding": "identity"}
    ) as resp:
        assert resp.status == 200 and await resp.read() == b""
        assert int(resp.headers["Content-Length"]) > 500_000
