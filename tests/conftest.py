"""Shared fixtures: real databases (a SQLite file, the real PostgreSQL) and real servers.

PostgreSQL: the schema is built once per run in a template database, and every
test gets a fresh ``CREATE DATABASE ... TEMPLATE`` copy (procrastinate's way).
Without a server the PostgreSQL tests skip, except under ``CI=true``, where a
missing database fails the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import re
import socket
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from receiver import Receiver

from storage import Storage, open_storage
from syndicate.core.settings import Settings
from syndicate.web.app import create_app, make_runner
from syndicate.web.auth import create_token

FIXTURES = Path(__file__).parent / "fixtures"
DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
BACKENDS = ["sqlite", "postgres"]


def pg_dsn() -> str:
    return os.environ.get("SYNDICATE_TEST_POSTGRES_DSN", DEFAULT_PG_DSN)


def dsn_for(database: str) -> str:
    parts = urlsplit(pg_dsn())
    return urlunsplit(parts._replace(path="/" + database))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a child ``syndicate`` process: no inherited SYNDICATE_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNDICATE_")}
    env.update(extra)
    return env


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def seed_articles() -> list[dict[str, Any]]:
    articles: list[dict[str, Any]] = json.loads((FIXTURES / "articles.json").read_text("utf-8"))[
        "articles"
    ]
    return articles


@pytest.fixture
def seed_article(seed_articles: list[dict[str, Any]]) -> dict[str, Any]:
    return next(a for a in seed_articles if a["id"] == "liver-calcification")


class PostgresServer:
    """Creates the template once and hands out fresh databases.

    A thread makes the next ``SPARES`` databases ahead of the tests that will ask for
    them, and drops the used ones after them: a ``CREATE DATABASE ... TEMPLATE`` takes
    ~0.15 s, which each PostgreSQL test otherwise waited for in its setup."""

    SPARES = 2

    def __init__(self) -> None:
        self.prefix = f"syndicate_t{os.getpid()}_"
        self.template = f"{self.prefix}tmpl"
        self.ready = False
        self._spare: queue.Queue[str | BaseException] = queue.Queue()
        self._room = threading.Semaphore(self.SPARES)
        self._used: queue.Queue[str | None] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    async def _admin(self) -> asyncpg.Connection:
        return await asyncpg.connect(pg_dsn(), timeout=5)

    async def setup(self) -> None:
        conn = await self._admin()
        try:
            await self._drop_leftovers(conn)
            await conn.execute(f'CREATE DATABASE "{self.template}"')
        finally:
            await conn.close()
        store = await open_storage(dsn_for(self.template))
        await store.close()
        self.ready = True
        for work in (self._make_spares, self._drop_used):
            thread = threading.Thread(target=asyncio.run, args=(work(),), daemon=True)
            thread.start()
            self._threads.append(thread)

    @staticmethod
    async def _drop_leftovers(conn: asyncpg.Connection) -> None:
        """Databases of earlier runs that died before their teardown."""
        rows = await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE 'syndicate_t%'")
        for row in rows:
            match = re.fullmatch(r"syndicate_t(\d+)_\w+", row["datname"])
            if match and not _alive(int(match.group(1))):
                await conn.execute(f'DROP DATABASE IF EXISTS "{row["datname"]}" WITH (FORCE)')

    async def _make_spares(self) -> None:
        """(In its own thread.) Keep SPARES fresh databases ready."""
        conn = await self._admin()
        try:
            while not self._stop.is_set():
                if not self._room.acquire(timeout=0.1):
                    continue
                name = f"{self.prefix}{uuid.uuid4().hex[:12]}"
                try:
                    await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
                except Exception as exc:  # handed to the test that takes it
                    self._spare.put(exc)
                else:
                    self._spare.put(name)
        finally:
            await conn.close()

    async def _drop_used(self) -> None:
        """(In its own thread.) Drop the databases tests are done with, and at the end
        the spares nobody took."""
        conn = await self._admin()
        try:
            while (name := self._used.get()) is not None:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    async def new_database(self) -> str:
        got = await asyncio.to_thread(self._spare.get, timeout=60)
        self._room.release()
        if isinstance(got, BaseException):
            raise got
        return dsn_for(got)

    async def drop(self, dsn: str) -> None:
        self._used.put(urlsplit(dsn).path.lstrip("/"))

    async def teardown(self) -> None:
        self._stop.set()
        self._threads[0].join(timeout=30)
        while not self._spare.empty():
            spare = self._spare.get()
            if isinstance(spare, str):
                self._used.put(spare)
        self._used.put(None)
        self._threads[1].join(timeout=60)
        conn = await self._admin()
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)')
        finally:
            await conn.close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer | None]:
    server = PostgresServer()
    try:
        asyncio.run(server.setup())
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        if _in_ci():
            pytest.fail(f"CI=true but PostgreSQL at {pg_dsn()} is not usable: {exc}")
        yield None
        return
    yield server
    asyncio.run(server.teardown())


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextlib.asynccontextmanager
async def fresh_database(
    backend: str, path: Path, postgres_server: PostgresServer | None
) -> AsyncIterator[str]:
    """The URL of a new database of ``backend`` (SQLite: the file ``path``), dropped after."""
    if backend == "sqlite":
        yield f"sqlite:///{path}"
        return
    if postgres_server is None:
        pytest.skip(f"no PostgreSQL at {pg_dsn()}")
    dsn = await postgres_server.new_database()
    try:
        yield dsn
    finally:
        await postgres_server.drop(dsn)


@pytest.fixture
async def database_url(
    backend: str, tmp_path: Path, postgres_server: PostgresServer | None
) -> AsyncIterator[str]:
    """A fresh, migrated-on-open database of the test's backend."""
    async with fresh_database(backend, tmp_path / "syndicate.db", postgres_server) as url:
        yield url


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Storage]:
    storage = await open_storage(database_url)
    yield storage
    await storage.close()


class Client:
    """A real HTTP client against a real server on 127.0.0.1, with token helpers."""

    def __init__(self, server: TestServer, session: aiohttp.ClientSession) -> None:
        self.server = server
        self.session = session
        self.base_url = str(server.make_url("")).rstrip("/")
        self.token: str | None = None

    def url(self, path: str) -> str:
        return self.base_url + path

    def request(self, method: str, path: str, *, token: str | None = None, **kwargs: Any) -> Any:
        headers = dict(kwargs.pop("headers", {}) or {})
        use = token if token is not None else self.token
        if use and "Authorization" not in headers:
            headers["Authorization"] = f"Bearer {use}"
        return self.session.request(method, self.url(path), headers=headers, **kwargs)


@pytest.fixture
async def tokens(store: Storage) -> dict[str, str]:
    operator, _ = await create_token(store, name="test-operator", role="operator")
    partner, _ = await create_token(store, name="test-partner", role="partner")
    return {"operator": operator, "partner": partner}


ServerFactory = Callable[..., Awaitable[Client]]


@pytest.fixture
async def start_server(store: Storage) -> AsyncIterator[ServerFactory]:
    """Start the app on a real port: ``await start_server(**settings_overrides)``."""
    started: list[tuple[TestServer, aiohttp.ClientSession]] = []

    async def start(*, storage: Storage | None = None, **overrides: Any) -> Client:
        port = free_port()
        settings = Settings(host="127.0.0.1", port=port, **overrides)
        app = create_app(settings, storage=storage or store)
        # Graceful shutdown waits at most 5 s for a request still in progress (aiohttp's
        # default is 60 s, the whole test timeout).
        server = TestServer(app, host="127.0.0.1", port=port, shutdown_timeout=5)
        await server.start_server()
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        started.append((server, session))
        return Client(server, session)

    yield start
    for server, session in started:
        await session.close()
        closing = asyncio.ensure_future(server.close())
        if not (await asyncio.wait({closing}, timeout=15))[0]:
            _dump_tasks("server.close() still waiting after 15 s")
        await closing


def _dump_tasks(why: str) -> None:
    """Print every pending task's stack: what a hung teardown waits for."""
    print(f"--- {why}; pending tasks:", file=sys.stderr)
    for task in asyncio.all_tasks():
        task.print_stack(file=sys.stderr)


@pytest.fixture
async def client(start_server: ServerFactory, tokens: dict[str, str]) -> Client:
    """The service on a real port, sending the operator token by default."""
    c = await start_server()
    c.token = tokens["operator"]
    return c


async def expect_problem(response: aiohttp.ClientResponse, status: int) -> dict[str, Any]:
    """Assert a problem+json answer with that status; return its body."""
    assert response.status == status, await response.text()
    assert response.content_type == "application/problem+json"
    body: dict[str, Any] = await response.json(content_type=None)
    assert body["status"] == status
    assert body["title"] and body["detail"] and body["type"]
    return body


def error_fields(body: dict[str, Any]) -> set[str]:
    return {e["field"] for e in body.get("errors", [])}


ServeFactory = Callable[..., Awaitable[str]]


@pytest.fixture
async def serve_app(store: Storage) -> AsyncIterator[ServeFactory]:
    """The app behind the runner ``syndicate serve`` uses (``make_runner``: access
    log, header limits and timeouts), on a real port: ``base = await serve_app(**overrides)``."""
    runners: list[web.AppRunner] = []

    async def start(**overrides: Any) -> str:
        port = free_port()
        settings = Settings(host="127.0.0.1", port=port, **overrides)
        runner = make_runner(create_app(settings, storage=store), settings, shutdown_timeout=2)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A real partner endpoint on 127.0.0.1 (tests/receiver.py)."""
    r = Receiver()
    await r.start()
    yield r
    await r.close()
