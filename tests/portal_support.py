"""Using the portal as a browser does, over plain HTTP: a cookie jar, the CSRF token
read from each page's forms, sign-in through the real form."""

from __future__ import annotations

import re
from typing import Any

import aiohttp

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token of the first form on a page."""
    found = _CSRF.search(html)
    assert found is not None, "no form with a CSRF token on the page"
    return found.group(1)


class PortalUser:
    """One browser: its own cookie jar, signed in (or not) to the portal at ``base``."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        self.session = aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True),
            timeout=aiohttp.ClientTimeout(total=30),
        )

    async def close(self) -> None:
        await self.session.close()

    async def get(self, path: str, **kwargs: Any) -> tuple[int, str]:
        async with self.session.get(self.base + path, **kwargs) as resp:
            return resp.status, await resp.text()

    async def post_form(
        self, page: str, action: str, fields: dict[str, Any] | list[tuple[str, str]]
    ) -> tuple[int, str, aiohttp.ClientResponse]:
        """Open ``page``, then send ``fields`` to ``action`` with the page's CSRF token,
        as its form would; redirects are not followed (the answer is returned)."""
        status, html = await self.get(page)
        assert status == 200, (page, status, html[:500])
        data = list(fields.items()) if isinstance(fields, dict) else list(fields)
        data.append(("csrf", csrf_of(html)))
        async with self.session.post(self.base + action, data=data, allow_redirects=False) as resp:
            return resp.status, await resp.text(), resp

    async def sign_in(self, token: str) -> None:
        status, body, resp = await self.post_form(
            "/portal/sign-in", "/portal/sign-in", {"token": token}
        )
        assert status == 303, (status, body[:500])
        assert resp.headers["Location"].startswith("/portal/")


class Browsers:
    """Browsers of one service, each with its own cookie jar, closed together:
    ``async with Browsers(base) as browsers: user = await browsers.signed_in(token)``."""

    def __init__(self, base: str) -> None:
        self.base = base
        self._opened: list[PortalUser] = []

    async def __aenter__(self) -> Browsers:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for user in self._opened:
            await user.close()

    async def new(self) -> PortalUser:
        """A browser that has not signed in."""
        user = PortalUser(self.base)
        self._opened.append(user)
        return user

    async def signed_in(self, token: str) -> PortalUser:
        """A browser signed in through the form with ``token``."""
        user = await self.new()
        await user.sign_in(token)
        return user
