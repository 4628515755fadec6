"""``syndicate serve`` and ``syndicate worker``: the long-running processes."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import socket
import sys
from collections.abc import Sequence

from aiohttp import web

from syndicate.cli.common import (
    CommandFailed,
    command_name,
    database_flag,
    describe_database,
    open_database,
)
from syndicate.cli.site import settle_base_url
from syndicate.core.settings import Settings
from syndicate.delivery.service import DeliveryService
from syndicate.web.app import create_app, make_runner
from syndicate.web.auth import create_token

BOOTSTRAP_TOKEN_NAME = "operator"
#: Marks a ``serve`` process started by another one (``--workers``).
CHILD_ENV = "_SYNDICATE_SERVE_CHILD"
BACKLOG = 128  # aiohttp's default


def stop_on_signal() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM. Made before "listening" / "ready" is printed:
    a supervisor (or a test) that signals as soon as it reads the line must find the
    handler in place, not Python's default (the process died with -15, no shutdown)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind(host: str, port: int, *, reuse_port: bool) -> list[socket.socket]:
    """The listening sockets for ``host:port`` (every address the name has, as aiohttp
    would bind them), or ``CommandFailed`` naming the address and the settings."""
    where = _address(host, port)
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise CommandFailed(
            f"cannot listen on {where}: {exc.strerror}; choose the address with "
            "--host or SYNDICATE_HOST"
        ) from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise CommandFailed(
                f"cannot listen on {where}: the address is already in use (another "
                "syndicate serve?); choose another port with --port or SYNDICATE_PORT, "
                "e.g. SYNDICATE_PORT=8081 make serve"
            ) from None
        raise CommandFailed(
            f"cannot listen on {where}: {exc.strerror}; choose the address with "
            "--host / SYNDICATE_HOST and --port / SYNDICATE_PORT"
        ) from None
    return sockets


async def serve(
    settings: Settings, argv: Sequence[str], *, child: bool = False, base_url_given: bool = False
) -> int:
    """Serve HTTP (and deliveries). With ``workers > 1`` this process starts the
    others; ``child`` is one of those (no token bootstrap, no children).

    The port is bound first, so a taken port is one line and nothing else started."""
    shared = child or settings.workers > 1
    sockets = bind(settings.host, settings.port, reuse_port=shared)
    children: list[asyncio.subprocess.Process] = []
    try:
        store = await open_database(settings, create=True, announce=False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    try:
        # Before the app and the other processes: every link and GUID uses this one.
        settings = await settle_base_url(store, settings, given=base_url_given)
        if not child and await store.count_tokens() == 0:
            secret, _ = await create_token(store, name=BOOTSTRAP_TOKEN_NAME, role="operator")
            more = f"{command_name()} token create --role operator|partner --name NAME"
            print(
                "\n  No API token existed, so an operator token was created."
                "\n  It is shown only this once; keep it:\n"
                f"\n    {secret}\n"
                f"\n  More: {more}{database_flag(settings)}\n",
                flush=True,
            )
        app = create_app(settings, storage=store)
        runner = make_runner(app, settings)
        await runner.setup()
        for sock in sockets:
            await web.SockSite(runner, sock, backlog=BACKLOG).start()
        if not child:
            children = [await _spawn_child(argv) for _ in range(settings.workers - 1)]
        stop = stop_on_signal()
        print(
            f"Syndicate listening on http://{_address(settings.host, settings.port)} "
            f"(public base URL {settings.base_url}, "
            f"database {describe_database(settings.database)}"
            + (f", {settings.workers} processes" if settings.workers > 1 else "")
            + ")",
            flush=True,
        )
        await stop.wait()
        print("Shutting down.", flush=True)
        for process in children:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        await runner.cleanup()
        for process in children:
            await process.wait()
    finally:
        for process in children:
            if process.returncode is None:
                process.kill()
        for sock in sockets:
            sock.close()
        await store.close()
    return 0


async def _spawn_child(argv: Sequence[str]) -> asyncio.subprocess.Process:
    """One more ``serve`` process on the same port (SO_REUSEPORT lets the
    kernel spread connections). It runs the whole app, dispatcher included:
    claims and feed caches are safe across processes."""
    env = dict(os.environ, **{CHILD_ENV: "1"})
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "syndicate", *argv, env=env, stdout=asyncio.subprocess.DEVNULL
    )


async def worker(settings: Settings, *, create: bool = False, base_url_given: bool = False) -> int:
    """Fan-out and delivery only. Unlike ``serve`` it makes a missing SQLite database
    only when asked (``create``): started in the wrong folder, it would otherwise
    deliver from a new, empty one while ``serve`` writes to another."""
    store = await open_database(settings, create=create, announce=False)
    try:
        settings = await settle_base_url(store, settings, given=base_url_given)
    except BaseException:
        await store.close()
        raise
    service = DeliveryService(store, settings, kind="worker")
    try:
        await service.start()
        service.notify()
        where = describe_database(settings.database)
        stop = stop_on_signal()
        print(f"Syndicate worker ready (database {where}).", flush=True)
        await stop.wait()
        print("Shutting down.", flush=True)
    finally:
        await service.stop()
        await store.close()
    return 0
