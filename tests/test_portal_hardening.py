"""The portal against careless clicks and hostile input (issue 22's review): a second
rotation does not cut off the secret in use, a reload does not make a second
endpoint, a partner's forms spend its write rate limit, control characters never
reach the database or the page, a signed-in browser can still use a link, using the
portal counts as using the token."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from conftest import Client, ServerFactory
from portal_support import Browsers
from receiver import Receiver
from standardwebhooks import Webhook
from test_portal_partner import (
    FAST,
    add_endpoint,
    add_endpoint_revealed,
    post,
    rotate,
    secret_on,
    until_attempt,
)

from storage import Storage
from syndicate.web.auth import create_token


@pytest.fixture
async def service(start_server: ServerFactory, tokens: dict[str, str]) -> Client:
    client = await start_server(**FAST, write_rate=0.01, write_burst=5)
    client.token = tokens["operator"]
    return client


@pytest.fixture
async def second_partner(store: Storage, tokens: dict[str, str]) -> str:
    secret, _ = await create_token(store, name="test-partner-2", role="partner")
    tokens["partner-2"] = secret
    return secret


@pytest.fixture
async def browsers(service: Client) -> AsyncIterator[Browsers]:
    async with Browsers(service.base_url) as b:
        yield b


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_second_rotation_from_the_same_page_rotates_nothing(
    browsers: Browsers, receiver: Receiver, tokens: dict[str, str]
) -> None:
    user = await browsers.signed_in(tokens["partner"])
    path, original = await add_endpoint(user, receiver.url("/hook"))
    status, page, replaces = await rotate(user, path)
    assert status == 200
    first = secret_on(page)
    # The same form sent again (a double click, a resent form): refused, nothing rotated.
    status, page, _ = await user.post_form(path, f"{path}/rotate-secret", {"replaces": replaces})
    assert status == 409 and "was rotated since the page you sent this from was shown" in page
    await post(user, path, f"{path}/test")
    ping = receiver.at("/hook")[-1]
    # The original secret, which the endpoint still checks, still signs; so does the new.
    Webhook(original).verify(ping.body, ping.headers)
    Webhook(first).verify(ping.body, ping.headers)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_reloading_the_new_secret_shows_it_again_without_a_second_endpoint(
    browsers: Browsers, service: Client, receiver: Receiver, tokens: dict[str, str]
) -> None:
    user = await browsers.signed_in(tokens["partner"])
    path, secret, reveal = await add_endpoint_revealed(user, receiver.url("/hook"))
    status, page = await user.get(reveal)
    assert status == 200 and secret_on(page) == secret
    async with service.request("GET", "/api/subscriptions", token=tokens["partner"]) as resp:
        assert len((await resp.json())["subscriptions"]) == 1
    # Another browser of the same partner cannot open it; nor can anyone once rotated.
    other = await browsers.signed_in(tokens["partner"])
    status, page = await other.get(reveal)
    assert status == 410 and secret not in page
    await rotate(user, path)
    status, page = await user.get(reveal)
    assert status == 410 and secret not in page
    forged = re.sub(r"key=[0-9a-f]+", "key=" + "0" * 64, reveal)
    status, _ = await user.get(forged)
    assert status == 410
    # Digits past what Python will read as a number: a 410 and a 404, not a 500.
    status, _ = await user.get(re.sub(r"until=\d+", "until=" + "9" * 5000, reveal))
    assert status == 410
    status, _ = await user.get(f"{path}/deliveries/{'9' * 5000}")
    assert status == 404
    api = f"/api/subscriptions/{path.rsplit('/', 1)[1]}/deliveries/{'9' * 5000}/retry"
    async with service.request("POST", api) as resp:
        assert resp.status == 404


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_partners_forms_spend_its_write_rate_limit(
    browsers: Browsers, receiver: Receiver, tokens: dict[str, str], second_partner: str
) -> None:
    user = await browsers.signed_in(tokens["partner"])
    path, _ = await add_endpoint(user, receiver.url("/hook"))  # one write of the burst of 5
    statuses = []
    for _ in range(6):
        status, _, resp = await user.post_form(path, f"{path}/test", {})
        statuses.append(status)
    assert statuses[:4] == [200] * 4 and statuses[4:] == [429, 429]
    assert int(resp.headers["Retry-After"]) >= 1
    assert len(receiver.at("/hook")) == 4
    # Out of writes, the add form comes back with what was typed and why.
    typed = {"url": receiver.url("/other"), "topics": "liver-health", "description": "Kept"}
    status, page, resp = await user.post_form("/portal/endpoints/new", "/portal/endpoints", typed)
    assert status == 429 and "Retry-After" in resp.headers
    assert "too many requests" in page and ">Kept</textarea>" in page
    # Signing out is never refused.
    status, _, resp = await user.post_form("/portal/endpoints", "/portal/sign-out", {})
    assert status == 303 and resp.headers["Location"].startswith("/portal/sign-in")
    # Another partner, from the same address, is not held back by it, nor by
    # requests without a token from that address.
    other = await browsers.signed_in(tokens["partner-2"])
    for _ in range(10):
        async with other.session.get(other.base + "/api/articles") as resp:
            assert resp.status in (401, 429)
    other_path, _ = await add_endpoint(other, receiver.url("/hook-2"))
    status, _, _ = await other.post_form(other_path, f"{other_path}/test", {})
    assert status == 200
    # Operators are not limited, in the portal as in the API.
    operator = await browsers.signed_in(tokens["operator"])
    for _ in range(7):
        status, _, _ = await operator.post_form(path, f"{path}/test", {})
        assert status == 200


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/portal/endpoints?cursor=%00", 422),
        ("/portal/endpoints?cursor=nope", 422),
        ("/portal/endpoints/sub_%00", 404),
        ("/portal/endpoints/sub_x%00/deliveries", 404),
        ("/portal/articles?q=%00", 422),
        ("/portal/articles?q=a%1Bb", 422),
        ("/portal/subscriptions?cursor=%00", 422),
        ("/portal/tokens/%00/revoke", 404),
        ("/portal/endpoints/" + "sub_" + "x" * 3000, 404),
        ("/portal/endpoints/sub_x/deliveries/" + "9" * 5000, 404),
        ("/portal/tokens/" + "t" * 3000 + "/revoke", 404),
        ("/portal/topics/" + "t" * 3000, 404),
    ],
)
async def test_control_characters_and_odd_ids_are_refused_before_the_database(
    browsers: Browsers, tokens: dict[str, str], path: str, status: int
) -> None:
    user = await browsers.signed_in(tokens["operator"])
    got, page = await user.get(path)
    assert got == status, page[:500]
    assert "x" * 500 not in page and "9" * 500 not in page and "t" * 500 not in page


async def test_the_api_refuses_ids_and_cursors_it_never_made_before_the_database(
    service: Client, tokens: dict[str, str]
) -> None:
    async with service.request("GET", "/api/subscriptions/sub_%00") as resp:
        assert resp.status == 404
    for cursor in ("%00", "nope"):
        async with service.request("GET", f"/api/subscriptions?cursor={cursor}") as resp:
            assert resp.status == 422


async def test_whitespace_in_a_search_is_not_refused(
    browsers: Browsers, tokens: dict[str, str]
) -> None:
    user = await browsers.signed_in(tokens["operator"])
    status, _ = await user.get("/portal/articles?q=liver%09")
    assert status == 200


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_signed_in_browser_can_use_a_link(
    browsers: Browsers, service: Client, tokens: dict[str, str], store: Storage
) -> None:
    user = await browsers.signed_in(tokens["operator"])
    async with service.request("POST", "/api/portal-links", json={"partner": "test-partner"}) as r:
        link = (await r.json())["url"].removeprefix(service.base_url)
    status, _, _ = await user.post_form(link, "/portal/link", {"link": link.rsplit("/", 1)[1]})
    assert status == 303
    _, page = await user.get("/portal/endpoints")
    assert "test-partner (partner)" in page


async def test_using_the_portal_counts_as_using_the_token(
    browsers: Browsers, tokens: dict[str, str], store: Storage
) -> None:
    [before] = [t for t in await store.list_tokens() if t.name == "test-partner"]
    assert before.last_used_at is None
    user = await browsers.signed_in(tokens["partner"])
    await user.get("/portal/endpoints")
    [after] = [t for t in await store.list_tokens() if t.name == "test-partner"]
    assert after.last_used_at is not None


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_whatever_an_endpoint_answers_the_attempt_page_shows_as_text(
    browsers: Browsers, service: Client, receiver: Receiver, tokens: dict[str, str], store: Storage
) -> None:
    async def hostile(request: web.Request) -> web.Response:
        return web.Response(status=500, body=b"\x00\x1b[31mred\x7f\xef\xbf\xbe end")

    receiver.behaviours["/hook"] = hostile
    user = await browsers.signed_in(tokens["partner"])
    path, _ = await add_endpoint(user, receiver.url("/hook"))
    article = {"id": "a1", "title": "T", "content": "<p>c</p>", "topics": ["liver-health"]}
    async with service.request("PUT", "/api/articles/a1", json=article) as resp:
        assert resp.status == 201
    sub_id = path.rsplit("/", 1)[1]
    await until_attempt(store, sub_id)
    (attempt,) = await store.list_attempts(sub_id)
    status, page = await user.get(f"{path}/attempts/{attempt.id}")
    assert status == 200
    assert "\x00" not in page and "\x1b" not in page and "\x7f" not in page
    assert "\ufffe" not in page
    assert "\ufffd[31mred\ufffd\ufffd end" in page
