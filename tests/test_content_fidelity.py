"""Issue 20, content: what operators send is stored so that every channel (feeds,
pages, webhook and WebSub bodies) can carry it as it is: URLs that are URIs, body
HTML that is valid HTML with absolute links, text without bidirectional overrides
and never escaped twice. Through the HTTP API, on both backends."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import Client, ServerFactory, error_fields, expect_problem

from storage import Storage
from syndicate.content.ingest import store_batch
from syndicate.content.text import render_content

ARTICLE: dict[str, Any] = {"title": "T", "content": "<p>x</p>", "topics": ["t"]}


async def _create(client: Client, **fields: Any) -> dict[str, Any]:
    async with client.request("POST", "/api/articles", json={**ARTICLE, **fields}) as resp:
        assert resp.status == 201, await resp.text()
        created: dict[str, Any] = await resp.json()
    async with client.request("GET", f"/api/articles/{created['id']}") as resp:
        assert resp.status == 200
        article: dict[str, Any] = await resp.json()
    return article


# -- finding 2: url and image are URIs ---------------------------------------------

NOT_URIS = [
    "https://example.org/a<b",
    "https://example.org/a>b",
    'https://example.org/"quoted"',
    "https://example.org/{x}",
    "https://example.org/a|b",
    "https://example.org/a\\b",
    "https://example.org/a^b",
    "https://example.org/a`b",
    "https://example.org/a b",
    "https://example.org/\tx",
    "https://example.org/%zz",
    "https://example.org/%4",
    "https://example.org/a#b#c",
    "https://example.org/x\n",
]


@pytest.mark.parametrize("field", ["url", "image"])
@pytest.mark.parametrize("value", NOT_URIS)
async def test_a_url_a_uri_cannot_hold_is_refused_naming_the_field(
    client: Client, store: Storage, field: str, value: str
) -> None:
    async with client.request("POST", "/api/articles", json={**ARTICLE, field: value}) as resp:
        body = await expect_problem(resp, 422)
    assert error_fields(body) == {field}
    assert await store.list_events() == []


@pytest.mark.parametrize("field", ["url", "image"])
async def test_a_url_with_a_lone_surrogate_is_refused_not_a_server_error(
    client: Client, store: Storage, field: str
) -> None:
    """The URL pattern leaves surrogates to the JSON reader (a surrogate range in the
    pattern would make it invalid to schema validators): JSON can still spell one."""
    body = '{"title": "T", "content": "x", "topics": ["t"], "%s": "https://e.org/\\ud800"}'
    headers = {"Content-Type": "application/json"}
    async with client.request(
        "POST", "/api/articles", data=(body % field).encode(), headers=headers
    ) as resp:
        assert resp.status in (400, 422), await resp.text()
        assert resp.content_type == "application/problem+json"
    assert await store.list_events() == []


async def test_a_subscription_url_a_uri_cannot_hold_is_refused(
    start_server: ServerFactory, tokens: dict[str, str]
) -> None:
    client = await start_server(allow_private_targets=True)
    client.token = tokens["operator"]
    hook = {"url": "http://127.0.0.1:9/hook?a=<b>", "topics": ["*"]}
    async with client.request("POST", "/api/subscriptions", json=hook) as resp:
        body = await expect_problem(resp, 422)
    assert body["errors"] == [
        {"field": "url", "message": "has a character a URL cannot hold: '<' (percent-encode it)"}
    ]


async def test_an_iri_is_stored_as_the_uri_it_stands_for(client: Client) -> None:
    """Non-ASCII is not refused: the path, query and fragment are percent-encoded as
    UTF-8 and an IDN host becomes punycode (RFC 3987 §3.1), so every feed holds a URI."""
    article = await _create(
        client,
        url="https://example.org/ünïcode/ملف?q=ä#frag",
        image="https://bücher.example/bild[1].png",
    )
    assert article["url"] == (
        "https://example.org/%C3%BCn%C3%AFcode/%D9%85%D9%84%D9%81?q=%C3%A4#frag"
    )
    assert article["image"] == "https://xn--bcher-kva.example/bild%5B1%5D.png"
    async with client.request("GET", "/feeds/t.atom") as resp:
        feed = await resp.text()
    assert 'href="https://example.org/%C3%BCn%C3%AFcode/' in feed
    assert "ünïcode" not in feed


async def test_a_uri_is_stored_as_sent(client: Client) -> None:
    url = "https://example.org/a/b;c=d?x=%C3%A4&y=(1)*!$'+,:@~#top"
    assert (await _create(client, url=url))["url"] == url


# -- finding 3: sanitized HTML is valid HTML ---------------------------------------

PASTED: list[tuple[str, str]] = [
    # (sent, stored)
    (
        '<a href="javascript:alert(1)">js</a><img src="x.png" onerror="alert(1)">',
        'js<img src="https://example.org/news/x.png" alt="">',
    ),
    (
        '<p><a href="https://example.org/">ok</a></p>',
        '<p><a href="https://example.org/" rel="noopener noreferrer">ok</a></p>',
    ),
    ('<img src="javascript:alert(1)" alt="gone">after', "after"),
    (
        '<img alt="A cat" src="https://example.org/cat.png">',
        '<img alt="A cat" src="https://example.org/cat.png">',
    ),
    ("<b><div>block in bold</div></b>", "<div><b>block in bold</b></div>"),
    ("<div><li>one</li><li>two</li></div>", "<div><ul><li>one</li><li>two</li></ul></div>"),
    (
        "<ul><p>not an item</p><li>item</li></ul>",
        "<ul><li><p>not an item</p></li><li>item</li></ul>",
    ),
    (
        "<center><tt>old</tt> <strike>gone</strike></center>",
        "<div><code>old</code> <s>gone</s></div>",
    ),
    (
        '<table align="center" summary="s"><tr><td align="left" width="5" colspan="x">c</td>'
        "</tr></table>",
        "<table><tbody><tr><td>c</td></tr></tbody></table>",
    ),
    (
        '<img src="https://example.org/i.png" alt="" width="50%" height="20">',
        '<img src="https://example.org/i.png" alt="" height="20">',
    ),
    ('<p lang="pt-BR">olá</p><p lang="xx">?</p>', '<p lang="pt">olá</p><p>?</p>'),
    (
        "<dd>orphan</dd><figcaption>caption</figcaption><time>now</time>",
        "<div>orphan</div><div>caption</div>now",
    ),
]


async def test_a_link_without_a_safe_href_is_its_text_and_every_image_has_alt(
    client: Client,
) -> None:
    """Finding 3: ``<a href="javascript:...">js</a><img src=x onerror=...>`` was stored
    as ``<a rel="noopener noreferrer">js</a><img src="x">``: rel without href, img
    without alt."""
    sent, stored = PASTED[0]
    article = await _create(client, url="https://example.org/news/item", content=sent)
    assert article["content"] == stored


async def test_pasted_html_is_stored_as_valid_html(client: Client) -> None:
    """What pasted HTML brings (obsolete elements and attributes, blocks in inline
    elements, items outside lists, bad attribute values, unknown languages) is stored
    as valid HTML keeping its text; valid HTML is stored as it is."""
    for sent, stored in PASTED[1:]:
        article = await _create(client, url="https://example.org/news/item", content=sent)
        assert article["content"] == stored, sent


VNU = Path(__file__).parent.parent / ".venv/vnu/node_modules/vnu-jar/build/dist/vnu.jar"


@pytest.mark.skipif(
    not (VNU.exists() and shutil.which("java")) and os.environ.get("CI") != "true",
    reason="needs Java and .venv/vnu (make vnu)",
)
def test_the_nu_html_checker_finds_nothing_in_sanitized_pasted_html(tmp_path: Path) -> None:
    """Every fragment above (and markdown's HTML) as stored, in a page, checked by the
    Nu HTML Checker: no errors."""
    fragments = [render_content(sent, "html", "https://example.org/a/b") for sent, _ in PASTED]
    fragments.append(render_content(MESSY_MARKDOWN, "markdown", "https://example.org/a/b"))
    pages = []
    for n, fragment in enumerate(fragments):
        page = tmp_path / f"f{n}.html"
        page.write_text(
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>t</title>'
            f"</head><body><article>{fragment}</article></body></html>"
        )
        pages.append(str(page))
    checked = subprocess.run(
        ["java", "-jar", str(VNU), "--errors-only", "--format", "text", *pages],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


MESSY_MARKDOWN = """# Title <span>with <div>a block</div></span>

* item with [a relative link](../other "t") and ![an image](pic.png)
* <b>bold <p>para</p></b>

<table><tr><td align=right>1</td></tr></table>

```html
<script>alert(1)</script>
```
"""


# -- relative URLs in content are absolute ------------------------------------------


async def test_relative_links_and_images_are_resolved_against_the_article_url(
    client: Client,
) -> None:
    content = (
        '<p><a href="../about">about</a> <a href="#notes">notes</a> '
        '<a href="?page=2">next</a> <a href="mailto:a@example.org">mail</a>'
        '<img src="img/a b.png" alt="a"> <img src="//cdn.example.net/c.png" alt="c"></p>'
        '<blockquote cite="/source">q</blockquote>'
    )
    article = await _create(client, url="http://example.org/news/2026/item", content=content)
    assert article["content"] == (
        '<p><a href="http://example.org/news/about" rel="noopener noreferrer">about</a> '
        '<a href="http://example.org/news/2026/item#notes" rel="noopener noreferrer">notes</a> '
        '<a href="http://example.org/news/2026/item?page=2" rel="noopener noreferrer">next</a> '
        '<a href="mailto:a@example.org" rel="noopener noreferrer">mail</a>'
        '<img src="http://example.org/news/2026/img/a%20b.png" alt="a"> '
        '<img src="http://cdn.example.net/c.png" alt="c"></p>'
        '<blockquote cite="http://example.org/source">q</blockquote>'
    )


async def test_without_a_url_links_are_resolved_against_the_permalink(store: Storage) -> None:
    """The batch API and ``syndicate import`` (``store_batch``) resolve links against
    the article's permalink when it has no canonical URL."""
    item = {"id": "p1", "title": "Café news", "content": '<a href="x">x</a>', "topics": ["t"]}
    [result] = await store_batch(
        store, [item], host="example.org", base_url="https://example.org", fields=["a"]
    )
    assert result["status"] == "created"
    article = await store.get_article("p1")
    assert article.content == (
        '<a href="https://example.org/articles/x" rel="noopener noreferrer">x</a>'
    )


# -- bidirectional controls leave one-line fields ---------------------------------


async def test_bidirectional_controls_are_removed_from_one_line_fields(client: Client) -> None:
    """An override or isolate left open in a title reorders what a reader shows after
    it; Arabic and Hebrew text itself (and the marks U+200E/U+200F) stay."""
    article = await _create(
        client,
        title="Invoice \u202egnp.exe\u202c \u05e9\u05dc\u05d5\u05dd\u200f",
        author="\u2066\u0633\u0627\u0631\u0629\u2069 Ali\u202d",
        summary="Line one\n\u202bline\u202a two\u2067\u2068",
    )
    assert article["title"] == "Invoice gnp.exe \u05e9\u05dc\u05d5\u05dd\u200f"
    assert article["author"] == "\u0633\u0627\u0631\u0629 Ali"
    assert article["summary"] == "Line one line two"
    async with client.request("GET", "/feeds/t.atom") as resp:
        feed = await resp.text()
    assert not set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069") & set(feed)


async def test_a_title_of_bidirectional_controls_alone_is_blank(client: Client) -> None:
    async with client.request(
        "POST", "/api/articles", json={**ARTICLE, "title": "\u202e\u2066 \u2069"}
    ) as resp:
        body = await expect_problem(resp, 422)
    assert error_fields(body) == {"title"}


# -- text is text: stored as sent, escaped once per format -----------------------

LITERAL = "A &amp; B <b>x</b> ]]> & < > \" ' &lt;"


async def test_text_fields_are_stored_exactly_as_sent(client: Client) -> None:
    """Title, summary and author are text: markup and entities in them are characters,
    neither escaped nor stripped when stored (each format escapes them once)."""
    article = await _create(client, title=LITERAL, summary=LITERAL, author=LITERAL)
    assert (article["title"], article["summary"], article["author"]) == (LITERAL,) * 3
    async with client.request("GET", "/feeds/t.json") as resp:
        item = (await resp.json())["items"][0]
    assert item["title"] == LITERAL
    assert item["summary"] == LITERAL
    assert item["authors"] == [{"name": LITERAL}]


@pytest.mark.parametrize(
    "fields",
    [
        {"content": "<a href='//[:]/x'>a</a><p>kept</p>"},
        {"content": "<blockquote cite='http://[x]/'>q</blockquote><p>kept</p>"},
        {"content": "<a href='http://h.org:99999/'>a</a><p>kept</p>"},
        {"url": "http://[::1]/a", "content": "<a href='rel'>r</a><p>kept</p>"},
    ],
)
async def test_a_link_python_cannot_split_is_dropped_not_a_server_error(
    client: Client, fields: dict[str, str]
) -> None:
    """urljoin/urlsplit raise on a bracketed host that is no IP literal or a port out
    of range: such a link goes (its text stays), in a single write and in a batch."""
    stored = await _create(client, **fields)
    assert "kept" in stored["content"] and "[:]" not in stored["content"]
    batch = {"articles": [{**ARTICLE, "id": "ok"}, {**ARTICLE, "id": "odd", **fields}]}
    async with client.request("POST", "/api/articles/batch", json=batch) as resp:
        assert resp.status == 200, await resp.text()
        assert [r["status"] for r in (await resp.json())["results"]] == ["created", "created"]


@pytest.mark.parametrize("slug", [".", ".."])
async def test_a_slug_of_dot_or_dot_dot_is_refused(client: Client, slug: str) -> None:
    """``/articles/..`` is the home page to every browser and crawler."""
    async with client.request("POST", "/api/articles", json={**ARTICLE, "slug": slug}) as resp:
        body = await expect_problem(resp, 422)
    assert error_fields(body) == {"slug"}
    assert (await _create(client, slug="..."))["slug"] == "..."


@pytest.mark.parametrize(
    "value",
    ["http://[:]/", "http://[::1:]/", "http://[.]/", "http://[1.2.3.4]/", "http://a.org:99999/"],
)
async def test_a_host_or_port_no_browser_takes_is_refused(client: Client, value: str) -> None:
    async with client.request("POST", "/api/articles", json={**ARTICLE, "url": value}) as resp:
        body = await expect_problem(resp, 422)
    assert error_fields(body) == {"url"}


async def test_ip_literals_and_ports_in_range_are_taken(client: Client) -> None:
    for value in ("http://[::1]:8080/a", "http://[2001:db8::7]/", "https://a.org:65535/"):
        assert (await _create(client, url=value))["url"] == value
