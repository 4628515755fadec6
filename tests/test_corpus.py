"""The adversarial corpus (tests/fixtures/corpus.json) as outside readers see it.

Every article of the corpus is posted through the API, then read back the way a
reader would: every topic's RSS, Atom and JSON Feed through feedparser (and the
``reader`` library), every article page and topic page as HTML. What is checked
is what a person would notice: the text they typed shown exactly (escaped once,
never live markup), the body free of scripts and handlers with every link
absolute, the image and the language visible, the dates right. Each test gathers
every difference it finds and reports them all at once.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import lxml.html  # type: ignore[import-untyped]
import pytest
from conftest import FIXTURES, Client, error_fields
from reader_view import Feed, Html, read_feed

CORPUS: dict[str, Any] = json.loads((FIXTURES / "corpus.json").read_text("utf-8"))
FORMATS = ("rss", "atom", "json")
ALL = "all"
RTL_LANGUAGES = frozenset({"ar", "he"})
UNSAFE_TAGS = frozenset("script iframe object embed form input base meta style link frame".split())
URL_ATTRIBUTES = ("href", "src", "srcset", "cite", "poster", "action", "formaction", "background")
SAFE_SCHEMES = frozenset({"http", "https", "mailto", "tel"})
ATOM = "{http://www.w3.org/2005/Atom}"
CONTENT_ENCODED = "{http://purl.org/rss/1.0/modules/content/}encoded"

#: The flag of Scotland: a black flag and the tag characters g b s c t, then cancel.
SCOTLAND = "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f"
#: Per article, what its body must show wherever it is shown: ``text`` as literal
#: text, ``hrefs`` / ``srcs`` exactly these links and images (relative references,
#: resolved against the article's URL, as the reader must get them).
CONTENT_EXPECT: dict[str, dict[str, list[str]]] = {
    "amp-everywhere": {"text": ["Fish & chips < 3 ]]> \"q\" 'a' &amp; <script>"], "hrefs": []},
    "arabic": {"text": ["الكبد هو أكبر عضو داخلي"], "hrefs": ["/ar/guide"]},
    "script-handlers": {
        "text": ["Clicked text", "js link", "spaced js", "data link", "vb link", "safe link"],
        "hrefs": ["https://example.org/safe"],
        "srcs": ["https://cdn.example.org/img/x.png"],
    },
    "markdown-code": {
        "text": ["<script>alert('in a code block')</script>", "Inline <script>", "raw html"],
        "hrefs": ["../other-page"],
        "srcs": ["/media/markdown.png"],
    },
    "plain-text": {
        "text": ["Line 1 <b>not bold</b> & ]]> &amp;", "Line 2 <script>alert(1)</script>"],
    },
    "relative-with-url": {
        "text": ["kidney", "about", "cdn", "next page", "section", "mail"],
        "hrefs": [
            "../kidney/stones.html",
            "/about",
            "//cdn.example.org/x",
            "?page=2",
            "#section",
            "mailto:desk@example.org",
        ],
        "srcs": ["images/liver.png", "/img/no-alt.png"],
    },
    "relative-permalink": {
        "text": ["other", "here"],
        "hrefs": ["other-article", "./"],
        "srcs": ["/media/a.png"],
    },
    "pasted-word": {
        "text": ["Font text", "span", "div in p", "stray item", "cell", "click me"],
        "hrefs": [],
    },
    "cdata-entities": {"text": ["]]> and", "😀", "\u00a0"]},
    "combining": {"text": ["a\u0300\u0301\u0302\u0303\u0304"]},
    "emoji-zwj": {"text": ["😀 Grinning 👨\u200d💻 & " + SCOTLAND]},
}


# -- the corpus, posted ------------------------------------------------------------


@dataclass(frozen=True)
class Posted:
    """One corpus article: as sent, and as the API answered it."""

    source: dict[str, Any]
    answer: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.source["id"])

    def expected(self, name: str) -> Any:
        """What a reader must see: as sent, unless the corpus says it is normalised."""
        return CORPUS["expected"].get(self.id, {}).get(name, self.source.get(name))

    @property
    def url(self) -> str:
        """The article's link: its (normalised) canonical URL, else its page."""
        return str(self.expected("url") or self.answer["url"])

    @property
    def published(self) -> datetime:
        return datetime.fromisoformat(self.source["published_at"]).astimezone(UTC)


@dataclass
class Corpus:
    client: Client
    by_guid: dict[str, Posted] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def guids(self, topic: str) -> set[str]:
        return {g for g, p in self.by_guid.items() if topic == ALL or topic in p.source["topics"]}

    @property
    def topics(self) -> list[str]:
        return [t["slug"] for t in CORPUS["topics"]] + [ALL]


@pytest.fixture
async def corpus(client: Client) -> Corpus:
    """The corpus on a fresh service; refusals are problems every test reports."""
    loaded = Corpus(client)
    for topic in CORPUS["topics"]:
        body = {"title": topic["title"], "description": topic["description"]}
        async with client.request("PUT", f"/api/topics/{topic['slug']}", json=body) as resp:
            if resp.status not in (200, 201):
                loaded.problems.append(f"topic {topic['slug']}: {resp.status} {await resp.text()}")
    for article in CORPUS["articles"]:
        async with client.request("POST", "/api/articles", json=article) as resp:
            if resp.status != 201:
                text = await resp.text()
                loaded.problems.append(f"{article['id']}: refused, {resp.status} {text}")
                continue
            answer = await resp.json()
        loaded.by_guid[answer["guid"]] = Posted(article, answer)
    return loaded


async def get(client: Client, path: str, *, token: str | None = "") -> tuple[int, str, bytes]:
    """GET as a reader (no token), or with the operator's (``token=None``)."""
    async with client.request("GET", path, token=token) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.read()


def report(problems: list[str]) -> None:
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:80])


# -- HTML as a reader shows it -----------------------------------------------------


def content_problems(where: str, article: Posted, value: str) -> list[str]:
    """What is wrong with an article body as shown in one place."""
    doc, out = Html(value), []
    for tag, attrs in doc.tags:
        if tag in UNSAFE_TAGS:
            out.append(f"{where}: live <{tag}> in the body")
        out += [f"{where}: <{tag} {name}=...> handler" for name in attrs if name.startswith("on")]
        for name in URL_ATTRIBUTES:
            if name in attrs and not _absolute(attrs[name]):
                out.append(f"{where}: <{tag} {name}={attrs[name]!r}> is not an absolute safe URL")
        if tag == "img" and "alt" not in attrs:
            out.append(f"{where}: <img src={attrs.get('src')!r}> without alt")
        if tag == "a" and "href" not in attrs:
            out.append(f"{where}: <a {attrs}> without href")
    expect = CONTENT_EXPECT.get(article.id, {})
    out += [f"{where}: text {t!r} missing" for t in expect.get("text", []) if t not in doc.text]
    for tag, attribute, key in (("a", "href", "hrefs"), ("img", "src", "srcs")):
        if key in expect:
            wanted = sorted(urljoin(article.url, ref) for ref in expect[key])
            if sorted(doc.values(tag, attribute)) != wanted:
                out.append(f"{where}: {tag} {attribute}s {doc.values(tag, attribute)} != {wanted}")
    return out


def _absolute(url: str) -> bool:
    parts = urlsplit(url.strip())
    if parts.scheme.lower() in ("mailto", "tel"):
        return True
    return parts.scheme.lower() in SAFE_SCHEMES and bool(parts.netloc)


# -- feeds as readers see them -----------------------------------------------------


async def read_feeds(corpus: Corpus) -> list[tuple[str, str, Feed]]:
    """(topic, format, feed) for every topic's feed (and ``all``) in every format."""
    out = []
    for topic in corpus.topics:
        for fmt in FORMATS:
            status, _, body = await get(corpus.client, f"/feeds/{topic}.{fmt}")
            assert status == 200, (topic, fmt, body[:500])
            out.append((topic, fmt, read_feed(fmt, body)))
    return out


# -- the tests ---------------------------------------------------------------------


async def test_every_article_is_in_every_feed_it_belongs_to(corpus: Corpus) -> None:
    problems = list(corpus.problems)
    for topic, fmt, feed in await read_feeds(corpus):
        missing = corpus.guids(topic) - set(feed.entries)
        extra = set(feed.entries) - corpus.guids(topic)
        if missing or extra:
            problems.append(f"{topic}.{fmt}: missing {missing}, unexpected {extra}")
    report(problems)


async def test_text_fields_read_back_exactly_in_every_format(corpus: Corpus) -> None:
    """Title, summary, author and topic titles: what was typed, escaped once."""
    problems = list(corpus.problems)
    topics = {t["slug"]: t for t in CORPUS["topics"]}
    for topic, fmt, feed in await read_feeds(corpus):
        where = f"{topic}.{fmt}"
        if topic in topics:
            given = topics[topic]
            if feed.title != given["title"]:
                problems.append(f"{where}: feed title {feed.title!r} != {given['title']!r}")
            if given["description"] and feed.description != given["description"]:
                problems.append(f"{where}: description {feed.description!r}")
        for guid, seen in feed.entries.items():
            if (article := corpus.by_guid.get(guid)) is None:
                continue
            for name in ("title", "summary", "author"):
                want = article.expected(name)
                if want is not None and getattr(seen, name) != want:
                    problems.append(
                        f"{where} {article.id} {name}: {getattr(seen, name)!r} != {want!r}"
                    )
            if seen.link != article.url:
                problems.append(f"{where} {article.id} link: {seen.link!r} != {article.url!r}")
    report(problems)


async def test_bodies_are_safe_valid_and_absolute_in_every_format(corpus: Corpus) -> None:
    problems = list(corpus.problems)
    for topic, fmt, feed in await read_feeds(corpus):
        if topic != ALL:
            continue
        for guid, seen in feed.entries.items():
            if (article := corpus.by_guid.get(guid)) is not None:
                problems += content_problems(f"{fmt} {article.id}", article, seen.content)
    report(problems)


async def test_images_and_languages_are_visible_in_every_format(corpus: Corpus) -> None:
    problems = list(corpus.problems)
    for topic, fmt, feed in await read_feeds(corpus):
        for guid, seen in feed.entries.items():
            if (article := corpus.by_guid.get(guid)) is None:
                continue
            where = f"{topic}.{fmt} {article.id}"
            image, language = article.expected("image"), article.expected("language")
            if image and image not in seen.images:
                problems.append(f"{where}: image {image!r} not shown (got {seen.images})")
            if language and (seen.language or "").lower() != language.lower():
                problems.append(f"{where}: language {seen.language!r} != {language!r}")
    report(problems)


async def test_dates_are_the_published_times_in_every_format(corpus: Corpus) -> None:
    """Published as sent (in UTC); never changed, so updated is the published time."""
    problems = list(corpus.problems)
    for topic, fmt, feed in await read_feeds(corpus):
        for guid, seen in feed.entries.items():
            if (article := corpus.by_guid.get(guid)) is None:
                continue
            where, want = f"{topic}.{fmt} {article.id}", article.published
            if seen.published is None or seen.published != want.replace(microsecond=0):
                if not (fmt == "json" and seen.published == want):
                    problems.append(f"{where}: published {seen.published} != {want}")
            if fmt != "rss" and (seen.updated is None or seen.updated != seen.published):
                problems.append(f"{where}: updated {seen.updated} != published {seen.published}")
    report(problems)


async def test_the_reader_library_shows_the_corpus(corpus: Corpus, tmp_path: Path) -> None:
    import reader as reader_lib

    problems = list(corpus.problems)
    rdr = reader_lib.make_reader(str(tmp_path / "reader.sqlite"))
    urls = {fmt: corpus.client.url(f"/feeds/all.{fmt}") for fmt in FORMATS}

    def update() -> list[Any]:
        for url in urls.values():
            rdr.add_feed(url)
        rdr.update_feeds()
        return list(rdr.get_entries())

    try:
        entries = await asyncio.to_thread(update)
        for fmt, url in urls.items():
            seen = {e.id: e for e in entries if e.feed_url == url}
            if set(seen) != set(corpus.by_guid):
                problems.append(f"reader {fmt}: entries {len(seen)} != {len(corpus.by_guid)}")
            for guid, entry in seen.items():
                if (article := corpus.by_guid.get(guid)) is not None:
                    problems += _reader_problems(f"reader {fmt} {article.id}", fmt, article, entry)
    finally:
        await asyncio.to_thread(rdr.close)
    report(problems)


def _reader_problems(where: str, fmt: str, article: Posted, entry: Any) -> list[str]:
    """``reader`` passes titles on as feedparser gives them, without their type: an
    RSS title is HTML to feedparser when it has a closing tag or an entity, so such
    a title is read as HTML. RSS authors are one string that reader splits by its own rules (commas,
    e-mail addresses): only Atom's and JSON Feed's structured names are compared."""
    out = []
    title = entry.title
    if fmt == "rss" and re.search(r"</\w+>|&#?\w+;", title or ""):  # feedparser's guess
        title = Html(title).text
    if title != article.expected("title"):
        out.append(f"{where}: title {entry.title!r} != {article.expected('title')!r}")
    author = article.expected("author")
    if author and fmt != "rss" and entry.authors_str != author:
        out.append(f"{where}: author {entry.authors_str!r} != {author!r}")
    if entry.published != article.published.replace(microsecond=0) and fmt != "json":
        out.append(f"{where}: published {entry.published} != {article.published}")
    image = article.expected("image")
    if image and fmt != "json" and image not in {e.href for e in entry.enclosures}:
        out.append(f"{where}: image {image!r} not among enclosures {entry.enclosures}")
    language = (article.expected("language") or "").lower()
    if language and language not in {(c.language or "").lower() for c in entry.content}:
        out.append(f"{where}: language {language!r} not on content {entry.content!r:.200}")
    return out


async def test_every_article_page_shows_the_article(corpus: Corpus) -> None:
    problems = list(corpus.problems)
    for article in corpus.by_guid.values():
        path = f"/articles/{quote(article.answer['slug'], safe='')}"
        status, ctype, body = await get(corpus.client, path)
        if status != 200 or not ctype.startswith("text/html"):
            problems.append(f"page {article.id}: {status} {ctype}")
            continue
        problems += _page_problems(
            f"page {article.id}", article, lxml.html.document_fromstring(body)
        )
    report(problems)


def _page_problems(where: str, article: Posted, doc: Any) -> list[str]:
    out = []
    title, author = article.expected("title"), article.expected("author")
    h1 = doc.xpath("//h1")
    if not h1 or h1[0].text_content() != title:
        out.append(f"{where}: h1 {h1 and h1[0].text_content()!r} != {title!r}")
    if not doc.findtext(".//title", "").startswith(title):
        out.append(f"{where}: <title> {doc.findtext('.//title')!r}")
    shown_authors = [e.text_content() for e in doc.find_class("author")]
    if author and author not in shown_authors:
        out.append(f"{where}: author {shown_authors} lacks {author!r}")
    canonical = doc.xpath("//link[@rel='canonical']/@href")
    if canonical != [article.url]:
        out.append(f"{where}: canonical {canonical} != {article.url!r}")
    if image := article.expected("image"):
        og_image = doc.xpath("//meta[@property='og:image']/@content")
        if og_image != [image]:
            out.append(f"{where}: og:image {og_image} != {image!r}")
        if image not in doc.xpath("//img/@src"):
            out.append(f"{where}: no <img src={image!r}> on the page")
    if h1 and (language := article.expected("language")):
        lang = h1[0].xpath("ancestor-or-self::*[@lang][1]/@lang")
        direction = h1[0].xpath("ancestor-or-self::*[@dir][1]/@dir") or ["ltr"]
        rtl = language.split("-")[0].lower() in RTL_LANGUAGES
        if [v.lower() for v in lang] != [language.lower()]:
            out.append(f"{where}: lang {lang} != {language!r}")
        if (direction[0].lower() == "rtl") != rtl:
            out.append(f"{where}: dir {direction[0]!r} for {language!r}")
    body = doc.find_class("content")
    if not body:
        return [*out, f"{where}: no .content"]
    inner = (body[0].text or "") + "".join(
        lxml.html.tostring(child, encoding="unicode") for child in body[0]
    )
    return out + content_problems(where, article, inner)


async def test_topic_pages_and_the_home_page_list_the_corpus(corpus: Corpus) -> None:
    problems = list(corpus.problems)
    status, _, body = await get(corpus.client, "/")
    home = lxml.html.document_fromstring(body)
    links = {a.text_content().strip() for a in home.iter("a")}
    for topic in CORPUS["topics"]:
        if topic["title"] not in links:
            problems.append(f"home: no link {topic['title']!r}")
        status, _, body = await get(corpus.client, f"/topics/{topic['slug']}")
        if status != 200:
            problems.append(f"topic page {topic['slug']}: {status}")
            continue
        page = lxml.html.document_fromstring(body)
        if [h.text_content() for h in page.xpath("//h1")][:1] != [topic["title"]]:
            problems.append(f"topic page {topic['slug']}: h1 is not {topic['title']!r}")
        texts = {a.text_content() for a in page.iter("a")}
        for guid in corpus.guids(topic["slug"]):
            if (title := corpus.by_guid[guid].expected("title")) not in texts:
                problems.append(f"topic page {topic['slug']}: no link {title[:60]!r}")
    report(problems)


async def test_invalid_input_is_refused_naming_the_field_and_changes_nothing(
    corpus: Corpus,
) -> None:
    problems = list(corpus.problems)
    paths = [f"/feeds/{ALL}.{fmt}" for fmt in FORMATS] + ["/api/topics"]
    before = [await get(corpus.client, p, token=None) for p in paths]
    for case in CORPUS["invalid"]:
        for method, path in (("POST", "/api/articles"), ("PUT", "/api/articles/bad")):
            async with corpus.client.request(method, path, json=case["article"]) as resp:
                body = await resp.json(content_type=None)
                if resp.status != 422 or error_fields(body) != {case["field"]}:
                    problems.append(f"{case['why']} ({method}): {resp.status} {body}")
    after = [await get(corpus.client, p, token=None) for p in paths]
    for path, old, new in zip(paths, before, after, strict=True):
        if old != new:
            problems.append(f"{path} changed after refused input")
    if (await get(corpus.client, "/api/articles/bad", token=None))[0] != 404:
        problems.append("/api/articles/bad exists")
    report(problems)
