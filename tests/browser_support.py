"""The portal in a real browser: Debian's Chromium driven by Playwright.

Playwright cannot download its own browser here, so it drives the system's
(``apt-get install chromium``: /usr/bin/chromium, or ``SYNDICATE_TEST_CHROMIUM``).
Without it the browser tests are skipped, except under ``CI=true`` where
``make test`` installs it and its absence is a failure.

A ``Tab`` is one page of one browser context (its own cookies: one person) that
records every console error, uncaught page error and failed request: a page of the
portal has none (a CSP violation, a missing stylesheet, a script error all show up
there). A navigation names the status it expects; the console line Chromium writes
for an error status the test asked for is not counted.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from conftest import free_port
from playwright.async_api import BrowserContext, Locator, Page, Response
from receiver import Receiver

from storage import Storage, open_storage
from syndicate.core.settings import Settings
from syndicate.web.app import create_app
from syndicate.web.auth import create_token

DEFAULT_CHROMIUM = "/usr/bin/chromium"
INSTALL_HINT = "apt-get install chromium (make test does it under CI=true)"
#: Chromium's line for a document or resource answered with an error status.
_STATUS_LINE = re.compile(r"Failed to load resource: the server responded with a status of (\d+)")
#: Widths the portal must work at: a laptop and a small phone.
WIDE, NARROW = 1280, 390


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def chromium_or_skip() -> str:
    """The Chromium executable; skip without it (fail under ``CI=true``)."""
    path = os.environ.get("SYNDICATE_TEST_CHROMIUM", DEFAULT_CHROMIUM)
    if Path(path).is_file() and os.access(path, os.X_OK):
        return path
    found = shutil.which("chromium")
    if found:
        return found
    import pytest

    message = f"the browser tests need Chromium at {path}: {INSTALL_HINT}"
    if _in_ci():
        pytest.fail(f"CI=true: {message}")
    pytest.skip(message)


#: Chromium's sandbox needs user namespaces, which containers and root often lack;
#: the browser only ever opens this service's own pages.
LAUNCH_ARGS = ["--no-sandbox"]


@dataclass
class Tab:
    """One page in a browser context, watched for console errors."""

    page: Page
    base: str
    problems: list[str] = field(default_factory=list)
    expected_statuses: set[int] = field(default_factory=set)

    @classmethod
    async def open(cls, context: BrowserContext, base: str) -> Tab:
        tab = cls(await context.new_page(), base.rstrip("/"))
        tab.page.on("console", tab._on_console)
        tab.page.on("pageerror", lambda exc: tab.problems.append(f"page error: {exc}"))
        tab.page.on(
            "requestfailed",
            lambda req: tab.problems.append(f"request failed: {req.url} {req.failure}"),
        )
        return tab

    def _on_console(self, message: Any) -> None:
        if message.type in ("error", "warning"):
            self.problems.append(f"console {message.type} at {self.page.url}: {message.text}")

    def console_problems(self) -> list[str]:
        """What went wrong on the pages so far, but for error statuses asked for."""
        left = []
        for problem in self.problems:
            status = _STATUS_LINE.search(problem)
            if status and int(status.group(1)) in self.expected_statuses:
                continue
            left.append(problem)
        return left

    def _check(self, response: Response | None, status: int) -> Response:
        assert response is not None, "no response"
        if status >= 400:
            self.expected_statuses.add(status)
        assert response.status == status, (response.url, response.status, self.page.url)
        return response

    async def goto(self, path: str, *, status: int = 200) -> Response:
        """Open ``path`` (following redirects); its final answer must be ``status``."""
        url = path if path.startswith("http") else self.base + path
        return self._check(await self.page.goto(url), status)

    async def submit(self, button: Locator, *, status: int = 200) -> Response:
        """Press ``button`` (a form's submit) and wait for the page it leads to."""
        async with self.page.expect_navigation() as navigation:
            await button.click()
        return self._check(await navigation.value, status)

    async def press_enter(self, *, status: int = 200) -> Response:
        """Press Enter where the focus is, and wait for the page it leads to."""
        async with self.page.expect_navigation() as navigation:
            await self.page.keyboard.press("Enter")
        return self._check(await navigation.value, status)

    @property
    def path(self) -> str:
        return self.page.url.removeprefix(self.base)

    async def text(self) -> str:
        return await self.page.locator("main").inner_text()

    async def sign_in(self, token: str) -> None:
        """Sign in through the sign-in form, as a person would."""
        await self.goto("/portal/sign-in")
        await self.page.get_by_label("API token").fill(token)
        await self.submit(self.page.get_by_role("button", name="Sign in"))
        assert "/portal/sign-in" not in self.page.url, await self.text()

    async def sign_out(self) -> None:
        await self.submit(self.page.get_by_role("button", name="Sign out"))

    async def scroll_width(self) -> int:
        width: int = await self.page.evaluate("document.documentElement.scrollWidth")
        return width


@dataclass
class Service:
    """The service on 127.0.0.1 with its own SQLite database, a partner receiver, an
    operator token and two partner tokens (``partner-a``, ``partner-b``)."""

    base: str
    store: Storage
    receiver: Receiver
    http: aiohttp.ClientSession
    operator: str
    partners: dict[str, str]

    async def api(self, method: str, path: str, *, token: str | None = None, **kw: Any) -> Any:
        """A JSON API call (the operator's token unless another is given)."""
        headers = {"Authorization": f"Bearer {token or self.operator}"}
        async with self.http.request(method, self.base + path, headers=headers, **kw) as resp:
            body = await resp.json(content_type=None) if resp.status != 204 else None
            assert resp.status < 300, (method, path, resp.status, body)
            return body

    async def portal_link(self, partner: str) -> str:
        answer = await self.api("POST", "/api/portal-links", json={"partner": partner})
        url: str = answer["url"]
        return url


@contextlib.asynccontextmanager
async def running_service(tmp_path: Path, **overrides: Any) -> AsyncIterator[Service]:
    """Start the whole app (dispatcher included) on a free port of 127.0.0.1."""
    store = await open_storage(f"sqlite:///{tmp_path / 'portal.db'}")
    receiver = Receiver()
    runner: web.AppRunner | None = None
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    try:
        await receiver.start()
        operator, _ = await create_token(store, name="ops", role="operator")
        partners = {}
        for name in ("partner-a", "partner-b"):
            partners[name], _ = await create_token(store, name=name, role="partner")
        port = free_port()
        settings = Settings(host="127.0.0.1", port=port, allow_private_targets=True, **overrides)
        runner = web.AppRunner(create_app(settings, storage=store), shutdown_timeout=2)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield Service(settings.base_url, store, receiver, http, operator, partners)
    finally:
        await http.close()
        if runner is not None:
            await runner.cleanup()
        await receiver.close()
        await store.close()
