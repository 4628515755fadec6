"""Signing in to the portal: with a token or a single-use link, sessions, sign-out,
CSRF on every form, rate-limited attempts (issue 22). Over real HTTP, with a cookie
jar, as a browser would. What depends on the storage runs on both backends; the
rest on SQLite (the verbs themselves are tested on both in test_storage_portal)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import pytest
from conftest import Client, ServerFactory, expect_problem
from portal_support import Browsers, PortalUser, csrf_of
from test_cli import run

from storage import Storage
from storage.records import utcnow
from syndicate.web.auth import create_token, hash_token

UserFactory = Callable[[Client], Awaitable[PortalUser]]


@pytest.fixture
async def user() -> AsyncIterator[UserFactory]:
    """``await user(client)``: a browser of that service that has not signed in."""
    browsers: list[Browsers] = []

    async def make(client: Client) -> PortalUser:
        browsers.append(Browsers(client.base_url))
        return await browsers[-1].new()

    yield make
    for b in browsers:
        await b.__aexit__()


async def _link(client: Client, partner: str = "test-partner", **body: object) -> str:
    async with client.request("POST", "/api/portal-links", json={"partner": partner, **body}) as r:
        assert r.status == 201, await r.text()
        answer = await r.json()
    assert answer["partner"] == partner
    url: str = answer["url"]
    assert url.startswith(client.base_url + "/portal/link/")
    return url.removeprefix(client.base_url)


def _session_cookie(user: PortalUser) -> str | None:
    for cookie in user.session.cookie_jar:
        if cookie.key == "syndicate_session":
            return cookie.value
    return None


async def test_a_partner_signs_in_with_its_token_and_lands_on_its_endpoints(
    client: Client, tokens: dict[str, str], user: UserFactory, store: Storage
) -> None:
    u = await user(client)
    status, html = await u.get("/portal/endpoints")
    assert status == 200 and "Sign in" in html  # redirected to the sign-in form
    status, _, resp = await u.post_form(
        "/portal/sign-in?next=/portal/endpoints", "/portal/sign-in", {"token": tokens["partner"]}
    )
    assert status == 303
    cookie = resp.headers["Set-Cookie"]
    assert "syndicate_session=" in cookie
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/portal" in cookie
    assert "Secure" not in cookie  # plain http here; see the https test
    secret = _session_cookie(u)
    assert secret is not None
    session = await store.get_portal_session(hash_token(secret))
    assert session is not None and session.token.name == "test-partner"
    status, html = await u.get("/portal/")
    assert status == 200 and "test-partner (partner)" in html and "Sign out" in html


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_wrong_token_gets_the_form_again_with_the_error(
    client: Client, user: UserFactory
) -> None:
    u = await user(client)
    status, html, _ = await u.post_form(
        "/portal/sign-in", "/portal/sign-in", {"token": "syn_not-a-token"}
    )
    assert status == 401
    assert "This token is not valid" in html
    assert 'aria-invalid="true"' in html
    assert "syn_not-a-token" not in html  # a secret is never echoed back
    status, html, _ = await u.post_form("/portal/sign-in", "/portal/sign-in", {"token": " "})
    assert status == 422 and "Enter your API token" in html
    assert _session_cookie(u) is None


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_sign_in_attempts_are_rate_limited_per_address(
    client: Client, tokens: dict[str, str], user: UserFactory
) -> None:
    u = await user(client)
    statuses = []
    for _ in range(12):
        status, html, resp = await u.post_form(
            "/portal/sign-in", "/portal/sign-in", {"token": "syn_guess"}
        )
        statuses.append(status)
    assert statuses[:10] == [401] * 10
    assert statuses[10:] == [429, 429]
    assert int(resp.headers["Retry-After"]) >= 1
    assert "Too many sign-in attempts" in html
    # Even the right token waits: the limit is on attempts, not on failures.
    status, _, _ = await u.post_form(
        "/portal/sign-in", "/portal/sign-in", {"token": tokens["partner"]}
    )
    assert status == 429


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_post_without_the_csrf_token_or_from_another_site_is_refused(
    client: Client, tokens: dict[str, str], user: UserFactory
) -> None:
    u = await user(client)
    url = client.url("/portal/sign-in")
    async with u.session.post(url, data={"token": tokens["partner"]}) as resp:
        assert resp.status == 403
        assert "Form refused" in await resp.text()
    _, html = await u.get("/portal/sign-in")
    good = {"token": tokens["partner"], "csrf": csrf_of(html)}
    headers = {"Origin": "http://evil.example"}
    async with u.session.post(url, data=good, headers=headers, allow_redirects=False) as resp:
        assert resp.status == 403
    cross = {"Sec-Fetch-Site": "cross-site"}
    async with u.session.post(url, data=good, headers=cross, allow_redirects=False) as resp:
        assert resp.status == 403
    assert _session_cookie(u) is None
    await u.sign_in(tokens["partner"])
    # Signed in, the session's own token is needed: the sign-in form's is not it.
    async with u.session.post(
        client.url("/portal/sign-out"), data={"csrf": good["csrf"]}, allow_redirects=False
    ) as resp:
        assert resp.status == 403
    _status, html = await u.get("/portal/endpoints")
    assert "Sign out" in html


async def test_sign_out_ends_the_session_on_the_server(
    client: Client, tokens: dict[str, str], user: UserFactory
) -> None:
    u = await user(client)
    await u.sign_in(tokens["partner"])
    secret = _session_cookie(u)
    status, _, resp = await u.post_form("/portal/endpoints", "/portal/sign-out", {})
    assert status == 303 and resp.headers["Location"].startswith("/portal/sign-in")
    # The old cookie, replayed, no longer signs anyone in.
    replay = await user(client)
    replay.session.cookie_jar.update_cookies({"syndicate_session": secret or ""})
    async with replay.session.get(client.url("/portal/endpoints"), allow_redirects=False) as r:
        assert r.status == 303 and r.headers["Location"].startswith("/portal/sign-in")


async def test_a_revoked_token_signs_its_sessions_out(
    client: Client, tokens: dict[str, str], user: UserFactory, store: Storage
) -> None:
    u = await user(client)
    await u.sign_in(tokens["partner"])
    _status, html = await u.get("/portal/")
    assert "test-partner" in html
    await store.revoke_token("test-partner")
    async with u.session.get(client.url("/portal/endpoints"), allow_redirects=False) as resp:
        assert resp.status == 303 and resp.headers["Location"].startswith("/portal/sign-in")


async def test_a_portal_link_signs_the_partner_in_once(
    client: Client, tokens: dict[str, str], user: UserFactory
) -> None:
    path = await _link(client, ttl_seconds=600)
    u = await user(client)
    # Opening the link (a mail scanner would) spends nothing.
    for _ in range(2):
        status, html = await u.get(path)
        assert status == 200 and "Sign in" in html
    status, _, _resp = await u.post_form(path, "/portal/link", {"link": path.rsplit("/", 1)[1]})
    assert status == 303
    status, html = await u.get("/portal/")
    assert status == 200 and "test-partner (partner)" in html
    # Used once: a second browser cannot use it again.
    other = await user(client)
    status, html, _ = await other.post_form(path, "/portal/link", {"link": path.rsplit("/", 1)[1]})
    assert status == 410 and "expired or was already used" in html
    assert _session_cookie(other) is None


async def test_an_expired_link_or_a_made_up_one_signs_nobody_in(
    client: Client, tokens: dict[str, str], user: UserFactory, store: Storage
) -> None:
    partner = await store.get_live_token("test-partner")
    assert partner is not None
    await store.create_portal_link(
        link_hash=hash_token("expired-secret-0123456789"),
        token_id=partner.id,
        expires_at=utcnow() - timedelta(seconds=1),
    )
    u = await user(client)
    for secret in ("expired-secret-0123456789", "made-up", "x" * 500):
        status, _html, _ = await u.post_form("/portal/link/x", "/portal/link", {"link": secret})
        assert status == 410, secret
    assert _session_cookie(u) is None


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_only_operators_make_links_and_only_for_live_partner_tokens(
    client: Client, tokens: dict[str, str]
) -> None:
    body = {"partner": "test-partner"}
    async with client.request("POST", "/api/portal-links", json=body, token="") as resp:
        await expect_problem(resp, 401)
    async with client.request(
        "POST", "/api/portal-links", json=body, token=tokens["partner"]
    ) as resp:
        await expect_problem(resp, 403)
    async with client.request("POST", "/api/portal-links", json={"partner": "nobody"}) as resp:
        await expect_problem(resp, 404)
    async with client.request(
        "POST", "/api/portal-links", json={"partner": "test-operator"}
    ) as resp:
        problem = await expect_problem(resp, 422)
        assert problem["errors"][0]["field"] == "partner"
    for ttl in (59, 7 * 86400 + 1):
        async with client.request(
            "POST", "/api/portal-links", json={**body, "ttl_seconds": ttl}
        ) as resp:
            problem = await expect_problem(resp, 422)
            assert problem["errors"][0]["field"] == "ttl_seconds"


async def test_a_link_stops_working_when_its_token_is_revoked(
    client: Client, tokens: dict[str, str], user: UserFactory, store: Storage
) -> None:
    path = await _link(client)
    await store.revoke_token("test-partner")
    u = await user(client)
    status, _, _ = await u.post_form(path, "/portal/link", {"link": path.rsplit("/", 1)[1]})
    assert status == 410


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_after_sign_in_only_portal_paths_are_followed(
    client: Client, tokens: dict[str, str], user: UserFactory
) -> None:
    for target in ("//evil.example/x", "https://evil.example/", "/api/articles", "/portal\\x"):
        u = await user(client)
        status, _, resp = await u.post_form(
            "/portal/sign-in", "/portal/sign-in", {"token": tokens["partner"], "next": target}
        )
        assert status == 303 and resp.headers["Location"] == "/portal/", target


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_sessions_are_secure_cookies_behind_https(
    start_server: ServerFactory, tokens: dict[str, str], user: UserFactory
) -> None:
    """Behind an https proxy (an https base URL) both cookies are ``Secure``. The test
    talks plain http to the server, so it hands the form cookie back itself."""
    client = await start_server(base_url="https://portal.example")
    u = await user(client)
    async with u.session.get(client.url("/portal/sign-in")) as resp:
        form_cookie = resp.headers["Set-Cookie"]
        csrf = csrf_of(await resp.text())
    assert form_cookie.startswith("syndicate_form=") and "Secure" in form_cookie
    async with u.session.post(
        client.url("/portal/sign-in"),
        data={"token": tokens["partner"], "csrf": csrf},
        headers={"Cookie": f"syndicate_form={csrf}"},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 303
        session_cookie = resp.headers["Set-Cookie"]
    assert session_cookie.startswith("syndicate_session=") and "Secure" in session_cookie
    assert "HttpOnly" in session_cookie and "SameSite=Strict" in session_cookie


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_portal_pages_forbid_scripts_framing_and_caching(
    client: Client, user: UserFactory
) -> None:
    u = await user(client)
    async with u.session.get(client.url("/portal/sign-in")) as resp:
        csp = resp.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "script-src" not in csp
        assert "frame-ancestors 'none'" in csp and "form-action 'self'" in csp
        assert resp.headers["Cache-Control"] == "no-store"
        assert "<script" not in await resp.text()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_the_cli_prints_a_link_that_signs_the_partner_in(
    start_server: ServerFactory, database_url: str, tokens: dict[str, str], user: UserFactory
) -> None:
    client = await start_server()
    args = ("portal-link", "test-partner", "--database", database_url)
    code, out, err = await run(*args, "--ttl", "30m")
    assert code == 0, err
    url = out.strip()
    assert "/portal/link/" in url and "single use" in err
    secret = url.rsplit("/", 1)[1]
    u = await user(client)
    status, _, _ = await u.post_form(f"/portal/link/{secret}", "/portal/link", {"link": secret})
    assert status == 303
    status, html = await u.get("/portal/")
    assert "test-partner (partner)" in html

    code, _, err = await run(*args, "--ttl", "9d")
    assert code == 2 and "between 1m and 7d" in err
    code, _, err = await run("portal-link", "test-operator", "--database", database_url)
    assert code == 1 and "portal links are for partner tokens" in err


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_an_operator_signs_in_with_its_token_and_lands_on_the_dashboard(
    client: Client, store: Storage, user: UserFactory
) -> None:
    secret, _ = await create_token(store, name="ops-2", role="operator")
    u = await user(client)
    await u.sign_in(secret)
    status, html = await u.get("/portal/")
    assert status == 200 and "ops-2 (operator)" in html
