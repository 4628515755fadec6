"""``/sitemap.xml`` (and its index past the URL limit), ``/sitemap-news.xml`` and
``/robots.txt``, read as a crawler would and checked against the sitemaps.org schemas
(tests/fixtures/sitemaps, the protocol's own XSDs)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import lxml.etree  # type: ignore[import-untyped]
import pytest
from conftest import FIXTURES, Client

from syndicate.web.routes import sitemaps

NS = {"s": "http://www.sitemaps.org/schemas/sitemap/0.9"}
NEWS = {**NS, "n": "http://www.google.com/schemas/sitemap-news/0.9"}
URLSET = lxml.etree.XMLSchema(lxml.etree.parse(str(FIXTURES / "sitemaps" / "sitemap.xsd")))
INDEX = lxml.etree.XMLSchema(lxml.etree.parse(str(FIXTURES / "sitemaps" / "siteindex.xsd")))


def rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def load(client: Client, articles: list[dict[str, Any]]) -> list[dict[str, Any]]:
    async with client.request("POST", "/api/articles/batch", json={"articles": articles}) as resp:
        body = await resp.json()
        assert resp.status == 200 and body["rejected"] == 0, body
    return articles


async def fetch_xml(client: Client, url: str, schema: Any = URLSET) -> Any:
    async with client.session.get(url) as resp:
        body = await resp.read()
        assert resp.status == 200, body
        assert resp.headers["Content-Type"] == "application/xml; charset=utf-8"
    root = lxml.etree.fromstring(body)
    if schema is not None:
        schema.assertValid(root)
    return root


def urls_of(root: Any) -> dict[str, str | None]:
    """loc -> lastmod of every url in a urlset."""
    return {
        url.findtext("s:loc", namespaces=NS): url.findtext("s:lastmod", namespaces=NS)
        for url in root.xpath("/s:urlset/s:url", namespaces=NS)
    }


async def test_robots_txt_names_both_sitemaps(client: Client) -> None:
    async with client.session.get(client.url("/robots.txt")) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
        lines = (await resp.text()).splitlines()
    assert "User-agent: *" in lines and "Disallow: /api/" in lines
    named = [line.removeprefix("Sitemap: ") for line in lines if line.startswith("Sitemap: ")]
    assert named == [client.url("/sitemap.xml"), client.url("/sitemap-news.xml")]
    for url in named:
        await fetch_xml(client, url, schema=None)


async def test_the_sitemap_lists_every_page_a_reader_can_see(
    client: Client, seed_articles: list[dict[str, Any]]
) -> None:
    elsewhere = {**seed_articles[0], "id": "elsewhere", "slug": "elsewhere"}
    elsewhere["url"] = "https://news.example.org/the-original"
    later = datetime.now(UTC) + timedelta(days=1)
    scheduled = {**seed_articles[0], "id": "later", "slug": "later", "published_at": rfc3339(later)}
    await load(client, [*seed_articles, elsewhere, scheduled])
    edited = {**seed_articles[1], "content": "<p>Corrected.</p>"}
    async with client.request("PUT", f"/api/articles/{edited['id']}", json=edited) as resp:
        changed = (await resp.json())["updated_at"][:19] + "Z"

    root = await fetch_xml(client, client.url("/sitemap.xml"))
    found = urls_of(root)
    topics = {t for a in seed_articles for t in a["topics"]}
    assert len(found) == 1 + len(topics) + len(seed_articles)
    assert client.url("/") in found
    assert {client.url(f"/topics/{t}") for t in topics} <= set(found)
    assert client.url("/articles/elsewhere") not in found, "its canonical page is elsewhere"
    assert client.url("/articles/later") not in found, "not published yet"
    jaundice = client.url("/articles/how-to-treat-jaundice-hepatitis")
    assert found[jaundice] == "2026-11-22T08:00:00Z", "never changed: its publication"
    async with client.request("GET", f"/api/articles/{edited['id']}") as resp:
        edited_url = (await resp.json())["url"]
    assert found[edited_url] == changed
    assert found[client.url("/")] == max(v for v in found.values() if v)
    for loc in list(found)[:5]:
        async with client.session.get(loc) as resp:
            assert resp.status == 200, loc

    async with client.session.get(client.url("/sitemap.xml")) as resp:
        etag = resp.headers["ETag"]
        assert resp.headers["Cache-Control"] == "public, max-age=60"
        assert resp.headers["Last-Modified"]
    async with client.session.get(
        client.url("/sitemap.xml"), headers={"If-None-Match": etag}
    ) as resp:
        assert resp.status == 304 and resp.headers["ETag"] == etag


async def test_past_the_url_limit_the_sitemap_is_an_index_of_numbered_sitemaps(
    client: Client, seed_articles: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sitemaps, "SITEMAP_MAX_URLS", 5)
    monkeypatch.setattr(sitemaps, "READ_CHUNK", 3)
    await load(client, seed_articles)
    index = await fetch_xml(client, client.url("/sitemap.xml"), schema=INDEX)
    children = index.xpath("/s:sitemapindex/s:sitemap/s:loc/text()", namespaces=NS)
    assert children == [
        client.url("/sitemaps/pages.xml"),
        *(client.url(f"/sitemaps/articles-{n}.xml") for n in range(1, 5)),
    ]
    pages = urls_of(await fetch_xml(client, children[0]))
    assert client.url("/") in pages and client.url("/topics/liver-health") in pages
    listed: list[str] = []
    for child in children[1:]:
        found = urls_of(await fetch_xml(client, child))
        assert 1 <= len(found) <= 5 and all(found.values())
        listed += found
    assert len(listed) == len(set(listed)) == len(seed_articles)
    assert listed[0] == client.url("/articles/how-to-treat-jaundice-hepatitis"), "newest first"
    async with client.session.get(client.url("/sitemaps/articles-5.xml")) as resp:
        assert resp.status == 404


async def test_the_news_sitemap_holds_the_last_two_days(client: Client) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    articles = [
        {
            "id": "fresh",
            "title": "Fresh & new < news ]]>",
            "content": "<p>Today.</p>",
            "topics": ["news"],
            "language": "zh-Hant-TW",
            "published_at": rfc3339(now - timedelta(hours=1)),
        },
        {
            "id": "yesterday",
            "title": "أخبار الأمس",
            "content": "<p>Yesterday.</p>",
            "topics": ["news"],
            "language": "ar",
            "published_at": rfc3339(now - timedelta(hours=47)),
        },
        {
            "id": "plain",
            "title": "No language given",
            "content": "<p>Plain.</p>",
            "topics": ["news"],
            "published_at": rfc3339(now - timedelta(hours=20)),
        },
        {
            "id": "old",
            "title": "Three days old",
            "content": "<p>Old.</p>",
            "topics": ["news"],
            "published_at": rfc3339(now - timedelta(days=3)),
        },
    ]
    await load(client, articles)
    root = await fetch_xml(client, client.url("/sitemap-news.xml"), schema=None)
    assert root.tag == "{http://www.sitemaps.org/schemas/sitemap/0.9}urlset"
    entries = [
        (
            url.findtext("s:loc", namespaces=NEWS),
            url.findtext("n:news/n:publication/n:name", namespaces=NEWS),
            url.findtext("n:news/n:publication/n:language", namespaces=NEWS),
            url.findtext("n:news/n:publication_date", namespaces=NEWS),
            url.findtext("n:news/n:title", namespaces=NEWS),
        )
        for url in root.xpath("/s:urlset/s:url", namespaces=NEWS)
    ]
    assert [e[4] for e in entries] == ["Fresh & new < news ]]>", "No language given", "أخبار الأمس"]
    assert [e[2] for e in entries] == ["zh-tw", "en", "ar"]
    assert {e[1] for e in entries} == {"Syndicate"}
    assert entries[0][3] == articles[0]["published_at"]
    assert entries[0][0].startswith(client.url("/articles/"))


async def test_a_cached_sitemap_changes_with_the_articles(client: Client) -> None:
    """Built sitemaps are kept (each walks every listed article) until the change log
    moves: a new article is in the next one, a deleted one gone."""

    def article(n: int) -> dict[str, Any]:
        return {"id": f"c{n}", "title": f"Cached {n}", "content": "<p>x</p>", "topics": ["t"]}

    await load(client, [article(1)])
    first = urls_of(await fetch_xml(client, client.url("/sitemap.xml")))
    assert urls_of(await fetch_xml(client, client.url("/sitemap.xml"))) == first
    await load(client, [article(2)])
    second = urls_of(await fetch_xml(client, client.url("/sitemap.xml")))
    assert set(second) - set(first) == {
        client.url("/articles/cached-2"),
        client.url("/topics/t"),
    } - set(first)
    async with client.request("DELETE", "/api/articles/c1") as resp:
        assert resp.status == 204
    third = urls_of(await fetch_xml(client, client.url("/sitemap.xml")))
    assert client.url("/articles/cached-1") not in third
    assert client.url("/articles/cached-2") in third
