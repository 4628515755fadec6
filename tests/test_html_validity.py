"""Every kind of public page passes the Nu HTML Checker (vnu) with 0 errors.

The pages of the fixture articles, of hard articles (right-to-left scripts, emoji,
images, HTML pasted with event handlers, a 500-character title, ``& < ]]>`` in every
field; tests/fixtures/corpus.json too when present), the home and topic pages and the
error pages are saved, then checked by ONE run of ``java -jar vnu.jar`` (the JVM
start is the slow part). ``make test`` installs the checker (npm ``vnu-jar``) into
``.venv/vnu``; without java or the jar the test is skipped, except under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from conftest import FIXTURES, Client

from storage import Storage
from storage.records import DeliveryOutcome, Verification, utcnow

ROOT = Path(__file__).resolve().parents[1]
VNU_JAR = ROOT / ".venv" / "vnu" / "node_modules" / "vnu-jar" / "build" / "dist" / "vnu.jar"
VNU_TIMEOUT = 45.0
CORPUS = FIXTURES / "corpus.json"
AMP = "& < ]]> &amp; </script>"

#: Articles that broke pages somewhere: every field a reader sees is hard.
HARD_ARTICLES: list[dict[str, Any]] = [
    {
        "id": "hard-arabic",
        "title": "ما هو تكلس الكبد؟ & < ]]>",
        "summary": "قد يجد بعض الناس بؤر تكلس في الكبد أثناء الفحص. & < ]]>",
        "content": "<p>التكلس داخل الكبد ليس مخيفًا كما يبدو.</p><h2>الأسباب</h2>"
        "<p>Mixed עברית and English <b>text</b>.</p>",
        "topics": ["liver-health", "hard-cases"],
        "author": "مكتب الصحة",
        "language": "ar",
        "image": "https://img.example.org/liver.jpg?size=large&fmt=jpg",
        "published_at": "2026-11-25T09:00:00Z",
    },
    {
        "id": "hard-hebrew",
        "title": "מה פירוש הסתיידות בכבד?",
        "content": "<p>הסתיידות בכבד אינה מפחידה.</p>",
        "topics": ["hard-cases"],
        "language": "he-IL",
        "published_at": "2026-11-24T09:00:00Z",
    },
    {
        "id": "hard-emoji",
        "title": f"🩺💉 Liver & kidneys {AMP} 😀👨‍👩‍👧",
        "summary": f"Summary {AMP} with emoji 🎉 and a <b onmouseover=alert(1)>tag</b>",
        "content": "# Heading 🎉\n\nSome *markdown* with `<script>alert(1)</script>` in code\n\n"
        "```html\n<script>alert(2)</script>\n]]>\n```\n\n| a | b |\n|---|---|\n| & | < |\n",
        "content_type": "markdown",
        "topics": ["hard-cases"],
        "author": f'Dr. "Quote" {AMP}',
        "url": "https://news.example.org/a/emoji?x=1&y=2",
        "image": "https://img.example.org/emoji.png",
        "published_at": "2026-11-23T09:00:00Z",
    },
    {
        "id": "hard-pasted",
        "title": "Pasted from a word processor",
        "content": '<div onclick="steal()" style="color:red"><p onmouseover="x()">Hello'
        '<a href="javascript:alert(1)">js link</a> <a href="https://ok.example.org/">ok</a>'
        '<img src="https://img.example.org/x.png" onerror="alert(1)"></p>'
        "<table><tr><td>cell</td></tr></table><iframe src=https://evil.example></iframe>"
        "<form><input name=q></form><p>unclosed<p>paragraphs<li>stray item</div>",
        "topics": ["hard-cases"],
        "published_at": "2026-11-22T09:00:00Z",
    },
    {
        "id": "hard-long",
        "title": ("Très long titre 長いタイトル " * 30)[:499] + "!",
        "summary": "x" * 3000,
        "content": f"Plain text {AMP}\nwith a line break\n\nand a paragraph. \u202eevil\u202c",
        "content_type": "text",
        "topics": ["hard-cases"],
        "author": "a" * 200,
        "language": "ja",
        "published_at": "2026-11-21T09:00:00Z",
    },
]
HARD_TOPIC = {"title": f"Hard cases {AMP}", "description": f"Description {AMP} 🎉 שלום"}


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _checker() -> list[str]:
    """The command that runs the checker, or skip (fail under CI) without it."""
    java = shutil.which("java")
    missing = "java" if java is None else None if VNU_JAR.exists() else f"{VNU_JAR}"
    if missing:
        message = f"the Nu HTML Checker needs {missing} (make test installs vnu-jar)"
        if _in_ci():
            pytest.fail(f"CI=true: {message}")
        pytest.skip(message)
    assert java is not None
    return [java, "-Xss8m", "-jar", str(VNU_JAR), "--format", "json", "--stdout"]


def corpus() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Topics and articles: the hard ones here, and the shared adversarial corpus
    (tests/fixtures/corpus.json) when it exists."""
    topics = [{"slug": "hard-cases", **HARD_TOPIC}]
    if not CORPUS.exists():
        return topics, HARD_ARTICLES
    data = json.loads(CORPUS.read_text("utf-8"))
    return topics + data.get("topics", []), HARD_ARTICLES + data["articles"]


async def _fetch(client: Client, path: str, status: int) -> str:
    async with client.session.get(client.url(path)) as resp:
        text = await resp.text()
        assert resp.status == status, (path, text)
        assert resp.content_type == "text/html", path
        return text


async def _load(
    client: Client, topics: list[dict[str, Any]], articles: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    for topic in topics:
        fields = {k: v for k, v in topic.items() if k != "slug"}
        async with client.request("PUT", f"/api/topics/{topic['slug']}", json=fields) as resp:
            assert resp.status in (200, 201), await resp.text()
    async with client.request("POST", "/api/articles/batch", json={"articles": articles}) as resp:
        body = await resp.json()
        assert resp.status == 200 and body["rejected"] == 0, body
    # One changed after publication, for the page's "Updated" line.
    edited = {**HARD_ARTICLES[0], "content": "<p>تصحيح: التكلس ليس مخيفًا.</p>"}
    async with client.request("PUT", f"/api/articles/{edited['id']}", json=edited) as resp:
        assert resp.status == 200, await resp.text()
    stored: list[dict[str, Any]] = []
    cursor = ""
    while True:
        async with client.request("GET", f"/api/articles?limit=100{cursor}") as resp:
            page = await resp.json()
        stored += page["articles"]
        if not page["next_cursor"]:
            return stored
        cursor = f"&cursor={page['next_cursor']}"


async def _pages(
    client: Client, store: Storage, topics: list[dict[str, Any]], articles: list[dict[str, Any]]
) -> dict[str, str]:
    """Path -> HTML of every kind of page there is."""
    stored = await _load(client, topics, articles)
    wanted: dict[str, int] = {"/": 200}
    for topic in sorted({t for a in stored for t in a["topics"]}):
        wanted[f"/topics/{topic}"] = 200
    for article in stored:
        wanted[f"/articles/{article['slug']}"] = 200
    deleted = stored[-1]
    async with client.request("DELETE", f"/api/articles/{deleted['id']}") as resp:
        assert resp.status == 204
    wanted[f"/articles/{deleted['slug']}"] = 410
    wanted["/articles/no-such-article"] = 404
    wanted["/topics/no-such-topic"] = 404
    wanted["/topics/hard-cases?before=garbage"] = 400
    wanted.update(await _hub_statuses(client, store))
    return {path: await _fetch(client, path, status) for path, status in wanted.items()}


async def _hub_statuses(client: Client, store: Storage) -> dict[str, int]:
    """/hub/status pages: a subscribed pair with a notification attempt, a pair whose
    verification failed (callback and detail with markup in them), an unknown pair."""
    topic = f"{client.base_url}/feeds/hard-cases.atom"
    subscribed, failed = (
        'http://127.0.0.1:9/cb?a=<b>&c="d"',
        "http://127.0.0.1:9/x?<i>=1",
    )
    now = utcnow()
    await store.record_verification(Verification(subscribed, topic, "subscribe", now, "confirmed"))
    detail = "answered HTTP 200 without echoing <hub.challenge>"
    await store.record_verification(
        Verification(failed, topic, "subscribe", now, "not_confirmed", detail)
    )
    sub = await store.create_subscription(
        id="sub_html_validity",
        kind="websub",
        url=subscribed,
        topics=["hard-cases"],
        events=[],
        secret="s3cret",
        lease_expires_at=now + timedelta(days=1),
        topic_url=topic,
    )
    seq = (await store.list_events(after=0, limit=1, with_data=False))[0].seq
    await store.create_deliveries(seq, [sub.id])
    claimed = await store.claim_deliveries(worker="vnu", limit=1, lease=timedelta(seconds=30))
    await store.complete_deliveries(
        [
            DeliveryOutcome(
                delivery_id=claimed[0].id,
                subscription_id=sub.id,
                status="failed",
                succeeded=False,
                next_attempt_at=now + timedelta(minutes=5),
                status_code=503,
                error="HTTP 503 <oops>",
                latency_ms=12.5,
            )
        ],
        worker="vnu",
        disable_after=timedelta(days=5),
    )
    return {
        f"/hub/status?{urlencode({'hub.topic': topic, 'hub.callback': callback})}": status
        for callback, status in ((subscribed, 200), (failed, 200), ("http://127.0.0.1:9/no", 404))
    }


async def _validate(files: list[Path]) -> list[dict[str, Any]]:
    process = await asyncio.create_subprocess_exec(
        *_checker(),
        *map(str, files),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), VNU_TIMEOUT)
    assert stdout, stderr.decode()
    messages: list[dict[str, Any]] = json.loads(stdout)["messages"]
    return messages


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_every_page_passes_the_nu_html_checker(
    client: Client, store: Storage, seed_articles: list[dict[str, Any]], tmp_path: Path
) -> None:
    _checker()
    topics, articles = corpus()
    pages = await _pages(client, store, topics, seed_articles + articles)
    assert any('<p class="updated"' in html for html in pages.values())
    assert any("HTTP 503 &lt;oops&gt;" in html for html in pages.values())  # /hub/status
    files: dict[str, str] = {}
    for number, (path, html) in enumerate(pages.items()):
        file = tmp_path / f"page-{number:03d}.html"
        file.write_text(html, "utf-8")
        files[file.name] = path
    messages = await _validate([tmp_path / name for name in files])
    errors = [
        f"{files.get(m.get('url', '').rpartition('/')[2], m.get('url'))}:{m.get('lastLine')}:"
        f" {m['message']} [{m.get('extract', '')!r}]"
        for m in messages
        if m["type"] in ("error", "non-document-error")
    ]
    assert not errors, "\n".join(errors)
    assert len(files) >= len(seed_articles) + len(HARD_ARTICLES) + 5
