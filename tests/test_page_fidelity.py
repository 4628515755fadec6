"""Pages as browsers, search engines and link previews read them (issue 20): language
and direction, the article's image, OpenGraph and Twitter cards, JSON-LD, the
"Updated" line, the home page's latest articles, scheduled articles."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import lxml.html  # type: ignore[import-untyped]
from conftest import Client

from storage import Storage

ARABIC: dict[str, Any] = {
    "id": "arabic",
    "slug": "arabic",
    "title": "ما هو تكلس الكبد؟",
    "summary": "قد يجد بعض الناس بؤر تكلس في الكبد.",
    "content": "<p>التكلس داخل الكبد ليس مخيفًا كما يبدو.</p>",
    "topics": ["liver-health"],
    "author": "مكتب الصحة",
    "language": "ar",
    "published_at": "2026-11-20T08:00:00Z",
}
ENGLISH: dict[str, Any] = {
    "id": "english",
    "slug": "english",
    "title": "What does liver calcification mean?",
    "content": "<p>Not as scary as it sounds.</p>",
    "topics": ["liver-health"],
    "language": "en-GB",
    "published_at": "2026-11-21T08:00:00Z",
}


async def load(client: Client, *articles: dict[str, Any]) -> None:
    async with client.request("POST", "/api/articles/batch", json={"articles": articles}) as resp:
        body = await resp.json()
        assert resp.status == 200 and body["rejected"] == 0, body


async def page(client: Client, path: str, status: int = 200) -> Any:
    async with client.session.get(client.url(path)) as resp:
        text = await resp.text()
        assert resp.status == status, text
    return lxml.html.document_fromstring(text)


def text_of(element: Any) -> str:
    return " ".join(element.text_content().split())


def lang_dir(element: Any) -> tuple[str | None, str | None]:
    return element.get("lang"), element.get("dir")


async def test_pages_carry_the_language_and_direction_of_their_text(client: Client) -> None:
    kurdish = {**ARABIC, "id": "sorani", "slug": "sorani", "title": "کلسبوونی جگەر"}
    kurdish.update(language="ku-Arab", published_at="2026-11-19T08:00:00Z")
    sindhi = {**ENGLISH, "id": "sindhi", "slug": "sindhi", "title": "जिगर जो कैल्सीफिकेशन"}
    sindhi.update(language="sd-Deva", published_at="2026-11-18T08:00:00Z")
    await load(client, ARABIC, ENGLISH, kurdish, sindhi)

    arabic = await page(client, "/articles/arabic")
    assert lang_dir(arabic) == ("ar", "rtl")
    assert text_of(arabic.xpath("//h1")[0]) == ARABIC["title"]
    # The site's own words stay English, left to right, inside the Arabic page.
    for chrome in arabic.xpath("//header | //footer | //p[@class='meta'] | //nav[@class='pager']"):
        assert lang_dir(chrome) == ("en", "ltr"), chrome.tag
    assert lang_dir(arabic.xpath("//span[@class='author']")[0]) == ("ar", "rtl")
    (newer,) = arabic.xpath("//nav[@class='pager']/a[@rel='next']/cite")
    assert lang_dir(newer) == ("en-GB", None), "same direction as the English around it"
    (older,) = arabic.xpath("//nav[@class='pager']/a[@rel='prev']/cite")
    assert lang_dir(older) == ("ku-Arab", "rtl")

    english = await page(client, "/articles/english")
    assert lang_dir(english) == ("en-GB", "ltr")
    assert lang_dir(await page(client, "/articles/sorani")) == ("ku-Arab", "rtl")
    assert lang_dir(await page(client, "/articles/sindhi")) == ("sd-Deva", "ltr")
    recommended = {
        text_of(li.xpath(".//a")[0]): lang_dir(li)
        for li in english.xpath("//section[@class='recommended']//li")
    }
    assert recommended[ARABIC["title"]] == ("ar", "rtl")

    topic = await page(client, "/topics/liver-health")
    assert lang_dir(topic) == ("en", "ltr")
    items = {
        text_of(li.xpath("h2")[0]): lang_dir(li)
        for li in topic.xpath("//ul[@class='items articles']/li")
    }
    assert items[ARABIC["title"]] == ("ar", "rtl")
    assert items[ENGLISH["title"]] == ("en-GB", None)
    assert items[sindhi["title"]] == ("sd-Deva", None)


def meta(doc: Any, key: str) -> list[str]:
    """The contents of ``<meta property=key>`` (OpenGraph) or ``<meta name=key>``."""
    found: list[str] = doc.xpath(f"//head/meta[@property='{key}' or @name='{key}']/@content")
    return found


def json_ld(doc: Any) -> dict[str, Any]:
    (script,) = doc.xpath("//script[@type='application/ld+json']")
    data: dict[str, Any] = json.loads(script.text)
    return data


async def test_the_article_image_reaches_the_page_and_link_previews(client: Client) -> None:
    image = "https://img.example.org/liver.jpg?size=large&fmt=jpg"
    canonical = "https://news.example.org/liver?id=1&lang=ar"
    await load(client, {**ARABIC, "image": image, "url": canonical}, ENGLISH)

    doc = await page(client, "/articles/arabic")
    (figure,) = doc.xpath("//article/figure")
    assert figure.xpath("img/@src") == [image] and figure.xpath("img/@alt") == [""]
    assert doc.xpath("//head/link[@rel='canonical']/@href") == [canonical]
    assert meta(doc, "og:type") == ["article"]
    assert meta(doc, "og:title") == meta(doc, "twitter:title") == [ARABIC["title"]]
    assert meta(doc, "og:description") == [ARABIC["summary"]]
    assert meta(doc, "og:url") == [canonical]
    assert meta(doc, "og:image") == meta(doc, "twitter:image") == [image]
    assert meta(doc, "og:site_name") == ["Syndicate"]
    assert meta(doc, "og:locale") == ["ar"]
    assert meta(doc, "twitter:card") == ["summary_large_image"]
    assert meta(doc, "article:published_time") == ["2026-11-20T08:00:00Z"]
    assert meta(doc, "article:modified_time") == ["2026-11-20T08:00:00Z"]
    assert meta(doc, "article:section") == meta(doc, "article:tag") == ["Liver health"]

    plain = await page(client, "/articles/english")
    assert not plain.xpath("//figure") and not meta(plain, "og:image")
    assert meta(plain, "twitter:card") == ["summary"]
    assert meta(plain, "og:locale") == ["en_GB"]
    assert meta(plain, "og:url") == [client.url("/articles/english")]


async def test_json_ld_describes_the_article_and_no_field_can_end_its_script(
    client: Client,
) -> None:
    hostile = "</script><script>alert(1)</script><!-- & -->"
    article = {
        **ENGLISH,
        "title": f"Title {hostile}",
        "summary": f"Summary {hostile}",
        "author": f"Author {hostile}",
        "image": "https://img.example.org/a.png?x=%3C/script%3E",
    }
    await load(client, article, ARABIC)
    async with client.session.get(client.url("/articles/english")) as resp:
        html = await resp.text()
    assert html.count("</script>") == 1 and html.count("<script") == 1
    doc = lxml.html.document_fromstring(html)
    assert not doc.xpath("//script[not(@type='application/ld+json')]")
    data = json_ld(doc)
    assert data == {
        "@context": "https://schema.org",
        "@type": "Article",
        "headline": article["title"],
        "description": article["summary"],
        "url": client.url("/articles/english"),
        "mainEntityOfPage": {"@type": "WebPage", "@id": client.url("/articles/english")},
        "datePublished": "2026-11-21T08:00:00Z",
        "dateModified": "2026-11-21T08:00:00Z",
        "author": {"@type": "Person", "name": article["author"]},
        "publisher": {"@type": "Organization", "name": "Syndicate", "url": client.url("/")},
        "image": [article["image"]],
        "inLanguage": "en-GB",
        "articleSection": ["Liver health"],
    }
    arabic = json_ld(await page(client, "/articles/arabic"))
    assert arabic["author"] == {"@type": "Person", "name": ARABIC["author"]}
    assert arabic["inLanguage"] == "ar" and "image" not in arabic


async def test_an_article_changed_after_publication_says_when(client: Client) -> None:
    await load(client, ENGLISH)
    fresh = await page(client, "/articles/english")
    assert not fresh.xpath("//p[@class='updated']"), "an imported article is not 'updated'"
    assert json_ld(fresh)["dateModified"] == "2026-11-21T08:00:00Z"
    assert json_ld(fresh)["author"] == json_ld(fresh)["publisher"], "no author: the site"

    edited = {**ENGLISH, "content": "<p>Corrected: not as scary as it sounds.</p>"}
    async with client.request("PUT", "/api/articles/english", json=edited) as resp:
        assert resp.status == 200
        stored = await resp.json()
    assert stored["version"] == 2
    changed = stored["updated_at"][:19] + "Z"
    doc = await page(client, "/articles/english")
    (line,) = doc.xpath("//p[@class='updated']")
    assert line.xpath("time/@datetime") == [changed]
    assert text_of(line).startswith("Updated ")
    assert doc.xpath("//p[@class='meta']/time/@datetime") == ["2026-11-21T08:00:00Z"]
    assert json_ld(doc)["dateModified"] == changed
    assert meta(doc, "article:modified_time") == [changed]
    assert json_ld(doc)["datePublished"] == "2026-11-21T08:00:00Z"


async def test_the_home_page_shows_the_latest_articles_as_well_as_the_topics(
    client: Client, seed_articles: list[dict[str, Any]]
) -> None:
    await load(client, *seed_articles, ARABIC)
    doc = await page(client, "/")
    newest = sorted([*seed_articles, ARABIC], key=lambda a: a["published_at"], reverse=True)
    items = doc.xpath("//section[@class='latest']//li")
    assert [text_of(li.xpath("h3")[0]) for li in items] == [a["title"] for a in newest[:10]]
    first = items[0]
    assert first.xpath("h3/a/@href") == [client.url("/articles/how-to-treat-jaundice-hepatitis")]
    assert first.xpath("p[@class='meta']/time/@datetime") == ["2026-11-22T08:00:00Z"]
    excerpt = text_of(first.xpath("p[@class='excerpt']")[0])
    assert 20 <= len(excerpt) <= 161
    (arabic,) = [li for li in items if text_of(li.xpath("h3")[0]) == ARABIC["title"]]
    assert lang_dir(arabic) == ("ar", "rtl")
    assert text_of(arabic.xpath("p[@class='excerpt']")[0]) == ARABIC["summary"]
    assert len(doc.xpath("//ul[@class='items topics']/li")) == 10, "the topics are still there"


async def test_a_scheduled_article_has_no_page_until_it_is_published(
    client: Client, store: Storage
) -> None:
    due = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    scheduled = {**ENGLISH, "published_at": due.isoformat().replace("+00:00", "Z")}
    await load(client, scheduled, ARABIC)
    missing = await page(client, "/articles/english", 404)
    assert text_of(missing.xpath("//h1")[0]) == "Page not found"
    async with client.session.get(client.url("/articles/english"), allow_redirects=False) as r:
        assert r.status == 404, "no redirect from its id either"
    for path in ("/", "/topics/liver-health", "/articles/arabic"):
        assert ENGLISH["title"] not in text_of(await page(client, path)), path

    assert [a.id for a in await store.publish_due(now=due + timedelta(seconds=1))] == ["english"]
    doc = await page(client, "/articles/english")
    assert text_of(doc.xpath("//h1")[0]) == ENGLISH["title"]
    assert doc.xpath("//p[@class='meta']/time/@datetime") == [f"{due:%Y-%m-%dT%H:%M:%S}Z"]
    home = await page(client, "/")
    assert ENGLISH["title"] in [text_of(h) for h in home.xpath("//section[@class='latest']//h3")]


async def test_an_extension_subtag_is_no_script_subtag(client: Client) -> None:
    """``ar-u-nu-latn`` is Arabic with Latin digits: right to left. ``latn`` in an
    extension or private use says nothing of the script (an outside reviewer's find)."""
    tags = {
        "fa-IR-u-nu-latn": ("rtl", "fa_IR"),
        "he-x-latn": ("rtl", "he"),
        "ar-Latn": ("ltr", "ar"),
    }
    articles = [
        {**ARABIC, "id": f"x{n}", "slug": f"x{n}", "language": tag} for n, tag in enumerate(tags)
    ]
    await load(client, *articles)
    for n, (tag, (direction, locale)) in enumerate(tags.items()):
        html = await page(client, f"/articles/x{n}")
        assert lang_dir(html) == (tag, direction), tag
        [og_locale] = html.xpath("//meta[@property='og:locale']/@content")
        assert og_locale == locale, tag
