"""What the log handlers of ``syndicate serve`` write when callers send hostile
bytes: no forged lines, no secrets, one access line per request, no tracebacks
for bad requests, and the structured fields in the text format too."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from conftest import ServeFactory
from yarl import URL

from storage import Storage
from syndicate.core.logfmt import configure
from syndicate.web.auth import create_token

FORGED = "2026-01-01 00:00:00,000 ERROR syndicate.web.auth FORGED"


@pytest.fixture
def backend() -> str:
    return "sqlite"  # nothing here is about storage


class Captured:
    """What the handler ``syndicate serve`` installs wrote, line by line."""

    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def lines(self) -> list[str]:
        return self.text.splitlines()

    async def wait_for(self, needle: str, timeout: float = 2.0) -> list[str]:
        """The lines holding ``needle``, once there is one (access lines are
        written just after the response)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            found = [line for line in self.lines() if needle in line]
            if found or asyncio.get_running_loop().time() > deadline:
                return found
            await asyncio.sleep(0.02)


def _install(fmt: str) -> Iterator[Captured]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    configure("info", fmt, stream)
    try:
        yield Captured(stream)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


@pytest.fixture
def text_log() -> Iterator[Captured]:
    yield from _install("text")


@pytest.fixture
def json_log() -> Iterator[Captured]:
    yield from _install("json")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


async def raw_request(base: str, data: bytes) -> bytes:
    """Send ``data`` on a fresh connection; everything the server answers."""
    url = URL(base)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout=3)
    finally:
        writer.close()


async def test_a_path_cannot_forge_a_log_line(
    serve_app: ServeFactory, text_log: Captured, http: aiohttp.ClientSession
) -> None:
    base = await serve_app()
    target = "/nope%0d%0a" + FORGED.replace(" ", "%20")
    async with http.get(URL(base + target, encoded=True)) as resp:
        assert resp.status == 404
    [line] = await text_log.wait_for("syndicate.access")
    assert not [x for x in text_log.lines() if x.startswith("2026-01-01")], text_log.text
    assert "/nope\\r\\n2026-01-01 00:00:00,000 ERROR syndicate.web.auth FORGED 404" in line
    assert resp.content_type == "application/problem+json"  # the catch-all route took it


async def test_a_bad_header_byte_gives_one_access_line_and_no_secret(
    serve_app: ServeFactory, text_log: Captured, store: Storage
) -> None:
    """A valid token followed by a NUL: 400 problem+json, one access line, no
    traceback, and neither the token nor the header in the log."""
    base = await serve_app()
    secret, _ = await create_token(store, name="op", role="operator")
    answer = await raw_request(
        base,
        b"GET /api/articles HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer " + secret.encode() + b"\x00\r\n\r\n",
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 400") and b"application/problem+json" in head
    assert json.loads(body)["status"] == 400
    assert secret.encode() not in answer
    lines = await text_log.wait_for("syndicate.access")
    assert len(lines) == 1 and " 400 " in lines[0], text_log.text
    assert "Traceback" not in text_log.text and "ERROR" not in text_log.text
    assert secret not in text_log.text and secret[4:20] not in text_log.text
    assert len(text_log.lines()) == 1, text_log.text

    await raw_request(base, b"GET / HTTP/1.1\r\nHost: x\r\nX-Note: a\x01b\r\n\r\n")
    await text_log.wait_for("syndicate.access", timeout=0.3)
    assert len(await text_log.wait_for(" 400 ")) == 2
    assert "Traceback" not in text_log.text and len(text_log.lines()) == 2, text_log.text


async def test_tokens_and_credentials_are_redacted_everywhere(
    serve_app: ServeFactory, text_log: Captured, http: aiohttp.ClientSession
) -> None:
    base = await serve_app()
    token = "syn_" + "A1b2C3d4" * 5
    webhook_secret = "whsec_" + "QUJDRA==" * 4
    async with http.get(f"{base}/feeds/{token}.rss") as resp:
        assert resp.status == 404
    await text_log.wait_for("syndicate.access")
    logger = logging.getLogger("syndicate.test")
    logger.warning("sent %s", "Authorization: Basic dXNlcjpwYXNz")
    logger.warning("headers %s", {"Authorization": "Basic cGFzc3dvcmQ="})
    logger.warning("new secret %s for %s", webhook_secret, "sub_1")
    logger.warning("header", extra={"auth": f"Bearer {token}", "raw": {"key": token}})
    text = text_log.text
    for secret in (token, token[4:], webhook_secret[6:], "dXNlcjpwYXNz", "cGFzc3dvcmQ"):
        assert secret not in text, text
    assert "syn_[redacted]" in text and "whsec_[redacted]" in text
    assert 'auth="Bearer [redacted]"' in text


async def test_text_format_prints_the_structured_fields_escaped(text_log: Captured) -> None:
    logging.getLogger("syndicate.problems").error(
        "storage error", extra={"error": "disk I/O error\n" + FORGED, "attempt": 3}
    )
    [line] = text_log.lines()
    assert line.endswith('storage error error="disk I/O error\\n' + FORGED + '" attempt=3')


async def test_a_traceback_cannot_forge_a_line(text_log: Captured) -> None:
    try:
        raise ValueError("bad\n" + FORGED + "\r" + FORGED)
    except ValueError:
        logging.getLogger("syndicate.test").exception("failed", extra={"why": "x"})
    lines = text_log.lines()
    assert lines[0].endswith("failed why=x") and all(x.startswith("  ") for x in lines[1:])
    assert not [x for x in lines if x.startswith("2026-01-01")]


async def test_json_format_keeps_fields_escapes_and_redacts(
    serve_app: ServeFactory, json_log: Captured, http: aiohttp.ClientSession
) -> None:
    base = await serve_app()
    token = "syn_" + "Z9y8X7w6" * 5
    async with http.get(
        URL(f"{base}/nope%0a{token}", encoded=True), headers={"X-Request-Id": "req-7"}
    ) as resp:
        assert resp.status == 404
    [line] = await json_log.wait_for("syndicate.access")
    entry = json.loads(line)
    assert entry["request_id"] == "req-7" and entry["status"] == 404
    assert entry["path"] == "/nope\\nsyn_[redacted]" and entry["latency_ms"] >= 0
    assert entry["message"] == "GET /nope\\nsyn_[redacted] 404"
    assert token[4:] not in json_log.text


@pytest.mark.parametrize("path", ["/hub", "/healthz"])
async def test_a_body_that_cannot_be_decoded_is_a_400_without_a_traceback(
    serve_app: ServeFactory, text_log: Captured, path: str
) -> None:
    """A deflate body that is not deflate: no 500 and no ERROR traceback (anyone could
    fill the log with them), whether the handler reads the body or aiohttp reads the
    rest of it after the answer."""
    base = await serve_app()
    answer = await raw_request(
        base,
        f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".encode()
        + b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Encoding: deflate\r\nContent-Length: 2\r\n\r\nxx",
    )
    assert not answer.startswith(b"HTTP/1.1 500"), answer[:200]
    assert answer.split(b" ", 2)[1] in (b"400", b"405"), answer[:200]
    await text_log.wait_for("syndicate.access")
    await asyncio.sleep(0.2)  # the rest of the body is read after the answer
    assert "Traceback" not in text_log.text and "ERROR" not in text_log.text, text_log.text


async def test_a_client_gone_mid_body_is_not_a_server_error(
    serve_app: ServeFactory, text_log: Captured
) -> None:
    base = await serve_app()
    url = URL(base)
    _, writer = await asyncio.open_connection(url.host, url.port)
    writer.write(
        b"POST /hub HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nhub."
    )
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.close()
    lines = await text_log.wait_for("syndicate.access")
    assert lines and " 500 " not in lines[0], text_log.text
    assert "Traceback" not in text_log.text and "ERROR" not in text_log.text, text_log.text


async def test_an_authorization_in_the_path_does_not_hide_the_status(
    serve_app: ServeFactory, text_log: Captured, http: aiohttp.ClientSession
) -> None:
    base = await serve_app()
    target = "/Authorization:%20Bearer%20syn_" + "A" * 30
    async with http.get(URL(base + target, encoded=True)) as resp:
        assert resp.status == 404
    [line] = await text_log.wait_for("syndicate.access")
    assert " 404 " in line and "syn_AAAA" not in line, line
