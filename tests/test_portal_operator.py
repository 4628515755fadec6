"""The operator's portal pages (issue 22) over real HTTP, signed in through the real
form with a cookie jar, on both backends: the dashboard after real deliveries to
real receivers, articles (search, topic list, delete), topics, tokens (create,
revoke: the partner is signed out), every subscription."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from html import unescape
from typing import Any

import pytest
from conftest import Client, ServerFactory
from portal_support import Browsers, PortalUser, csrf_of
from receiver import Receiver, respond_with
from test_delivery import FAST as DELIVERY_FAST
from test_delivery import subscribe
from test_status_pages import until
from test_websub import Subscriber, hub_post

from storage import Storage
from storage.records import utcnow

# One failed attempt, then the retry waits an hour: the dashboard sees it pending.
FAST = {**DELIVERY_FAST, "retry_schedule": (3600.0,)}
UserFactory = Callable[[str], Awaitable[PortalUser]]


@pytest.fixture
async def service(start_server: ServerFactory, tokens: dict[str, str]) -> Client:
    client = await start_server(**FAST)
    client.token = tokens["operator"]
    return client


@pytest.fixture
async def user(service: Client) -> AsyncIterator[UserFactory]:
    """``await user(token)``: a browser of its own, signed in with that token."""
    async with Browsers(service.base_url) as browsers:
        yield browsers.signed_in


@pytest.fixture
async def operator(user: UserFactory, tokens: dict[str, str]) -> PortalUser:
    return await user(tokens["operator"])


async def put_article(client: Client, article_id: str, title: str, *topics: str) -> None:
    body = {
        "id": article_id,
        "title": title,
        "content": f"<p>About {article_id}.</p>",
        "topics": list(topics) or ["liver-health"],
        "published_at": "2026-01-10T08:00:00Z",
    }
    async with client.request("PUT", f"/api/articles/{article_id}", json=body) as resp:
        assert resp.status in (200, 201), await resp.text()


def text_of(html: str) -> str:
    """The page's text as a reader sees it: tags dropped, entities decoded, spaces folded."""
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def article_links(html: str) -> list[str]:
    return re.findall(r'href="/portal/articles/([^"/]+)"', html)


async def post(
    u: PortalUser, page: str, action: str, fields: dict[str, str]
) -> tuple[int, str, Any]:
    return await u.post_form(page, action, fields)


# -- dashboard ---------------------------------------------------------------------------


def chart_counts(html: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for count, outcome in re.findall(r"UTC: (\d+) (\w+)</title>", html):
        counts[outcome] = counts.get(outcome, 0) + int(count)
    return counts


async def test_the_dashboard_shows_real_deliveries_and_a_failing_endpoint(
    service: Client, operator: PortalUser, receiver: Receiver, tokens: dict[str, str]
) -> None:
    status, html = await operator.get("/portal/dashboard")
    assert status == 200 and "No attempts in the last hour" in html
    assert "No endpoint is failing." in html and 'role="img"' in html

    receiver.behaviours["/down"] = respond_with(500)
    await subscribe(service, tokens["partner"], receiver.url("/ok"))
    down = await subscribe(service, tokens["partner"], receiver.url("/down"))
    await put_article(service, "dash-1", "Dashboard news")
    await receiver.wait_for(lambda: receiver.at("/ok") and receiver.at("/down"))

    async def counted() -> str | None:
        _, page = await operator.get("/portal/dashboard")
        return page if chart_counts(page) == {"delivered": 1, "failed": 1} else None

    html = await until(counted)
    text = text_of(html)
    assert "Attempts in the last hour 2" in text
    # The failed delivery waits an hour for its retry: one waiting, none due.
    assert "Waiting to be delivered 1" in text and "Due now 0" in text
    assert "nothing is waiting" not in text
    # The same numbers for screen readers, in a table.
    rows = re.findall(
        r'<tr><th scope="row">(?:<time[^>]*>)?[^<]+(?:</time>)?</th>'
        r'((?:<td class="num">\d+</td>)+)</tr>',
        html,
    )
    columns = [[int(n) for n in re.findall(r"\d+", row)] for row in rows]
    assert [sum(c) for c in zip(*columns, strict=True)] == [1, 1, 0, 2]  # delivered failed dead
    # The failing endpoint, linked to its page; the working one is not listed as failing.
    failing = html.split('id="failing-h"')[1].split("</section>")[0]
    assert f'href="/portal/endpoints/{down["id"]}"' in failing
    assert receiver.url("/down") in unescape(failing) and receiver.url("/ok") not in failing
    workers = html.split('id="workers-h"')[1].split("</section>")[0]
    assert "<td" in workers and "No process is delivering" not in workers
    assert "style=" not in html


# -- articles -----------------------------------------------------------------------------


async def test_articles_are_found_by_title_and_listed_by_topic(
    service: Client, operator: PortalUser
) -> None:
    await put_article(service, "pct", "A 100% liver diet", "liver-health")
    await put_article(service, "under", "snake_case for livers", "liver-health")
    await put_article(service, "plain", "Liver basics", "liver-health", "heart")
    await put_article(service, "heart-only", "Heart news", "heart")

    async def found(query: str, topic: str = "") -> list[str]:
        params = {"q": query, "topic": topic}
        async with operator.session.get(
            operator.base + "/portal/articles", params=params, allow_redirects=False
        ) as resp:
            assert resp.status == 200, await resp.text()
            return article_links(await resp.text())

    assert set(await found("liver")) == {"pct", "under", "plain"}  # any case
    assert await found("%") == ["pct"]  # a plain character, not a wildcard
    assert await found("_") == ["under"]
    assert await found("LIVER", "heart") == ["plain"]
    assert await found("nothing like it") == []
    assert set(await found("", "heart")) == {"plain", "heart-only"}
    assert len(await found("")) == 4

    status, html = await operator.get("/portal/articles?topic=no-such-topic&q=typed")
    assert status == 422
    assert "there is no such topic" in html and 'value="typed"' in html


async def test_an_article_is_read_and_deleted_as_the_api_would(
    service: Client, operator: PortalUser
) -> None:
    await put_article(service, "doomed", "Doomed <article>", "liver-health")
    await put_article(service, "kept", "Kept article", "liver-health")
    status, html = await operator.get("/portal/articles/doomed")
    assert status == 200
    assert "Doomed &lt;article&gt;" in html and "<p>About doomed.</p>" in html
    assert f'href="{service.base_url}/articles/doomed-article"' in html

    status, _, resp = await post(
        operator, "/portal/articles/doomed/delete", "/portal/articles/doomed/delete", {}
    )
    assert status == 303 and resp.headers["Location"].startswith("/portal/articles/doomed")
    status, html = await operator.get(resp.headers["Location"])
    assert status == 200 and "The article was deleted" in html and "Delete this article" not in html

    async with service.request("GET", "/api/articles/doomed") as api:
        assert api.status == 410 and "deleted" in (await api.json())["detail"]
    async with service.request("GET", "/feeds/liver-health.json", token="") as feed:
        items = [item["title"] for item in (await feed.json())["items"]]
    assert items == ["Kept article"]
    async with service.request("GET", "/api/events") as events:
        types = [(e["type"], e["data"]["id"]) for e in (await events.json())["events"]]
    assert types[-1] == ("article.deleted", "doomed")

    status, _ = await operator.get("/portal/articles/no-such-article")
    assert status == 404


# -- topics -------------------------------------------------------------------------------


async def test_a_topic_is_edited_and_bad_input_keeps_what_was_typed(
    service: Client, operator: PortalUser
) -> None:
    await put_article(service, "t1", "Topic article", "liver-health")
    status, html = await operator.get("/portal/topics")
    assert status == 200 and "Liver health" in html and 'href="/portal/topics/liver-health"' in html

    long_title = "T" * 201
    status, html, _ = await post(
        operator,
        "/portal/topics/liver-health",
        "/portal/topics/liver-health",
        {"title": long_title, "description": "Typed <b>description</b>"},
    )
    assert status == 422
    assert 'aria-invalid="true"' in html and 'id="f-title-error"' in html
    assert (
        f'value="{long_title}"' in html
        and "Typed &lt;b&gt;description&lt;/b&gt;</textarea>" in html
    )

    status, _, resp = await post(
        operator,
        "/portal/topics/liver-health",
        "/portal/topics/liver-health",
        {"title": "Liver & gut", "description": "All about livers."},
    )
    assert status == 303
    status, html = await operator.get(resp.headers["Location"])
    assert status == 200 and "The topic was saved." in html
    async with service.request("GET", "/api/topics") as api:
        (topic,) = (await api.json())["topics"]
    assert (topic["title"], topic["description"]) == ("Liver & gut", "All about livers.")

    # No title: the slug written out, as the API does.
    status, _, _ = await post(
        operator, "/portal/topics/liver-health", "/portal/topics/liver-health", {"title": ""}
    )
    assert status == 303
    async with service.request("GET", "/api/topics") as api:
        (topic,) = (await api.json())["topics"]
    assert (topic["title"], topic["description"]) == ("Liver health", "")
    status, _ = await operator.get("/portal/topics/no-such-topic")
    assert status == 404


# -- tokens -------------------------------------------------------------------------------


async def test_a_token_is_made_and_its_secret_shown_once(
    service: Client, operator: PortalUser
) -> None:
    status, html, _ = await post(
        operator, "/portal/tokens", "/portal/tokens", {"name": "acme", "role": "partner"}
    )
    assert status == 200
    found = re.search(r'<p class="secret[^"]*">(syn_[^<]+)</p>', html)
    assert found is not None
    secret = found.group(1)
    async with service.request("GET", "/api/topics", token=secret) as api:
        assert api.status == 200
    status, html = await operator.get("/portal/tokens")
    assert status == 200 and "acme" in html and secret not in html and 'class="secret' not in html

    status, html, _ = await post(
        operator, "/portal/tokens", "/portal/tokens", {"name": "acme", "role": "operator"}
    )
    assert status == 409
    assert "already" in html and 'value="acme"' in html
    assert re.search(r'value="operator" id="f-role" checked|value="operator"[^>]*checked', html)
    status, html, _ = await post(
        operator, "/portal/tokens", "/portal/tokens", {"name": "bad name!", "role": "partner"}
    )
    assert status == 422 and 'value="bad name!"' in html and "starting with a letter" in html


async def test_revoking_a_partners_token_signs_the_partner_out(
    service: Client, operator: PortalUser, user: UserFactory, tokens: dict[str, str]
) -> None:
    partner = await user(tokens["partner"])

    async def partner_status() -> tuple[int, str, str]:
        async with partner.session.get(
            partner.base + "/portal/dashboard", allow_redirects=False
        ) as resp:
            return resp.status, resp.headers.get("Location", ""), resp.content_type

    # Signed in, but an operator's page is not for a partner: an HTML 403.
    assert await partner_status() == (403, "", "text/html")
    status, html = await operator.get("/portal/tokens/test-partner/revoke")
    assert status == 200 and "stops working at once" in html
    assert "you are signed in with" not in html

    status, _, resp = await post(
        operator,
        "/portal/tokens/test-partner/revoke",
        "/portal/tokens/test-partner/revoke",
        {},
    )
    assert status == 303 and resp.headers["Location"].startswith("/portal/tokens")
    back = resp.headers["Location"]
    status, location, _ = await partner_status()
    assert status == 303 and location.startswith("/portal/sign-in")
    async with service.request("GET", "/api/topics", token=tokens["partner"]) as api:
        assert api.status == 401
    status, html = await operator.get(back)
    assert "The token was revoked" in html and "revoked" in text_of(html)
    status, _ = await operator.get("/portal/tokens/test-partner/revoke")
    assert status == 404


async def test_revoking_ones_own_token_asks_again_then_signs_out(
    service: Client, operator: PortalUser, tokens: dict[str, str], store: Storage
) -> None:
    page = "/portal/tokens/test-operator/revoke"
    status, html = await operator.get(page)
    assert status == 200 and "This is the token you are signed in with" in html
    # A form that did not come from the warning: nothing revoked, the warning shown.
    status, html = await operator.get("/portal/tokens")
    async with operator.session.post(
        operator.base + page, data={"csrf": csrf_of(html)}, allow_redirects=False
    ) as resp:
        assert resp.status == 409
        assert "This is the token you are signed in with" in await resp.text()
    assert await store.get_live_token("test-operator") is not None

    status, html = await operator.get(page)
    async with operator.session.post(
        operator.base + page, data={"csrf": csrf_of(html), "own": "yes"}, allow_redirects=False
    ) as resp:
        assert resp.status == 303 and resp.headers["Location"].startswith("/portal/sign-in")
    assert await store.get_live_token("test-operator") is None
    status, html = await operator.get("/portal/dashboard")
    assert status == 200 and "Sign in" in html and "Delivery health" not in html


async def test_operator_forms_refuse_a_post_without_csrf(
    service: Client, operator: PortalUser, store: Storage
) -> None:
    for path, fields in [
        ("/portal/tokens", {"name": "sneaky", "role": "operator"}),
        ("/portal/tokens/test-partner/revoke", {}),
    ]:
        async with operator.session.post(
            operator.base + path, data=fields, allow_redirects=False
        ) as resp:
            assert resp.status == 403 and resp.content_type == "text/html"
    assert await store.get_live_token("sneaky") is None
    assert await store.get_live_token("test-partner") is not None


async def test_a_partner_gets_403_on_every_operator_page(
    service: Client, user: UserFactory, tokens: dict[str, str]
) -> None:
    await put_article(service, "p1", "Partner cannot see", "liver-health")
    partner = await user(tokens["partner"])
    for path in [
        "/portal/dashboard",
        "/portal/articles",
        "/portal/articles/p1",
        "/portal/articles/p1/delete",
        "/portal/topics",
        "/portal/topics/liver-health",
        "/portal/tokens",
        "/portal/tokens/test-operator/revoke",
        "/portal/subscriptions",
    ]:
        status, html = await partner.get(path)
        assert status == 403, path
        assert "Partner cannot see" not in html


# -- subscriptions ------------------------------------------------------------------------


async def test_every_subscription_is_listed_with_its_state(
    service: Client,
    operator: PortalUser,
    receiver: Receiver,
    tokens: dict[str, str],
    store: Storage,
) -> None:
    hook = await subscribe(service, tokens["partner"], receiver.url("/hook"))
    off = await subscribe(service, tokens["partner"], receiver.url("/off"))
    async with service.request(
        "PATCH", f"/api/subscriptions/{off['id']}", json={"status": "disabled"}
    ) as resp:
        assert resp.status == 200
    subscriber = Subscriber()
    await subscriber.start()
    try:
        topic = f"{service.base_url}/feeds/liver-health.atom"
        callback = subscriber.url("/cb?x=1&y=2")
        async with service.request("PUT", "/api/topics/liver-health", json={}) as resp:
            assert resp.status in (200, 201)
        form = {"hub.mode": "subscribe", "hub.topic": topic, "hub.callback": callback}
        assert (await hub_post(service, form))[0] == 202
        await until(lambda: store.find_websub_subscription(callback, topic))
    finally:
        await subscriber.close()
    await store.create_subscription(
        id="sub_zz_expired",
        kind="websub",
        url="http://127.0.0.1:9/expired",
        topics=["liver-health"],
        events=[],
        secret=None,
        lease_expires_at=utcnow() - timedelta(hours=1),
        topic_url=topic,
    )

    status, html = await operator.get("/portal/subscriptions")
    assert status == 200
    rows = re.findall(r'<tr>\s*<td>(webhook|WebSub)</td>.*?<span class="state (\w+)">', html, re.S)
    assert sorted(rows) == [
        ("WebSub", "active"),
        ("WebSub", "expired"),
        ("webhook", "active"),
        ("webhook", "disabled"),
    ]
    assert f'href="/portal/endpoints/{hook["id"]}"' in html
    assert f'href="/portal/endpoints/{off["id"]}"' in html
    hub_link = re.search(
        r'href="(/hub/status\?[^"]+)">' + re.escape(callback.replace("&", "&amp;")), html
    )
    assert hub_link is not None
    async with service.session.get(
        service.url(unescape(hub_link.group(1))), headers={"Accept": "application/json"}
    ) as resp:
        assert resp.status == 200 and (await resp.json())["state"] == "active"

    status, html = await operator.get("/portal/subscriptions?kind=websub")
    assert status == 200 and sorted(re.findall(r'<span class="state (\w+)">', html)) == [
        "active",
        "expired",
    ]
    status, html = await operator.get("/portal/subscriptions?kind=carrier-pigeon")
    assert status == 422 and 'id="f-kind-error"' in html
