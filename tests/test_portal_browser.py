"""The portal in a real browser (Chromium through Playwright): what a partner and an
operator do with it, end to end, against the real service on 127.0.0.1 and a real
partner receiver. Every page a test opens is watched: a console error, a script
error or a failed request fails the test.

One browser serves the whole module (its start is the slow part); each person in a
test is a fresh browser context (its own cookies). The module's tests share one
event loop with the browser.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from browser_support import LAUNCH_ARGS, NARROW, Service, Tab, chromium_or_skip, running_service
from playwright.async_api import Browser, async_playwright
from receiver import Received, respond_with
from standardwebhooks import Webhook

from storage.records import DeliveryAttempt
from syndicate.web.portal.render import CSP

pytestmark = pytest.mark.asyncio(loop_scope="module")

TabFactory = Callable[..., Awaitable[Tab]]
ARTICLE = {
    "id": "browser-article",
    "title": "Liver health in a browser",
    "content": "<p>Body</p>",
    "topics": ["liver-health"],
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    executable = chromium_or_skip()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=executable, args=LAUNCH_ARGS)
        yield launched
        await launched.close()


@pytest_asyncio.fixture(loop_scope="module")
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    # A failed delivery waits a minute for its retry: long enough for a person to
    # replay it by hand first.
    async with running_service(tmp_path, retry_schedule=(60.0,)) as started:
        yield started


@pytest_asyncio.fixture(loop_scope="module")
async def tab(browser: Browser, service: Service) -> AsyncIterator[TabFactory]:
    """``await tab()``: a new person (browser context) with one page; none of them may
    see a console error, a script error or a failed request."""
    opened: list[Tab] = []

    async def make(width: int = 1280) -> Tab:
        context = await browser.new_context(viewport={"width": width, "height": 900})
        context.set_default_timeout(10_000)
        made = await Tab.open(context, service.base)
        opened.append(made)
        return made

    yield make
    problems = [p for t in opened for p in t.console_problems()]
    for t in opened:
        await t.page.context.close()
    if problems:
        pytest.fail("the browser reported problems:\n" + "\n".join(problems))


async def _endpoint(service: Service, partner: str, path: str, **more: Any) -> dict[str, Any]:
    """A webhook endpoint made through the JSON API (setup, not under test)."""
    sub: dict[str, Any] = await service.api(
        "POST",
        "/api/subscriptions",
        token=service.partners[partner],
        json={"url": service.receiver.url(path), "topics": ["liver-health"], **more},
    )
    return sub


async def _publish(service: Service, article: dict[str, Any] = ARTICLE) -> None:
    await service.api("POST", "/api/articles", json=article)


async def _attempts(service: Service, subscription_id: str) -> list[DeliveryAttempt]:
    """The endpoint's recorded attempts, once there is one."""
    for _ in range(200):
        attempts = await service.store.list_attempts(subscription_id)
        if attempts:
            return attempts
        await asyncio.sleep(0.05)
    raise AssertionError(f"no attempt at {subscription_id} after 10 s")


def _verified(received: Received, secret: str) -> dict[str, Any]:
    payload: dict[str, Any] = Webhook(secret).verify(received.body, received.headers)
    return payload


def _button(tab: Tab, name: str) -> Any:
    return tab.page.get_by_role("button", name=re.compile(name, re.I))


def _link(tab: Tab, name: str) -> Any:
    return tab.page.get_by_role("link", name=re.compile(name, re.I))


async def test_the_watch_sees_what_a_broken_page_would_do(
    service: Service, browser: Browser
) -> None:
    # The check every test relies on, shown to work: under the portal's own CSP an
    # inline style and a script are refused, and each refusal is reported.
    async def broken(request: web.Request) -> web.Response:
        html = '<!doctype html><title>x</title><p style="color:red">x</p><script>1</script>'
        return web.Response(
            text=html, content_type="text/html", headers={"Content-Security-Policy": CSP}
        )

    service.receiver.behaviours["/broken"] = broken
    context = await browser.new_context()
    try:
        watched = await Tab.open(context, service.base)
        await watched.goto(service.receiver.url("/broken"))
        problems = "\n".join(watched.console_problems())
    finally:
        await context.close()
    assert "inline style" in problems and "inline script" in problems, problems


async def test_a_partner_signs_in_with_a_link_adds_an_endpoint_tests_it_and_rotates_its_secret(
    service: Service, tab: TabFactory
) -> None:
    partner = await tab()
    link = await service.portal_link("partner-a")
    await partner.goto(link)
    await partner.submit(_button(partner, "^sign in$"))
    assert partner.path == "/portal/endpoints"
    assert "partner-a (partner)" in await partner.page.locator("header").inner_text()

    await partner.page.get_by_role("link", name="Add an endpoint").click()
    await partner.page.get_by_label(re.compile("^URL", re.I)).fill(service.receiver.url("/hook"))
    await partner.page.get_by_label(re.compile("description", re.I)).fill("Browser test")
    await partner.submit(_button(partner, "add the endpoint"))
    secret = (await partner.page.locator(".secret").inner_text()).strip()
    assert secret.startswith("whsec_"), secret
    assert "it is not shown again" in await partner.text()

    await _link(partner, "go to the endpoint").click()
    await partner.page.wait_for_url(re.compile(r"/portal/endpoints/[^/]+$"))
    endpoint_path = partner.path
    assert await partner.page.locator(".secret").count() == 0
    assert secret not in await partner.page.content()

    await partner.submit(_button(partner, "send test"))
    assert "204" in await partner.text()
    ping = service.receiver.at("/hook")[-1]
    assert _verified(ping, secret)["type"] == "ping"

    # A real event: the partner sees its attempt, request and answer.
    await _publish(service)
    await service.receiver.wait_for(lambda: len(service.receiver.at("/hook")) == 2)
    delivered = service.receiver.at("/hook")[-1]
    await partner.goto(endpoint_path + "/deliveries")
    row = partner.page.locator("tr", has_text="article.published")
    await row.get_by_role("link").first.click()
    await partner.page.wait_for_url(re.compile(r"/deliveries/\d+$"))
    await partner.page.locator("main table a").first.click()
    await partner.page.wait_for_url(re.compile(r"/attempts/"))
    detail = await partner.text()
    assert delivered.message_id in detail and "204" in detail
    assert "Liver health in a browser" in detail

    await partner.goto(endpoint_path)
    await partner.submit(_button(partner, "rotate"))
    rotated = (await partner.page.locator(".secret").inner_text()).strip()
    assert rotated.startswith("whsec_") and rotated != secret
    await partner.goto(endpoint_path)
    await partner.submit(_button(partner, "send test"))
    _verified(service.receiver.at("/hook")[-1], rotated)


async def test_a_partner_replays_a_failed_delivery_once_its_receiver_recovers(
    service: Service, tab: TabFactory
) -> None:
    receiver = service.receiver
    receiver.behaviours["/flaky"] = respond_with(503)
    sub = await _endpoint(service, "partner-a", "/flaky")
    await _publish(service)
    await receiver.wait_for(lambda: len(receiver.at("/flaky")) == 1)

    partner = await tab()
    await partner.sign_in(service.partners["partner-a"])
    await partner.goto(f"/portal/endpoints/{sub['id']}/deliveries")
    await partner.page.get_by_label(re.compile("status", re.I)).select_option("failed")
    await partner.submit(_button(partner, "filter|show|apply"))
    assert "status=failed" in partner.path
    await partner.page.locator("tbody tr").first.get_by_role("link").first.click()
    await partner.page.wait_for_url(re.compile(r"/deliveries/\d+$"))
    assert "503" in await partner.text()

    del receiver.behaviours["/flaky"]
    await partner.submit(_button(partner, "retry"))
    await receiver.wait_for(lambda: len(receiver.at("/flaky")) == 2)
    for _ in range(50):
        await partner.page.reload()
        if "delivered" in (await partner.text()).lower():
            break
        await partner.page.wait_for_timeout(100)
    assert "delivered" in (await partner.text()).lower()


async def test_an_operator_revokes_a_partner_token_and_the_partner_is_signed_out(
    service: Service, tab: TabFactory
) -> None:
    partner = await tab()
    await partner.sign_in(service.partners["partner-b"])
    operator = await tab()
    await operator.sign_in(service.operator)
    assert operator.path == "/portal/dashboard"

    await operator.page.get_by_role("link", name="Tokens").click()
    row = operator.page.locator("tr", has_text="partner-b")
    await row.get_by_role("link", name=re.compile("revoke", re.I)).click()
    await operator.page.wait_for_url(re.compile("/revoke$"))
    await operator.submit(_button(operator, "revoke the token"))
    assert "revoked" in (await operator.text()).lower()

    await partner.page.reload()
    assert partner.path.startswith("/portal/sign-in"), partner.path
    await partner.page.get_by_label("API token").fill(service.partners["partner-b"])
    await partner.submit(_button(partner, "^sign in$"), status=401)
    assert "not valid" in await partner.text()


async def test_partner_a_cannot_open_partner_bs_pages_by_url(
    service: Service, tab: TabFactory
) -> None:
    theirs = await _endpoint(service, "partner-b", "/b")
    await _publish(service)
    attempts = await _attempts(service, theirs["id"])
    delivery, attempt = attempts[0].delivery_id, attempts[0].id

    a = await tab()
    await a.sign_in(service.partners["partner-a"])
    base = f"/portal/endpoints/{theirs['id']}"
    for path in (
        base,
        f"{base}/edit",
        f"{base}/delete",
        f"{base}/deliveries",
        f"{base}/deliveries/{delivery}",
        f"{base}/attempts/{attempt}",
        f"{base}/recover",
        f"{base}/status",
    ):
        await a.goto(path, status=404)
        assert service.receiver.url("/b") not in await a.page.content()
    await a.goto("/portal/tokens", status=403)
    await a.goto("/portal/endpoints")
    assert theirs["id"] not in await a.page.content()


async def test_a_form_sent_without_its_csrf_token_is_refused(
    service: Service, tab: TabFactory
) -> None:
    user = await tab()
    await user.sign_in(service.partners["partner-a"])
    form = user.page.locator("form.signout")
    await form.locator("input[name=csrf]").evaluate("input => input.remove()")
    await user.submit(form.get_by_role("button", name="Sign out"), status=403)
    assert "Form refused" in await user.text()
    # Still signed in: the sign-out did not happen.
    await user.goto("/portal/events")
    assert "Sign out" in await user.page.locator("header").inner_text()


async def test_a_form_posted_from_another_origin_is_refused(
    service: Service, tab: TabFactory
) -> None:
    # The receiver's origin (another port of 127.0.0.1: same site, so the strict
    # session cookie is sent) serves a page whose form posts to the portal.
    receiver = service.receiver

    async def attack(request: web.Request) -> web.Response:
        return web.Response(
            content_type="text/html",
            text='<!doctype html><title>x</title><form method="post" '
            f'action="{service.base}/portal/sign-out"><input type="hidden" name="csrf" '
            'value="guess"><button>Win a prize</button></form>',
        )

    receiver.behaviours["/attack"] = attack
    user = await tab()
    await user.sign_in(service.partners["partner-a"])
    await user.goto(receiver.url("/attack"))
    await user.submit(user.page.get_by_role("button", name="Win a prize"), status=403)
    assert "Form refused" in await user.text()
    await user.goto("/portal/events")
    assert "Sign out" in await user.page.locator("header").inner_text()


async def _tab_to(tab: Tab, selector: str, presses: int = 40) -> None:
    """Press Tab until ``selector`` has the focus."""
    target = tab.page.locator(selector)
    for _ in range(presses):
        await tab.page.keyboard.press("Tab")
        if await target.evaluate("element => element === document.activeElement"):
            return
    raise AssertionError(f"{selector} never got the focus with Tab")


async def test_signing_in_and_sending_a_form_with_the_keyboard_only(
    service: Service, tab: TabFactory
) -> None:
    user = await tab()
    await user.goto("/portal/endpoints")
    assert user.path.startswith("/portal/sign-in")
    await _tab_to(user, "input[name=token]")
    await user.page.keyboard.type(service.partners["partner-a"])
    await user.press_enter()
    assert user.path == "/portal/endpoints"

    # A whole form: text fields, a checkbox ticked with Space, sent with Enter on its
    # button; refused once (an ftp:// URL the browser accepts but the service does not),
    # shown again with what was typed, then corrected.
    await user.goto("/portal/endpoints/new")
    await _tab_to(user, "input[name=url]")
    await user.page.keyboard.type("ftp://127.0.0.1/keys")
    await user.page.keyboard.press("Tab")
    await user.page.keyboard.type("liver-health")
    await _tab_to(user, "input[value='article.published']")
    await user.page.keyboard.press("Space")
    await _tab_to(user, "main button[type=submit]")
    await user.press_enter(status=422)
    assert await user.page.locator("#f-url[aria-invalid=true]").count() == 1
    assert await user.page.locator("#f-url").input_value() == "ftp://127.0.0.1/keys"
    assert await user.page.locator("#f-topics").input_value() == "liver-health"
    assert await user.page.locator("input[value='article.published']").is_checked()

    await _tab_to(user, "input[name=url]")
    await user.page.keyboard.press("ControlOrMeta+a")
    await user.page.keyboard.type(service.receiver.url("/keys"))
    await _tab_to(user, "main button[type=submit]")
    await user.press_enter()
    assert (await user.page.locator(".secret").inner_text()).startswith("whsec_")
    subs = await service.api("GET", "/api/subscriptions", token=service.partners["partner-a"])
    assert [s["events"] for s in subs["subscriptions"]] == [["article.published"]]


MAIN_PARTNER_PAGES = [
    "/portal/endpoints",
    "/portal/endpoints/new",
    "/portal/events",
    "/portal/pull",
]
MAIN_OPERATOR_PAGES = [
    "/portal/dashboard",
    "/portal/articles",
    "/portal/topics",
    "/portal/tokens",
    "/portal/subscriptions",
]


async def test_the_main_pages_fit_a_390_px_screen(service: Service, tab: TabFactory) -> None:
    sub = await _endpoint(service, "partner-a", "/narrow")
    # Unbroken text a partner may send: a 1,000-character URL, a 500-character word.
    wide = await _endpoint(service, "partner-a", "/" + "w" * 1000, description="d" * 500)
    await _publish(service)
    attempt = (await _attempts(service, sub["id"]))[0]
    endpoint = f"/portal/endpoints/{sub['id']}"
    endpoint_pages = [
        endpoint,
        f"{endpoint}/deliveries",
        f"{endpoint}/deliveries/{attempt.delivery_id}",
        f"{endpoint}/attempts/{attempt.id}",
        f"{endpoint}/status",
        f"/portal/endpoints/{wide['id']}",
        f"/portal/endpoints/{wide['id']}/edit",
    ]
    anonymous = await tab(NARROW)
    await anonymous.goto("/portal/sign-in")
    too_wide = {}
    if await anonymous.scroll_width() > NARROW:
        too_wide["/portal/sign-in"] = await anonymous.scroll_width()
    for token, pages in (
        (service.partners["partner-a"], [*MAIN_PARTNER_PAGES, *endpoint_pages]),
        (service.operator, MAIN_OPERATOR_PAGES),
    ):
        user = await tab(NARROW)
        await user.sign_in(token)
        for path in pages:
            await user.goto(path)
            width = await user.scroll_width()
            if width > NARROW:
                too_wide[path] = width
    assert not too_wide, f"pages wider than {NARROW} px: {too_wide}"
