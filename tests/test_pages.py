"""The public HTML pages and OPML, read by a real client and parsed as HTML/XML."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import lxml.etree  # type: ignore[import-untyped]
import lxml.html  # type: ignore[import-untyped]
import pytest
from conftest import Client

CSP = (
    "default-src 'none'; img-src https: http: data:; style-src 'self' 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SEED_PAGE = "/articles/what-does-liver-calcification-mean"
XSS_TITLE = '<script>alert(1)</script> "><img src=x onerror=alert(1)>'
LIVER_HEALTH = {
    "How to treat jaundice hepatitis",
    "What causes the liver to have a rough surface?",
    "What are the common causes of high bilirubin?",
}


async def load(client: Client, articles: list[dict[str, Any]]) -> None:
    async with client.request("POST", "/api/articles/batch", json={"articles": articles}) as resp:
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["rejected"] == 0


async def get_page(client: Client, url: str, status: int = 200, *, lang: str = "en") -> Any:
    """GET a page (path or absolute URL) without a token; check the HTML basics."""
    full = url if url.startswith("http") else client.url(url)
    async with client.session.get(full) as resp:
        text = await resp.text()
        assert resp.status == status, text
        assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
        assert resp.headers["Content-Security-Policy"] == CSP
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
    assert text.startswith("<!doctype html>")
    doc = lxml.html.document_fromstring(text)
    assert doc.get("lang") == lang
    assert doc.xpath("//head/meta[@charset='utf-8']")
    assert doc.xpath("//head/meta[@name='viewport']/@content") == [
        "width=device-width, initial-scale=1"
    ]
    return doc


def text_of(element: Any) -> str:
    return " ".join(element.text_content().split())


def alternates(doc: Any) -> list[tuple[str, str, str]]:
    return [
        (link.get("type"), link.get("title"), link.get("href"))
        for link in doc.xpath("//head/link[@rel='alternate']")
    ]


def assert_no_script(doc: Any) -> None:
    """Nothing runs: the only script element is JSON-LD data, which never executes."""
    assert not doc.xpath("//script[not(@type='application/ld+json')]")
    for element in doc.iter():
        if isinstance(element.tag, str):
            assert not [a for a in element.attrib if a.lower().startswith("on")], element.tag


async def test_article_page_like_the_seed(
    client: Client, seed_articles: list[dict[str, Any]]
) -> None:
    await load(client, seed_articles)
    doc = await get_page(client, SEED_PAGE)
    assert [text_of(h) for h in doc.xpath("//h1")] == ["What does liver calcification mean?"]
    assert doc.xpath("//title/text()") == ["What does liver calcification mean? — Syndicate"]
    content = doc.xpath("//div[@class='content']")[0]
    headings = [text_of(h) for h in content.xpath(".//h2")]
    assert headings[:3] == [
        "1. What is intrahepatic calcification?",
        "2. Pathological Causes",
        "3. Diagnosis and Differentiation",
    ]
    assert "liver calcification is not as scary" in text_of(content)
    meta = text_of(doc.xpath("//p[@class='meta']")[0])
    assert meta == "21 November 2026 · Health desk · Liver health"
    assert doc.xpath("//p[@class='meta']/time/@datetime") == ["2026-11-21T08:00:00Z"]
    assert doc.xpath("//head/link[@rel='canonical']/@href") == [client.url(SEED_PAGE)]
    feed = client.url("/feeds/liver-health")
    assert alternates(doc) == [
        ("application/rss+xml", "Liver health (RSS)", f"{feed}.rss"),
        ("application/atom+xml", "Liver health (Atom)", f"{feed}.atom"),
        ("application/feed+json", "Liver health (JSON Feed)", f"{feed}.json"),
    ]

    (previous,) = doc.xpath("//nav[@class='pager']/a[@rel='prev']")
    (following,) = doc.xpath("//nav[@class='pager']/a[@rel='next']")
    assert text_of(previous) == "« previous What causes the liver to have a rough surface?"
    assert text_of(following) == "next » How to treat jaundice hepatitis"
    assert following.get("href") == client.url("/articles/how-to-treat-jaundice-hepatitis")

    items = doc.xpath("//section[@class='recommended']//li")
    titles = [text_of(li.xpath(".//a")[0]) for li in items]
    assert len(titles) == 5 and len(set(titles)) == 5
    assert set(titles[:3]) == LIVER_HEALTH, "same-topic articles come first"
    assert titles[3:] == [
        "Does moxibustion after ovulation have any impact on pregnancy?",
        "Why does my waist hurt after sitting for a long time?",
    ]
    for li in items:
        snippet = text_of(li.xpath(".//p[@class='excerpt']")[0])
        assert 20 <= len(snippet) <= 71
    bilirubin = text_of(items[2].xpath(".//p")[0])
    assert bilirubin == "The symptoms of high bilirubin are quite obvious…."
    # A long summary is cut short, as on the seed page.
    jaundice = await get_page(client, following.get("href"))
    recommended = jaundice.xpath("//section[@class='recommended']//li")
    (calcification,) = [li for li in recommended if SEED_PAGE in li.xpath(".//a/@href")[0]]
    snippet = text_of(calcification.xpath(".//p[@class='excerpt']")[0])
    assert snippet == "Some people found some calcification foci in the liver during liver…"

    # Every link on the page leads somewhere, feed autodiscovery links included.
    hrefs = {a.get("href") for a in doc.xpath("//a[@href]")} | {h for _, _, h in alternates(doc)}
    assert all(h.startswith(client.base_url + "/") for h in hrefs), hrefs
    for href in sorted(hrefs):
        async with client.session.get(href) as resp:
            assert resp.status == 200, href


async def test_untrusted_text_is_escaped_and_content_keeps_its_structure(
    client: Client, seed_articles: list[dict[str, Any]]
) -> None:
    await load(client, seed_articles)
    evil = {
        "id": "evil",
        "slug": "evil",
        "title": XSS_TITLE,
        "author": XSS_TITLE,
        "summary": XSS_TITLE,
        "topics": ["liver-health"],
        "content": '<h2>Kept</h2><script>alert(2)</script><p onclick="x()">Para'
        '<img src="https://img.example/a.png" onerror="alert(3)"></p>',
        "published_at": "2026-11-30T00:00:00Z",
    }
    topic = {"title": '<b>Liver</b> & "co"', "description": "</p><script>alert(4)</script>"}
    async with client.request("PUT", "/api/topics/liver-health", json=topic) as resp:
        assert resp.status == 200, await resp.text()
    await load(client, [evil])

    doc = await get_page(client, "/articles/evil")
    assert_no_script(doc)
    assert text_of(doc.xpath("//h1")[0]) == " ".join(XSS_TITLE.split())
    assert doc.xpath("//title/text()") == [f"{XSS_TITLE} — Syndicate"]
    assert text_of(doc.xpath("//span[@class='author']")[0]) == " ".join(XSS_TITLE.split())
    assert doc.xpath("//head/meta[@name='description']/@content") == [XSS_TITLE]
    content = doc.xpath("//div[@class='content']")[0]
    assert [text_of(h) for h in content.xpath("h2")] == ["Kept"]
    assert content.xpath("p/img/@src") == ["https://img.example/a.png"]
    assert alternates(doc)[0][1] == '<b>Liver</b> & "co" (RSS)'
    assert [text_of(a) for a in doc.xpath("//span[@class='topics']/a")] == ['<b>Liver</b> & "co"']

    for path in ("/topics/liver-health", "/", SEED_PAGE):
        page = await get_page(client, path)
        assert_no_script(page)
        assert not page.xpath("//b")
    topic_page = await get_page(client, "/topics/liver-health")
    assert text_of(topic_page.xpath("//h1")[0]) == '<b>Liver</b> & "co"'
    assert text_of(topic_page.xpath("//ul[@class='items articles']//a")[0]) == " ".join(
        XSS_TITLE.split()
    )


async def test_topic_page_lists_newest_first_with_feed_autodiscovery(
    client: Client, seed_articles: list[dict[str, Any]]
) -> None:
    await load(client, seed_articles)
    doc = await get_page(client, "/topics/liver-health")
    assert text_of(doc.xpath("//h1")[0]) == "Liver health"
    feed = client.url("/feeds/liver-health")
    assert alternates(doc) == [
        ("application/rss+xml", "Liver health (RSS)", f"{feed}.rss"),
        ("application/atom+xml", "Liver health (Atom)", f"{feed}.atom"),
        ("application/feed+json", "Liver health (JSON Feed)", f"{feed}.json"),
    ]
    items = doc.xpath("//ul[@class='items articles']/li")
    assert [text_of(li.xpath("h2")[0]) for li in items] == [
        "How to treat jaundice hepatitis",
        "What does liver calcification mean?",
        "What causes the liver to have a rough surface?",
        "What are the common causes of high bilirubin?",
    ]
    first = items[1]
    assert first.xpath("h2/a/@href") == [client.url(SEED_PAGE)]
    assert text_of(first.xpath("p[@class='meta']")[0]) == "21 November 2026 · Health desk"
    snippet = text_of(first.xpath("p[@class='excerpt']")[0])
    assert snippet.startswith("Some people found some calcification foci in the liver")
    assert snippet.endswith("…") and 100 <= len(snippet) <= 161
    assert not doc.xpath("//nav[@class='pager']"), "one page only"


async def test_topic_paging_walks_every_article_once(client: Client) -> None:
    articles = [
        {
            "id": f"p{i:02d}",
            "title": f"Paged article {i}",
            "content": f"<p>Body {i}</p>",
            "topics": ["paging"],
            # Pairs share a timestamp so the id breaks ties across page edges.
            "published_at": f"2026-10-{1 + i // 2:02d}T12:00:00Z",
        }
        for i in range(45)
    ]
    await load(client, articles)
    expected = [a["title"] for a in sorted(articles, key=lambda a: (a["published_at"], a["id"]))]
    expected.reverse()

    seen: list[str] = []
    pages: list[str] = []
    url: str | None = client.url("/topics/paging")
    while url is not None:
        pages.append(url)
        doc = await get_page(client, url)
        seen += [text_of(h) for h in doc.xpath("//ul[@class='items articles']/li/h2")]
        older = doc.xpath("//nav[@class='pager']/a[@class='older']/@href")
        url = older[0] if older else None
        assert len(pages) < 10
    assert seen == expected
    assert len(pages) == 3

    last = await get_page(client, pages[2])
    newer = last.xpath("//a[@class='newer']/@href")
    assert newer == [pages[1]]
    middle = await get_page(client, pages[1])
    assert middle.xpath("//a[@class='newer']/@href") == [client.url("/topics/paging")]
    assert middle.xpath("//head/meta[@name='robots']/@content") == ["noindex, follow"]


async def test_missing_and_deleted_pages_are_html(
    client: Client, seed_articles: list[dict[str, Any]]
) -> None:
    await load(client, seed_articles)
    async with client.request("DELETE", "/api/articles/liver-calcification") as resp:
        assert resp.status == 204
    gone = await get_page(client, SEED_PAGE, 410)
    assert text_of(gone.xpath("//h1")[0]) == "This article was deleted"
    for path in ("/articles/no-such-article", "/topics/no-such-topic", "/topics/Not_A_Slug"):
        missing = await get_page(client, path, 404)
        assert text_of(missing.xpath("//h1")[0]) == "Page not found"
    await get_page(client, "/topics/liver-health?before=garbage", 400)

    # The neighbours now skip the deleted article.
    doc = await get_page(client, "/articles/how-to-treat-jaundice-hepatitis")
    (previous,) = doc.xpath("//a[@rel='prev']")
    assert text_of(previous) == "« previous What causes the liver to have a rough surface?"
    recommended = [text_of(a) for a in doc.xpath("//section[@class='recommended']//h3/a")]
    assert "What does liver calcification mean?" not in recommended


async def test_index_lists_topics_with_feeds(
    client: Client, seed_articles: list[dict[str, Any]]
) -> None:
    await load(client, seed_articles)
    doc = await get_page(client, "/")
    topics = doc.xpath("//ul[@class='items topics']/li")
    assert len(topics) == len({t for a in seed_articles for t in a["topics"]}) == 10
    (liver,) = [li for li in topics if text_of(li.xpath("h3")[0]) == "Liver health"]
    assert liver.xpath("h3/a/@href") == [client.url("/topics/liver-health")]
    assert text_of(liver.xpath(".//span[@class='count']")[0]) == "4 articles"
    feed = client.url("/feeds/liver-health")
    assert liver.xpath(".//p[@class='meta']/a/@href") == [
        f"{feed}.rss",
        f"{feed}.atom",
        f"{feed}.json",
    ]
    hrefs = set(doc.xpath("//main//a/@href"))
    all_feed = client.url("/feeds/all")
    assert {f"{all_feed}.rss", f"{all_feed}.atom", f"{all_feed}.json"} <= hrefs
    assert client.url("/opml") in hrefs
    assert [t for t, _, _ in alternates(doc)] == [
        "application/rss+xml",
        "application/atom+xml",
        "application/feed+json",
    ]


async def test_opml_lists_every_topic_feed(
    client: Client, seed_articles: list[dict[str, Any]]
) -> None:
    async with client.session.get(client.url("/opml")) as resp:
        empty = lxml.etree.fromstring(await resp.read())
    assert len(empty.xpath("//outline")) == 1
    assert not empty.xpath("//dateCreated")

    await load(client, seed_articles)
    async with client.session.get(client.url("/opml")) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/x-opml; charset=utf-8"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        body = await resp.read()
    async with client.session.get(client.url("/opml")) as resp:
        assert await resp.read() == body, "the same data gives the same document"
    root = lxml.etree.fromstring(body)
    assert root.tag == "opml" and root.get("version") == "2.0"
    assert root.findtext("head/dateCreated")
    outlines = root.xpath("/opml/body/outline")
    assert len(outlines) == 10 + 1
    assert {o.get("type") for o in outlines} == {"rss"}
    by_url = {o.get("xmlUrl"): o for o in outlines}
    assert client.url("/feeds/all.rss") in by_url
    liver = by_url[client.url("/feeds/liver-health.rss")]
    assert liver.get("text") == liver.get("title") == "Liver health"
    assert liver.get("htmlUrl") == client.url("/topics/liver-health")
    for outline in outlines:
        assert outline.get("xmlUrl").startswith(client.base_url + "/feeds/")
        async with client.session.get(outline.get("htmlUrl")) as resp:
            assert resp.status == 200


async def test_non_ascii_slug_is_reachable_by_its_encoded_link(client: Client) -> None:
    article = {
        "id": "liver-zh",
        "title": "肝脏钙化",
        "content": "<p>肝内钙化灶</p>",
        "topics": ["liver-health"],
        "language": "zh",
    }
    await load(client, [article])
    topic = await get_page(client, "/topics/liver-health")
    (href,) = topic.xpath("//ul[@class='items articles']//a/@href")
    assert href.isascii() and unquote(href) == client.url("/articles/肝脏钙化")
    doc = await get_page(client, href, lang="zh")
    assert text_of(doc.xpath("//h1")[0]) == "肝脏钙化"
    assert doc.xpath("//link[@rel='canonical']/@href") == [href]


@pytest.mark.parametrize("path", ["/", "/topics/liver-health", SEED_PAGE, "/opml"])
async def test_head_answers_without_a_body(
    client: Client, seed_article: dict[str, Any], path: str
) -> None:
    await load(client, [seed_article])
    async with client.session.head(client.url(path)) as resp:
        assert resp.status == 200
        assert resp.headers["Cache-Control"] == "public, max-age=60"
        assert await resp.read() == b""


async def test_article_id_redirects_to_its_page(
    client: Client, seed_article: dict[str, Any]
) -> None:
    async with client.request("PUT", "/api/articles/liver-calcification", json=seed_article) as r:
        assert r.status == 201
    async with client.request("GET", "/articles/liver-calcification", allow_redirects=False) as r:
        assert r.status == 301
        assert r.headers["Location"] == (
            f"{client.base_url}/articles/what-does-liver-calcification-mean"
        )
    async with client.request("GET", "/articles/liver-calcification") as r:
        assert r.status == 200
        assert "What does liver calcification mean?" in await r.text()
    async with client.request("GET", "/articles/no-such-id", allow_redirects=False) as r:
        assert r.status == 404
