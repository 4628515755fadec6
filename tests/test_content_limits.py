"""Content never blocks the event loop, and its sanitizing work is bounded.

Through a real server: articles nested beyond the limit are refused with 422
naming ``content`` and the limit, quickly (the 60,000-deep ``<div>`` once took
11 s of the event loop), in POST, PUT, batches and imports; ``/healthz`` answers
while a large valid article is being rendered. Directly: the pre-scan refuses
the shapes that make an HTML5 tree builder quadratic (or worse) and passes the
sloppy HTML real articles carry.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import Client, expect_problem

from storage import Storage
from syndicate.content.importer import import_paths
from syndicate.content.text import (
    MAX_CONTENT_DEPTH,
    MAX_CONTENT_ELEMENTS,
    ContentTooComplex,
    check_content_limits,
    render_content,
)

DEEP_DIVS = "<div>" * 60_000 + "deep" + "</div>" * 60_000
#: Pure-Python markdown rendering of ~2 s on the test machine, nothing refused.
SLOW_MARKDOWN = "*a **a " * 60_000


@pytest.fixture
def backend() -> str:
    """Content limits are above storage: one backend is enough."""
    return "sqlite"


def article(article_id: str, content: str, content_type: str = "html") -> dict[str, Any]:
    return {
        "id": article_id,
        "title": f"Article {article_id}",
        "content": content,
        "content_type": content_type,
        "topics": ["limits"],
    }


def assert_depth_error(body: dict[str, Any], field: str = "content") -> None:
    assert [e["field"] for e in body["errors"]] == [field], body
    message = body["errors"][0]["message"]
    assert str(MAX_CONTENT_DEPTH) in message and "nest" in message, message


async def test_deeply_nested_html_is_refused_quickly(client: Client) -> None:
    started = time.perf_counter()
    async with client.request("POST", "/api/articles", json=article("deep", DEEP_DIVS)) as resp:
        body = await expect_problem(resp, 422)
    assert time.perf_counter() - started < 2.0
    assert_depth_error(body)
    async with client.request("PUT", "/api/articles/deep", json=article("deep", DEEP_DIVS)) as resp:
        assert_depth_error(await expect_problem(resp, 422))
    async with client.request("GET", "/api/articles/deep") as resp:
        assert resp.status == 404


async def test_deeply_nested_markdown_is_refused(client: Client) -> None:
    # Raw HTML passes through markdown, so the rendered HTML is what is bounded.
    deep = article("md", "Intro\n\n" + "<div>" * 60_000 + "\n\nend", "markdown")
    started = time.perf_counter()
    async with client.request("POST", "/api/articles", json=deep) as resp:
        body = await expect_problem(resp, 422)
    assert time.perf_counter() - started < 3.0
    assert_depth_error(body)
    # Markdown's own nesting (quotes, lists) stops at markdown-it's limit and is accepted.
    quoted = article("quoted", ">" * 5_000 + " deep quote\n\n" + "- " * 2_000 + "item", "markdown")
    async with client.request("POST", "/api/articles", json=quoted) as resp:
        assert resp.status == 201, await resp.text()


async def test_too_many_elements_are_refused(client: Client) -> None:
    flat = "<i>x</i>" * (MAX_CONTENT_ELEMENTS + 1)
    async with client.request("POST", "/api/articles", json=article("many", flat)) as resp:
        body = await expect_problem(resp, 422)
    assert [e["field"] for e in body["errors"]] == ["content"]
    assert f"{MAX_CONTENT_ELEMENTS:,}" in body["errors"][0]["message"]


async def test_healthz_answers_while_an_article_renders(client: Client) -> None:
    # The test's client shares the server's event loop, so the probe runs on a
    # thread of its own: it sees the server's loop as any other caller would.
    waits: list[float] = []
    done = threading.Event()
    probe = threading.Thread(target=_probe_healthz, args=(client.url("/healthz"), waits, done))
    probe.start()
    started = time.perf_counter()
    body = article("slow", SLOW_MARKDOWN, "markdown")
    async with client.request("POST", "/api/articles", json=body) as resp:
        assert resp.status == 201, await resp.text()
    took = time.perf_counter() - started
    done.set()
    await asyncio.to_thread(probe.join)
    assert took > 1.0, f"rendering took {took:.2f} s: too short to show anything"
    assert max(waits) < 0.5, waits


def _probe_healthz(url: str, waits: list[float], done: threading.Event) -> None:
    while not done.is_set():
        started = time.perf_counter()
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.status == 200
        waits.append(time.perf_counter() - started)
        done.wait(0.05)


async def test_batch_rejects_only_the_offending_item(client: Client) -> None:
    items = [article("ok-1", "<p>one</p>"), article("bad", DEEP_DIVS), article("ok-2", "two")]
    started = time.perf_counter()
    async with client.request("POST", "/api/articles/batch", json={"articles": items}) as resp:
        assert resp.status == 200, await resp.text()
        body = await resp.json()
    assert time.perf_counter() - started < 3.0
    assert [r["status"] for r in body["results"]] == ["created", "rejected", "created"]
    assert body["rejected"] == 1
    bad = body["results"][1]
    assert bad["id"] == "bad"
    assert_depth_error({"errors": bad["errors"]}, field="articles.1.content")


async def test_import_rejects_the_offending_line(store: Storage, tmp_path: Path) -> None:
    lines = [article("imp-1", "<p>one</p>"), article("imp-bad", DEEP_DIVS), article("imp-2", "x")]
    path = tmp_path / "articles.ndjson"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n", "utf-8")
    report = await import_paths(store, [path], host="127.0.0.1", progress=False)
    assert report.counts["created"] == 2 and report.counts["rejected"] == 1
    [(where, errors)] = report.rejected
    assert where == "articles.ndjson:2"
    assert_depth_error({"errors": errors}, field="articles.ndjson:2.content")


async def test_ordinary_article_is_stored_and_rendered_as_before(
    client: Client, seed_article: dict[str, Any]
) -> None:
    async with client.request("POST", "/api/articles", json=seed_article) as resp:
        assert resp.status == 201, await resp.text()
        body = await resp.json()
    assert body["content"] == render_content(seed_article["content"], "html")
    async with client.request("GET", f"/articles/{body['slug']}") as resp:
        assert resp.status == 200
        assert body["content"] in await resp.text()


# The pre-scan on its own: what real articles carry passes, the expensive shapes do not.

SLOPPY = [
    "<p>para" * 2_000,  # paragraphs never closed
    "<ul>" + "<li>item" * 2_000 + "</ul>",  # list items never closed
    "<table>" + "<tr><td>a<td>b<th>c" * 1_000 + "</table>",  # cells and rows never closed
    "<p><font face=Arial>x</p>" * 1_000,  # one unclosed inline per paragraph (Word, FrontPage)
    "<p><b>bold</p>" * 1_000,
    "<div>" * 200 + "x" + "</div>" * 200,  # deep, but within the limit
    "<dl>" + "<dt>term<dd>def" * 1_000 + "</dl>",
    "<a href=/1>one<a href=/2>two" * 1_000,  # links never closed
    "<svg><g>" + "<path d='M0 0'/>" * 2_000 + "</g></svg>",  # self-closing in SVG
    "<script>" + "if (a<b && c>d) { '<div>' }" * 1_000 + "</script>",
    "<!-- <div> -->" * 1_000 + "<p>after comments</p>",
    "<h2>one<h3>two<h4>three" * 300,  # headings close each other only when adjacent
]

HOSTILE = {
    "nested divs": "<div>" * 10_000,
    "self-closing divs": "<div/>" * 10_000,
    "nested list items": "<ul><li>" * 10_000,
    "divs in a table": "<table>" + "<div>x" * 10_000,
    "distinct formatting": "".join(f"<b class=c{i}>" for i in range(10_000)),
    "reopened formatting": "".join(f"<p><b class=c{i}>x</p>" for i in range(10_000)),
    "blocks inside formatting": "<b><div>x</b>" * 10_000,
    "foreign breakout": "<svg><style>" + "<div>" * 10_000,
    "quoted attribute after rawtext": "<style><i a='</style>" + "<div>" * 10_000 + "'>",
    "double-escaped script": "<script><!--<script></script><i a='</script>"
    + "<div>" * 10_000
    + "'>",
}


@pytest.mark.parametrize("html", SLOPPY, ids=range(len(SLOPPY)))
def test_sloppy_but_real_html_passes(html: str) -> None:
    check_content_limits(html)
    render_content(html, "html")


@pytest.mark.parametrize("name", HOSTILE)
def test_expensive_shapes_are_refused(name: str) -> None:
    started = time.perf_counter()
    with pytest.raises(ContentTooComplex, match=f"deeper than {MAX_CONTENT_DEPTH}"):
        check_content_limits(HOSTILE[name])
    assert time.perf_counter() - started < 0.5


def test_reconstructed_formatting_counts_as_elements() -> None:
    # 250 distinct open <b> popped by </div>: each later "<div>x</div>" makes the
    # tree builder recreate all 250 (memory grew without bound before).
    html = "<div>" + "".join(f"<b class=c{i}>" for i in range(250)) + "</div>"
    html += "<div>x</div>" * 1_000
    with pytest.raises(ContentTooComplex, match="elements"):
        check_content_limits(html)


def test_render_content_refuses_before_sanitizing() -> None:
    started = time.perf_counter()
    with pytest.raises(ContentTooComplex):
        render_content(DEEP_DIVS, "html")
    with pytest.raises(ContentTooComplex):
        render_content("<div>" * 60_000, "markdown")
    assert time.perf_counter() - started < 1.0
