"""Pages as browsers, search engines and link previews read them (issue 20): language
and direction, the article's image, OpenGraph and Twitter cards, JSON-LD, the
"Updated" line, the home page's latest articles, scheduled articles."""

from __future__ import annotations

from typing import Any

import lxml.html  # type: ignore[import-untyped]
from conftest import Client

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
