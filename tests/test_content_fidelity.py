"""Issue 20, content: what operators send is stored so that every channel (feeds,
pages, webhook and WebSub bodies) can carry it as it is: URLs that are URIs, body
HTML that is valid HTML with absolute links, text without bidirectional overrides
and never escaped twice. Through the HTTP API, on both backends."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import Client, ServerFactory, error_fields, expect_problem

from storage import Storage

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
