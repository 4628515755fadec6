"""Every kind of page passes the Nu HTML Checker (vnu) with 0 errors.

The pages of the fixture articles, of hard articles (right-to-left scripts, emoji,
images, HTML pasted with event handlers, a 500-character title, ``& < ]]>`` in every
field; tests/fixtures/corpus.json too when present), the home and topic pages, the
error pages, and every page of the portal (sign-in, link, errors, each partner and
operator page with real data, forms shown again with their errors, pages shown after
a form was sent; signed in through the real forms) are saved, then checked by ONE run
of ``java -jar vnu.jar`` (the JVM start is the slow part). ``make test`` installs the checker
(npm ``vnu-jar``) into ``.venv/vnu``; without java or the jar the test is skipped,
except under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from conftest import FIXTURES, Client, ServerFactory
from portal_support import PortalUser
from receiver import Receiver, respond_with

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
#: Published to the portal's endpoints (topic hard-cases): an event with markup in it.
PORTAL_ARTICLE = {**HARD_ARTICLES[2], "id": "portal-article"}
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


class _Portal:
    """Portal pages as people see them, signed in through the real forms: label -> HTML."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.users: dict[PortalUser, str] = {}
        self.pages: dict[str, str] = {}

    async def user(self, who: str, token: str | None = None) -> PortalUser:
        user = PortalUser(self.client.base_url)
        self.users[user] = who
        if token is not None:
            await user.sign_in(token)
        return user

    def keep(self, user: PortalUser, what: str, html: str) -> None:
        self.pages[f"{len(self.pages):03d} {self.users[user]}: {what}"] = html

    async def get(self, user: PortalUser, path: str, status: int = 200) -> str:
        async with user.session.get(user.base + path) as resp:
            html = await resp.text()
            assert resp.status == status, (path, resp.status, html[:2000])
            assert resp.content_type == "text/html", path
        self.keep(user, f"GET {path} ({status})", html)
        return html

    async def post(
        self,
        user: PortalUser,
        form_page: str,
        action: str,
        fields: dict[str, str],
        status: int | tuple[int, ...] = 200,
    ) -> str:
        """Send a form from ``form_page`` (its CSRF token) and keep the page answered
        (after a 303: the page it leads to, with its notice)."""
        got, html, resp = await user.post_form(form_page, action, fields)
        assert got in (status if isinstance(status, tuple) else (status,)), (action, got, html)
        if got == 303:
            return await self.get(user, resp.headers["Location"])
        assert resp.content_type == "text/html", action
        self.keep(user, f"POST {action} {sorted(fields)} ({got})", html)
        return html

    async def close(self) -> None:
        for user in self.users:
            await user.close()


_ENDPOINT = re.compile(r'href="/portal/endpoints/(sub_[^"/]+)"')
_SINCE = "2020-01-01T00:00:00"


async def _partner_forms(portal: _Portal, token: str, receiver: Receiver) -> list[str]:
    """Sign-in and link pages, and two endpoints made through the form (one whose
    receiver answers 503): their ids."""
    anonymous = await portal.user("anonymous")
    await portal.get(anonymous, "/portal/sign-in")
    await portal.post(anonymous, "/portal/sign-in", "/portal/sign-in", {"token": ""}, 422)
    await portal.post(anonymous, "/portal/sign-in", "/portal/sign-in", {"token": "syn_x"}, 401)
    link = "/portal/link/no-such-link"
    await portal.get(anonymous, link)
    await portal.post(anonymous, link, "/portal/link", {"link": "no-such-link"}, 410)

    partner = await portal.user("partner", token)
    await portal.get(partner, "/portal/endpoints")
    new = "/portal/endpoints/new"
    await portal.get(partner, new)
    bad = {"url": "ftp://x <b>", "topics": "Not A Slug", "description": AMP}
    await portal.post(partner, new, "/portal/endpoints", {**bad, "events": "article.deleted"}, 422)
    receiver.behaviours["/fail"] = respond_with(503)
    ids = []
    for path in ("/ok", "/fail"):
        fields = {"url": receiver.url(path), "topics": "hard-cases", "description": AMP}
        html = await portal.post(partner, new, "/portal/endpoints", fields, 303)
        found = _ENDPOINT.search(html)
        assert found is not None and 'class="secret' in html, html
        ids.append(found.group(1))
    return ids


async def _endpoint_pages(portal: _Portal, token: str, ids: list[str]) -> None:
    partner = await portal.user("partner", token)
    await portal.get(partner, "/portal/endpoints")
    for sub in ids:
        base = f"/portal/endpoints/{sub}"
        await portal.get(partner, base)
        await portal.get(partner, f"{base}/edit")
        await portal.post(partner, f"{base}/edit", f"{base}/edit", {"url": "", "topics": ""}, 422)
        await portal.get(partner, f"{base}/delete")
        await portal.post(partner, base, f"{base}/test", {})
        page = await portal.get(partner, base)
        replaces = re.search(r'name="replaces" value="([0-9a-f]+)"', page)
        assert replaces is not None, page
        fields = {"replaces": replaces.group(1)}
        await portal.post(partner, base, f"{base}/rotate-secret", fields, 303)
        await portal.post(partner, base, f"{base}/rotate-secret", fields, 409)
        log = await portal.get(partner, f"{base}/deliveries")
        await portal.get(partner, f"{base}/deliveries?status=failed&type=article.published")
        await portal.get(partner, f"{base}/deliveries?since={_SINCE}&until=2999-01-01T00:00:00")
        await portal.get(partner, f"{base}/deliveries?status=bogus&since=yesterday", 422)
        delivery = re.search(rf'href="{base}/deliveries/(\d+)"', log)
        assert delivery is not None, log
        html = await portal.get(partner, f"{base}/deliveries/{delivery.group(1)}")
        attempt = re.search(rf'href="({base}/attempts/[^"]+)"', html)
        assert attempt is not None, html
        await portal.get(partner, attempt.group(1))
        await portal.get(partner, f"{base}/recover")
        await portal.post(partner, f"{base}/recover", f"{base}/recover", {"since": _SINCE})
        await portal.post(partner, f"{base}/recover", f"{base}/recover", {"since": "x"}, 422)
        await portal.get(partner, f"{base}/status")
        await portal.post(partner, base, f"{base}/disable", {}, 303)
        await portal.post(partner, base, f"{base}/enable", {}, 303)
        retry = f"{base}/deliveries/{delivery.group(1)}/retry"
        await portal.post(partner, base, retry, {}, 303)
    await portal.get(partner, "/portal/events")
    await portal.get(partner, "/portal/pull")
    await portal.get(partner, "/portal/endpoints/sub_nobody", 404)
    await portal.get(partner, "/portal/dashboard", 403)
    await portal.post(
        partner, f"/portal/endpoints/{ids[0]}/delete", f"/portal/endpoints/{ids[0]}/delete", {}, 303
    )
    await portal.post(partner, "/portal/endpoints", "/portal/sign-out", {}, 303)


async def _operator_pages(portal: _Portal, token: str, articles: list[str]) -> None:
    operator = await portal.user("operator", token)
    for path in (
        "/portal/dashboard",
        "/portal/articles",
        f"/portal/articles?{urlencode({'q': AMP})}",
        "/portal/articles?q=liver",
        "/portal/articles?topic=hard-cases",
        "/portal/topics",
        "/portal/topics/hard-cases",
        "/portal/tokens",
        "/portal/tokens/test-partner/revoke",
        "/portal/tokens/test-operator/revoke",
        "/portal/subscriptions",
        "/portal/subscriptions?kind=websub",
        "/portal/subscriptions?kind=webhook",
        "/portal/endpoints",
        "/portal/events",
    ):
        await portal.get(operator, path)
    for article in articles:
        await portal.get(operator, f"/portal/articles/{article}")
        await portal.get(operator, f"/portal/articles/{article}/delete")
    await portal.get(operator, "/portal/articles/no-such-article", 404)
    topic = "/portal/topics/hard-cases"
    await portal.post(operator, topic, topic, {"title": "t" * 1000, "description": AMP}, 422)
    tokens = "/portal/tokens"
    await portal.post(operator, tokens, tokens, {"name": "a <b>", "role": "x"}, 422)
    made = {"name": "new-partner", "role": "partner"}
    assert 'class="secret' in await portal.post(operator, tokens, tokens, made)
    await portal.post(operator, tokens, tokens, made, (409, 422))
    await portal.post(operator, topic, topic, {"title": f"Hard {AMP}", "description": AMP}, 303)
    revoke = "/portal/tokens/new-partner/revoke"
    await portal.post(operator, revoke, revoke, {}, 303)
    gone = f"/portal/articles/{articles[0]}/delete"
    await portal.post(operator, gone, gone, {}, 303)


async def _portal_pages(
    client: Client, tokens: dict[str, str], receiver: Receiver, store: Storage
) -> dict[str, str]:
    """Every page of the portal, with deliveries and attempts to show: label -> HTML."""
    portal = _Portal(client)
    try:
        ids = await _partner_forms(portal, tokens["partner"], receiver)
        async with client.request("PUT", "/api/articles/portal-article", json=PORTAL_ARTICLE) as r:
            assert r.status in (200, 201), await r.text()
        for _ in range(200):
            if all([await store.list_attempts(sub, limit=1) for sub in ids]):
                break
            await asyncio.sleep(0.05)
        await _endpoint_pages(portal, tokens["partner"], ids)
        await _operator_pages(portal, tokens["operator"], [a["id"] for a in HARD_ARTICLES])
    finally:
        await portal.close()
    return portal.pages


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_every_page_passes_the_nu_html_checker(
    start_server: ServerFactory,
    tokens: dict[str, str],
    receiver: Receiver,
    store: Storage,
    seed_articles: list[dict[str, Any]],
    tmp_path: Path,
) -> None:
    _checker()
    # Endpoints on 127.0.0.1 (the receiver); a failed delivery waits for its retry.
    client = await start_server(allow_private_targets=True, retry_schedule=(3600.0,))
    client.token = tokens["operator"]
    topics, articles = corpus()
    pages = await _pages(client, store, topics, seed_articles + articles)
    assert any('<p class="updated"' in html for html in pages.values())
    assert any("HTTP 503 &lt;oops&gt;" in html for html in pages.values())  # /hub/status
    portal = await _portal_pages(client, tokens, receiver, store)
    assert any("answer 503" in html for html in portal.values())  # an attempt's answer
    pages.update(portal)
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
