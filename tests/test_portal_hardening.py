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


@pytest.fixture
async def service(start_server: ServerFactory, tokens: dict[str, str]) -> Client:
    client = await start_server(**FAST, write_rate=0.01, write_burst=5)
    client.token = tokens["operator"]
    return client


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
    assert status == 409 and "rotated again since this page was shown" in page
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


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_partners_forms_spend_its_write_rate_limit(
    browsers: Browsers, receiver: Receiver, tokens: dict[str, str]
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
    # Operators are not limited, in the portal as in the API.
    operator = await browsers.signed_in(tokens["operator"])
    for _ in range(7):
        status, _, _ = await operator.post_form(path, f"{path}/test", {})
        assert status == 200


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/portal/endpoints?after=%00", 422),
        ("/portal/endpoints/sub_%00", 404),
        ("/portal/endpoints/sub_x%00/deliveries", 404),
        ("/portal/articles?q=%00", 422),
        ("/portal/articles?q=a%1Bb", 422),
        ("/portal/subscriptions?cursor=%00", 422),
        ("/portal/tokens/%00/revoke", 404),
        ("/portal/endpoints/" + "sub_" + "x" * 3000, 404),
    ],
)
async def test_control_characters_and_odd_ids_are_refused_before_the_database(
    browsers: Browsers, tokens: dict[str, str], path: str, status: int
) -> None:
    user = await browsers.signed_in(tokens["operator"])
    got, page = await user.get(path)
    assert got == status, page[:500]
    assert len(page) < 20_000  # a 3,000-character id is not echoed whole


async def test_the_api_answers_404_for_a_subscription_id_with_a_nul(
    service: Client, tokens: dict[str, str]
) -> None:
    async with service.request("GET", "/api/subscriptions/sub_%00") as resp:
        assert resp.status == 404


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
