"""The partner's portal pages over HTTP, as a browser uses them (tests/portal_support.py):
signed in through the form, every POST with the page's CSRF token, against a real
service and a real partner endpoint on 127.0.0.1 (tests/receiver.py), on both backends
where storage matters."""

from __future__ import annotations

import asyncio
import html
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema_rs
import pytest
from conftest import Client, ServerFactory
from portal_support import Browsers, PortalUser, csrf_of
from receiver import Receiver, respond_with
from standardwebhooks import Webhook
from test_delivery import ARTICLE
from test_delivery import FAST as DELIVERY_FAST

from storage import Storage
from syndicate.core.names import EVENT_TYPES
from syndicate.web.auth import create_token
from syndicate.web.portal.partner_deliveries import LOG_PAGE
from syndicate.web.portal.partner_docs import catalogue

#: Failed deliveries wait an hour: the tests retry and recover them themselves.
FAST = {**DELIVERY_FAST, "retry_schedule": (3600.0,)}
_SECRET = re.compile(r'class="secret[^"]*"[^>]*>([^<]+)<')
_HREF = re.compile(r'href="([^"]+)"')

Users = Callable[[str], Awaitable[PortalUser]]


@pytest.fixture
async def service(start_server: ServerFactory, tokens: dict[str, str]) -> Client:
    client = await start_server(**FAST)
    client.token = tokens["operator"]
    async with client.request("PUT", "/api/topics/liver-health", json={}) as resp:
        assert resp.status in (200, 201)
    return client


@pytest.fixture
async def users(service: Client) -> AsyncIterator[Users]:
    """``await users(token)``: a browser signed in with that token."""
    async with Browsers(service.base_url) as browsers:
        yield browsers.signed_in


def secret_on(page: str) -> str:
    found = _SECRET.search(page)
    assert found is not None, page
    return html.unescape(found.group(1)).strip()


def text_of(page: str) -> str:
    """The page's text, tags dropped and whitespace folded (what a reader sees)."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


async def add_endpoint(user: PortalUser, url: str, **fields: Any) -> tuple[str, str]:
    """Create an endpoint through the form: (its portal path, the secret shown)."""
    path, secret, _ = await add_endpoint_revealed(user, url, **fields)
    return path, secret


async def add_endpoint_revealed(user: PortalUser, url: str, **fields: Any) -> tuple[str, str, str]:
    """Create an endpoint through the form: (its portal path, the secret shown, the
    URL of the page that showed it)."""
    data = {"url": url, "topics": "liver-health", "description": "", **fields}
    status, page, resp = await user.post_form("/portal/endpoints/new", "/portal/endpoints", data)
    assert status == 303, page
    reveal = resp.headers["Location"]
    status, page = await user.get(reveal)
    assert status == 200, page
    links = [h for h in _HREF.findall(page) if re.fullmatch(r"/portal/endpoints/sub_\w+", h)]
    assert links, page
    return links[0], secret_on(page), reveal


async def rotate(user: PortalUser, path: str) -> tuple[int, str, str]:
    """Rotate the secret from the endpoint page, as its button does: (status, the page
    answered, the fingerprint the form said it replaces)."""
    _, page = await user.get(path)
    found = re.search(r'name="replaces" value="([0-9a-f]+)"', page)
    assert found is not None, page
    status, answer, _ = await post(user, path, f"{path}/rotate-secret", replaces=found[1])
    return status, answer, found[1]


async def post(user: PortalUser, page: str, action: str, **fields: str) -> tuple[int, str, str]:
    """Send a form of ``page`` and follow its redirect: (status, page, Location)."""
    status, body, resp = await user.post_form(page, action, fields)
    location = resp.headers.get("Location", "")
    if status == 303:
        status, body = await user.get(location)
    return status, body, location


async def until(check: Callable[[], Any], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.02)


async def test_an_endpoint_from_creation_to_deletion(
    service: Client, receiver: Receiver, users: Users, tokens: dict[str, str]
) -> None:
    user = await users(tokens["partner"])
    status, page = await user.get("/portal/endpoints")
    assert status == 200 and "No endpoints yet" in page

    path, secret = await add_endpoint(user, receiver.url("/hook"), description="Main site")
    assert secret.startswith("whsec_")
    status, page = await user.get(path)
    assert status == 200 and secret not in page, "the secret is shown once"
    assert receiver.url("/hook") in page and "Main site" in page
    status, listing = await user.get("/portal/endpoints")
    assert path in listing and secret not in listing

    # Send test: a ping signed with the secret shown, and its result on a page.
    status, result, _ = await post(user, path, f"{path}/test")
    assert status == 200 and "Test ping delivered" in text_of(result)
    assert "204" in text_of(result)
    (ping,) = receiver.at("/hook")
    payload = Webhook(secret).verify(ping.body, ping.headers)
    assert payload["type"] == "ping" and payload["data"]["subscription_id"] in path

    # A bad URL: the form again, with the field's error and everything as typed.
    typed = {
        "url": "ftp://nowhere",
        "topics": "liver-health, diabetes",
        "description": "Typed <b>text</b>",
        "events": "article.deleted",
    }
    status, page, _ = await user.post_form(f"{path}/edit", f"{path}/edit", typed)
    assert status == 422
    assert 'id="f-url-error"' in page and 'aria-invalid="true"' in page
    assert 'value="ftp://nowhere"' in page and 'value="liver-health, diabetes"' in page
    assert "Typed &lt;b&gt;text&lt;/b&gt;" in page
    assert 'value="article.deleted" checked' in page
    async with service.request(
        "GET", "/api/subscriptions" + path.removeprefix("/portal/endpoints")
    ) as resp:
        assert (await resp.json())["url"] == receiver.url("/hook"), "nothing was saved"

    # A good edit is saved.
    typed["url"] = receiver.url("/hook2")
    status, page, location = await post(user, f"{path}/edit", f"{path}/edit", **typed)
    assert status == 200 and location.startswith(path) and "The endpoint was saved." in page
    assert receiver.url("/hook2") in page and "article.deleted" in page

    # Disable, enable.
    status, page, _ = await post(user, path, f"{path}/disable")
    assert "is disabled" in page and 'class="state disabled"' in page
    status, page, _ = await post(user, path, f"{path}/enable")
    assert "enabled again" in page and 'class="state active"' in page

    # Rotate: a new secret shown once; both sign while the old one's grace lasts.
    status, page, _ = await rotate(user, path)
    new_secret = secret_on(page)
    assert status == 200 and new_secret != secret and "it is not shown again" in page
    assert "old secret keeps working for 24 hours" in text_of(page)
    await post(user, path, f"{path}/test")
    ping = receiver.at("/hook2")[-1]
    Webhook(new_secret).verify(ping.body, ping.headers)
    Webhook(secret).verify(ping.body, ping.headers)

    # Delete, after a confirmation page.
    status, confirm = await user.get(f"{path}/delete")
    assert status == 200 and "cannot be undone" in confirm
    status, page, location = await post(user, f"{path}/delete", f"{path}/delete")
    assert location.startswith("/portal/endpoints?") and "were deleted" in page
    assert path not in page
    assert (await user.get(path))[0] == 404


async def test_bad_input_when_adding_keeps_what_was_typed(
    service: Client, users: Users, tokens: dict[str, str]
) -> None:
    user = await users(tokens["partner"])
    typed = {"url": "not a url", "topics": "", "description": "Kept"}
    status, page, _ = await user.post_form("/portal/endpoints/new", "/portal/endpoints", typed)
    assert status == 422
    assert 'id="f-url-error"' in page and 'id="f-topics-error"' in page
    assert 'value="not a url"' in page and ">Kept</textarea>" in page
    assert 'class="secret' not in page
    async with service.request("GET", "/api/subscriptions") as resp:
        assert (await resp.json())["subscriptions"] == []


async def test_a_partner_sees_only_its_own(
    service: Client, receiver: Receiver, users: Users, tokens: dict[str, str], store: Storage
) -> None:
    owner = await users(tokens["partner"])
    path, _ = await add_endpoint(owner, receiver.url("/hook"))
    async with service.request("POST", "/api/articles", json=ARTICLE) as resp:
        assert resp.status == 201
    await until(lambda: receiver.at("/hook"))
    sub_id = path.rsplit("/", 1)[1]
    await until_attempt(store, sub_id)
    (attempt,) = await store.list_attempts(sub_id)
    delivery = f"{path}/deliveries/{attempt.delivery_id}"
    attempt_page = f"{path}/attempts/{attempt.id}"
    for page in (path, delivery, attempt_page):
        assert (await owner.get(page))[0] == 200, page

    other_token, _ = await create_token(store, name="other-partner", role="partner")
    other = await users(other_token)
    pages = (path, f"{path}/edit", f"{path}/delete", f"{path}/deliveries", f"{path}/status")
    for page in (*pages, f"{path}/recover", delivery, attempt_page):
        status, body = await other.get(page)
        assert status == 404, page
        assert receiver.url("/hook") not in body
    status, listing = await other.get("/portal/endpoints")
    assert path not in listing
    for action in ("/disable", "/delete", "/rotate-secret", "/test", "/edit"):
        status, _, _ = await other.post_form("/portal/endpoints", path + action, {})
        assert status == 404, action
    status, _, _ = await other.post_form("/portal/endpoints", f"{delivery}/retry", {})
    assert status == 404
    # Nothing was changed by the other partner's tries.
    assert (await owner.get(path))[0] == 200

    operator = await users(tokens["operator"])
    status, page = await operator.get(path)
    assert status == 200 and "test-partner" in page


async def test_a_post_without_the_csrf_token_is_refused(
    service: Client, receiver: Receiver, users: Users, tokens: dict[str, str]
) -> None:
    user = await users(tokens["partner"])
    path, _ = await add_endpoint(user, receiver.url("/hook"))
    async with user.session.post(
        user.base + f"{path}/delete", data={"csrf": "forged"}, allow_redirects=False
    ) as resp:
        assert resp.status == 403
    async with user.session.post(
        user.base + "/portal/endpoints", data={"url": receiver.url("/x"), "topics": "*"}
    ) as resp:
        assert resp.status == 403
    assert (await user.get(path))[0] == 200, "still there"


async def until_attempt(store: Storage, sub_id: str, count: int = 1) -> None:
    deadline = time.monotonic() + 10
    while len(await store.list_attempts(sub_id, limit=count)) < count:
        assert time.monotonic() < deadline, "no attempt recorded"
        await asyncio.sleep(0.02)


def local(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")


async def test_delivery_log_attempts_retry_and_recover(
    service: Client, receiver: Receiver, users: Users, tokens: dict[str, str], store: Storage
) -> None:
    user = await users(tokens["partner"])
    receiver.behaviours["/hook"] = respond_with(503, 503, 200)
    before = datetime.now(UTC) - timedelta(minutes=1)
    path, secret = await add_endpoint(user, receiver.url("/hook"))
    sub_id = path.rsplit("/", 1)[1]
    async with service.request("POST", "/api/articles", json=ARTICLE) as resp:
        assert resp.status == 201
    async with service.request(
        "PUT", "/api/articles/liver-1", json={**ARTICLE, "title": "Fatty liver, revised"}
    ) as resp:
        assert resp.status == 200, await resp.text()
    await until_attempt(store, sub_id, 2)
    published, updated = receiver.at("/hook")
    assert Webhook(secret).verify(updated.body, updated.headers)["type"] == "article.updated"

    # The log: newest first, filters.
    log = f"{path}/deliveries"
    status, page = await user.get(log)
    assert status == 200
    rows = text_of(page)
    assert rows.index(updated.message_id) < rows.index(published.message_id)
    assert "article.updated" in rows and "article.published" in rows and "503" in rows
    _, page = await user.get(f"{log}?type=article.updated")
    assert updated.message_id in page and published.message_id not in page
    _, page = await user.get(f"{log}?status=delivered")
    assert updated.message_id not in page and "No deliveries match these filters" in page
    _, page = await user.get(f"{log}?status=failed&since={local(before)}")
    assert updated.message_id in page and published.message_id in page
    soon = datetime.now(UTC) + timedelta(minutes=5)
    _, page = await user.get(f"{log}?until={local(before)}")
    assert published.message_id not in page
    _, page = await user.get(f"{log}?since={local(soon)}")
    assert published.message_id not in page
    status, page = await user.get(f"{log}?since=yesterday&type=article.updated")
    assert status == 422 and 'id="f-since-error"' in page and 'value="yesterday"' in page
    assert '<option value="article.updated" selected>' in page

    # A delivery and its attempt: the request as sent, what came back.
    attempts = await store.list_attempts(sub_id)
    first = next(a for a in attempts if a.event_id == published.message_id)
    delivery = f"{path}/deliveries/{first.delivery_id}"
    status, page = await user.get(delivery)
    assert status == 200 and f"{path}/attempts/{first.id}" in page
    status, page = await user.get(f"{path}/attempts/{first.id}")
    shown = text_of(page)
    assert status == 200
    assert f"webhook-id {published.message_id}" in shown
    assert f"webhook-timestamp {published.headers['webhook-timestamp']}" in shown
    assert "webhook-signature v1,… (not stored)" in shown
    (body,) = re.findall(r"<pre>(.*?)</pre>", page, re.S)[:1]
    assert json.loads(html.unescape(body)) == json.loads(published.body)
    assert "answer 503" in shown and "HTTP 503" in shown

    # Retry one: due now, it arrives (and succeeds) at once.
    status, page, location = await post(user, delivery, f"{delivery}/retry")
    assert location.startswith(delivery) and "due now" in page
    await until(lambda: len(receiver.at("/hook")) == 3)
    assert receiver.at("/hook")[2].message_id == published.message_id
    await until_attempt(store, sub_id, 3)
    _, page = await user.get(delivery)
    assert 'class="state delivered"' in page

    # Recover: the other failed one since a time, counted on the page.
    receiver.behaviours["/hook"] = respond_with(200)
    status, page, _ = await user.post_form(
        f"{path}/recover", f"{path}/recover", {"since": local(before)}
    )
    assert status == 200 and "1 delivery is due again now" in text_of(page)
    await until(lambda: len(receiver.at("/hook")) == 4)
    assert receiver.at("/hook")[3].message_id == updated.message_id
    status, page, _ = await user.post_form(f"{path}/recover", f"{path}/recover", {"since": "soon"})
    assert status == 422 and 'id="f-since-error"' in page and 'value="soon"' in page

    # The status page.
    await until_attempt(store, sub_id, 4)
    status, page = await user.get(f"{path}/status")
    shown = text_of(page)
    assert status == 200 and "Attempts 4" in shown and "Succeeded 2" in shown
    assert "50.0 %" in shown and "nothing is waiting" in shown


def test_every_example_body_validates_against_its_schema() -> None:
    entries = catalogue("https://news.example.org")
    assert [e.type for e in entries] == [*EVENT_TYPES, "ping"]
    for entry in entries:
        jsonschema_rs.validate(entry.schema, entry.example)
        assert entry.example["type"] == entry.type
        wrong = {**entry.example, "data": {"nothing": "here"}}
        with pytest.raises(jsonschema_rs.ValidationError):
            jsonschema_rs.validate(entry.schema, wrong)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_catalogue_and_pull_pages(
    service: Client, receiver: Receiver, users: Users, tokens: dict[str, str]
) -> None:
    user = await users(tokens["partner"])
    status, page = await user.get("/portal/events")
    assert status == 200
    for name in (*EVENT_TYPES, "ping"):
        assert f'id="event-{name.replace(".", "-")}"' in page
    assert "ArticleOut" in page and "DeletedArticleData" in page, "the schemas' definitions"

    # A real push validates against the catalogue's schema for its type.
    _, secret = await add_endpoint(user, receiver.url("/hook"))
    async with service.request("POST", "/api/articles", json=ARTICLE) as resp:
        assert resp.status == 201
    await until(lambda: receiver.at("/hook"))
    pushed = Webhook(secret).verify(receiver.at("/hook")[0].body, receiver.at("/hook")[0].headers)
    schemas = {e.type: e.schema for e in catalogue(service.base_url)}
    jsonschema_rs.validate(schemas[pushed["type"]], pushed)

    status, page = await user.get("/portal/pull")
    assert status == 200
    assert f"{service.base_url}/api/events" in page and "/api/events/stream" in page
    assert "Last-Event-ID" in page and tokens["partner"] not in page
    assert csrf_of(page)  # the sign-out form


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_the_delivery_log_pages_keep_the_filters(
    service: Client, receiver: Receiver, users: Users, tokens: dict[str, str], store: Storage
) -> None:
    user = await users(tokens["partner"])
    path, _ = await add_endpoint(user, receiver.url("/hook"))
    sub_id = path.rsplit("/", 1)[1]
    count = LOG_PAGE + 1
    items = [{**ARTICLE, "id": f"liver-{n}"} for n in range(count)]
    async with service.request("POST", "/api/articles/batch", json={"articles": items}) as resp:
        assert resp.status == 200, await resp.text()
    await until_attempt(store, sub_id, count)
    status, first = await user.get(f"{path}/deliveries?status=delivered")
    assert status == 200 and first.count('class="state delivered"') == LOG_PAGE
    (older,) = re.findall(r'href="([^"]*cursor=[^"]*)"', first)
    older = html.unescape(older)
    assert "status=delivered" in older
    status, second = await user.get(older)
    assert status == 200 and second.count('class="state delivered"') == 1
    assert "cursor=" not in second
    status, page = await user.get(f"{path}/deliveries?cursor=x")
    assert status == 422 and "not one this portal made" in page
