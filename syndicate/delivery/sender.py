"""Outbound HTTP for deliveries and WebSub verification: the one seam
(``Sender.send(request) -> Attempt``) and one shared ClientSession behind the
egress guard. No redirects are followed and no proxy is used (the guard must
check the address actually connected to)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import aiohttp

from storage.records import utcnow
from syndicate.core.settings import Settings
from syndicate.delivery.egress import Resolver, make_connector

logger = logging.getLogger("syndicate.outbound")  # the name logs have always had

USER_AGENT = "Syndicate-Webhooks/0.1 (+https://www.standardwebhooks.com/)"
MAX_RESPONSE_READ = 64 * 1024
MAX_RESPONSE_STORED = 4096
#: Characters of a refused redirect's Location kept in the delivery's error.
MAX_LOCATION_SHOWN = 300


@dataclass(frozen=True)
class OutboundRequest:
    url: str
    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class Attempt:
    """What one HTTP attempt came to. ``status`` is None when no response arrived."""

    status: int | None
    latency_ms: float
    body: str | None = None
    error: str | None = None
    retry_after: float | None = None
    #: When the request was signed and sent: a webhook's ``webhook-timestamp``.
    #: None when none was sent.
    sent_at: datetime | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def sent_at(headers: Mapping[str, str]) -> datetime:
    """When a request is sent, as its partner can check it: the ``webhook-timestamp``
    it was signed with (whole seconds), else (WebSub signs no time) now."""
    stamp = headers.get("webhook-timestamp")
    if stamp is not None and stamp.isascii() and stamp.isdigit():
        return datetime.fromtimestamp(int(stamp), UTC)
    return utcnow()


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # not "²", which isdigit() accepts
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


class Sender:
    """Outbound HTTP for deliveries: no redirects, bounded time and body size."""

    def __init__(self, settings: Settings, *, resolver: Resolver | None = None) -> None:
        self.settings = settings
        self._resolver = resolver
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = make_connector(
            allow_private=self.settings.allow_private_targets,
            limit=self.settings.max_in_flight,
            limit_per_host=self.settings.max_per_host,
            resolver=self._resolver,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=self.settings.delivery_timeout,
                sock_connect=self.settings.delivery_connect_timeout,
            ),
            headers={"User-Agent": USER_AGENT},
            auto_decompress=False,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def get(self, url: str) -> tuple[int | None, str, str | None]:
        """A GET (WebSub verification): status (None when none came), body text, and
        why no answer came (None when one did)."""
        assert self._session is not None, "Sender.start() first"
        try:
            async with self._session.get(url, allow_redirects=False) as response:
                body = await _read_capped(response, MAX_RESPONSE_READ)
                return response.status, body.decode("utf-8", "replace"), None
        except TimeoutError:
            logger.info("GET failed", extra={"url": url, "error": "timed out"})
            return None, "", "timed out"
        except (aiohttp.ClientError, OSError) as exc:
            logger.info("GET failed", extra={"url": url, "error": str(exc)})
            return None, "", f"{type(exc).__name__}: {exc}"[:500]

    async def send(self, request: OutboundRequest) -> Attempt:
        assert self._session is not None, "Sender.start() first"
        sent = sent_at(request.headers)
        started = time.monotonic()

        def elapsed() -> float:
            return round((time.monotonic() - started) * 1000, 3)

        try:
            async with self._session.post(
                request.url, data=request.body, headers=request.headers, allow_redirects=False
            ) as response:
                body = await _read_capped(response, MAX_RESPONSE_READ)
                text = body[:MAX_RESPONSE_STORED].decode("utf-8", "replace")
                error = None if 200 <= response.status < 300 else f"HTTP {response.status}"
                if 300 <= response.status < 400:
                    location = response.headers.get("Location", "")[:MAX_LOCATION_SHOWN]
                    error = f"HTTP {response.status} redirect to {location!r} (not followed)"
                return Attempt(
                    status=response.status,
                    latency_ms=elapsed(),
                    body=text,
                    error=error,
                    retry_after=parse_retry_after(response.headers.get("Retry-After"), utcnow())
                    if response.status in (429, 503)
                    else None,
                    sent_at=sent,
                )
        except TimeoutError:
            error = f"timed out after {elapsed() / 1000:.1f}s"
            return Attempt(None, elapsed(), error=error, sent_at=sent)
        except (aiohttp.ClientError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
            return Attempt(None, elapsed(), error=error, sent_at=sent)


async def _read_capped(response: aiohttp.ClientResponse, cap: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while total < cap:
        chunk = await response.content.read(cap - total)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)
