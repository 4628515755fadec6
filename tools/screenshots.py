"""Screenshots of the portal's main pages, for review (``make screenshots``).

Starts the service on 127.0.0.1 with a throwaway SQLite database, the fixture
articles (tests/fixtures/articles.json), an operator and a partner token, and a
partner receiver on 127.0.0.1 with two webhook endpoints: one that answers 204, one
that answers 503 (so the log has delivered and failed deliveries). Then signs in to
the portal through its form in Chromium (Debian's, driven by Playwright) as each and
saves a full-page PNG of every main page at 1280 and 390 px wide::

    .venv/bin/python tools/screenshots.py [--chromium /usr/bin/chromium] [--out screenshots]

The PNGs are not committed (screenshots/ is in .gitignore).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from playwright.async_api import Browser, async_playwright

from storage import Storage, open_storage
from syndicate.core.settings import Settings
from syndicate.web.app import create_app
from syndicate.web.auth import create_token

ROOT = Path(__file__).resolve().parent.parent
ARTICLES = ROOT / "tests" / "fixtures" / "articles.json"
WIDTHS = (1280, 390)
HEIGHT = 800


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _start(app: web.Application, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


def _receiver() -> web.Application:
    """A partner's endpoints: /ok takes everything, /fail is down."""

    async def ok(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=204)

    async def fail(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=503, text='{"error": "maintenance until 02:00 UTC"}')

    app = web.Application()
    app.router.add_post("/hooks/ok", ok)
    app.router.add_post("/hooks/fail", fail)
    return app


class Sample:
    """The service with sample data: its base URL, tokens and the pages to capture."""

    def __init__(self, base: str, operator: str, partner: str) -> None:
        self.base = base
        self.operator = operator
        self.partner = partner
        self.partner_pages: dict[str, str] = {}
        self.operator_pages = {
            "operator-dashboard": "/portal/dashboard",
            "operator-articles": "/portal/articles",
            "operator-topics": "/portal/topics",
            "operator-tokens": "/portal/tokens",
            "operator-subscriptions": "/portal/subscriptions",
        }

    async def api(self, http: aiohttp.ClientSession, method: str, path: str, **kw: Any) -> Any:
        token = kw.pop("token", self.operator)
        headers = {"Authorization": f"Bearer {token}"}
        async with http.request(method, self.base + path, headers=headers, **kw) as resp:
            body = await resp.json(content_type=None) if resp.status != 204 else None
            if resp.status >= 300:
                raise SystemExit(f"{method} {path}: {resp.status} {body}")
            return body

    async def fill(self, store: Storage, receiver: str) -> None:
        """Endpoints, then the articles (each a delivery to both), then wait for the
        attempts; the partner pages to capture, with real ids."""
        articles = json.loads(ARTICLES.read_text("utf-8"))["articles"]
        topics = sorted({t for a in articles for t in a["topics"]})
        async with aiohttp.ClientSession() as http:
            subs = {}
            for name, description in (("ok", "Production"), ("fail", "Staging (down)")):
                body = {"url": f"{receiver}/hooks/{name}", "topics": topics}
                body["description"] = description
                subs[name] = await self.api(
                    http, "POST", "/api/subscriptions", token=self.partner, json=body
                )
            await self.api(http, "POST", "/api/articles/batch", json={"articles": articles})
        failing = subs["fail"]["id"]
        for _ in range(200):
            attempts = await store.list_attempts(failing, limit=1)
            delivered = await store.list_attempts(subs["ok"]["id"], limit=1)
            if attempts and delivered:
                break
            await asyncio.sleep(0.05)
        else:
            raise SystemExit("no delivery attempt after 10 s")
        endpoint = f"/portal/endpoints/{failing}"
        self.partner_pages = {
            "partner-endpoints": "/portal/endpoints",
            "partner-endpoint": endpoint,
            "partner-deliveries": f"{endpoint}/deliveries",
            "partner-delivery": f"{endpoint}/deliveries/{attempts[0].delivery_id}",
            "partner-attempt": f"{endpoint}/attempts/{attempts[0].id}",
            "partner-status": f"{endpoint}/status",
            "partner-events": "/portal/events",
            "partner-pull": "/portal/pull",
        }


async def _capture(browser: Browser, sample: Sample, out: Path) -> list[Path]:
    saved: list[Path] = []
    for width in WIDTHS:
        anonymous = await browser.new_context(viewport={"width": width, "height": HEIGHT})
        page = await anonymous.new_page()
        await page.goto(sample.base + "/portal/sign-in")
        saved.append(out / f"sign-in-{width}.png")
        await page.screenshot(path=saved[-1], full_page=True)
        await anonymous.close()
        for token, pages in (
            (sample.partner, sample.partner_pages),
            (sample.operator, sample.operator_pages),
        ):
            context = await browser.new_context(viewport={"width": width, "height": HEIGHT})
            page = await context.new_page()
            await page.goto(sample.base + "/portal/sign-in")
            await page.get_by_label("API token").fill(token)
            async with page.expect_navigation():
                await page.get_by_role("button", name="Sign in").click()
            for name, path in pages.items():
                response = await page.goto(sample.base + path)
                if response is None or response.status != 200:
                    status = response.status if response else "no answer"
                    print(f"warning: {path} answered {status}", file=sys.stderr)
                saved.append(out / f"{name}-{width}.png")
                await page.screenshot(path=saved[-1], full_page=True)
            await context.close()
    return saved


async def main(chromium: str, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="syndicate-screenshots-") as tmp:
        store = await open_storage(f"sqlite:///{Path(tmp) / 'portal.db'}")
        runners: list[web.AppRunner] = []
        try:
            operator, _ = await create_token(store, name="operations", role="operator")
            partner, _ = await create_token(store, name="acme-news", role="partner")
            port, receiver_port = _free_port(), _free_port()
            settings = Settings(
                host="127.0.0.1",
                port=port,
                allow_private_targets=True,
                retry_schedule=(3600.0,),
            )
            runners.append(await _start(_receiver(), receiver_port))
            runners.append(await _start(create_app(settings, storage=store), port))
            sample = Sample(settings.base_url, operator, partner)
            await sample.fill(store, f"http://127.0.0.1:{receiver_port}")
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(
                    executable_path=chromium, args=["--no-sandbox"]
                )
                saved = await _capture(browser, sample, out)
                await browser.close()
        finally:
            for runner in reversed(runners):
                await runner.cleanup()
            await store.close()
    for path in saved:
        print(path)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="the browser to drive")
    parser.add_argument("--out", type=Path, default=ROOT / "screenshots", help="where PNGs go")
    args = parser.parse_args()
    if not Path(args.chromium).is_file() and shutil.which(args.chromium) is None:
        parser.exit(2, f"no Chromium at {args.chromium}: as root, apt-get install chromium\n")
    return args


if __name__ == "__main__":
    arguments = _arguments()
    asyncio.run(main(arguments.chromium, arguments.out))
