"""The ``syndicate`` command: serve, token, import."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

import storage as storage_pkg
from storage import Storage, open_storage
from storage.records import ROLES, utcnow
from syndicate.content.importer import DEFAULT_IMPORT_BATCH, ImportFileError, import_paths
from syndicate.core.settings import FIELDS, Settings, SettingsError, load_settings
from syndicate.delivery.service import DeliveryService
from syndicate.web.app import create_app, make_runner
from syndicate.web.auth import create_token
from syndicate.core.logfmt import configure as configure_logging
from syndicate.web.openapi import document_bytes
from syndicate.web.routes.subscriptions import DELIVERY_STATUSES

logger = logging.getLogger("syndicate")
BOOTSTRAP_TOKEN_NAME = "operator"
#: Marks a ``serve`` process started by another one (``--workers``).
CHILD_ENV = "_SYNDICATE_SERVE_CHILD"
BOOLEAN_FIELDS = frozenset({"allow_private_targets"})
SERVE_ONLY = frozenset(
    {"host", "port", "max_body_size", "max_batch_size", "feed_items", "feed_max_age",
     "feed_page_max_age", "workers", "write_rate", "write_burst", "max_subscriptions",
     "max_header_size", "max_topics", "websub_max_per_topic", "hub_max_pending",
     "hub_max_pending_per_client", "hub_max_pending_per_domain", "hub_subscribe_rate",
     "header_timeout", "keepalive_timeout", "body_timeout"}
)  # fmt: skip


def _add_settings_flags(parser: argparse.ArgumentParser, fields: Sequence[str]) -> None:
    helps = {
        "host": "address to listen on (default 127.0.0.1)",
        "port": "port to listen on (default 8080)",
        "database": "sqlite:///path/to/file.db (default sqlite:///data/syndicate.db) "
        "or postgresql://user@host:port/db",
        "base_url": "public origin for absolute URLs (default http://HOST:PORT)",
        "max_body_size": "largest request body in bytes (default 1 MiB)",
        "max_batch_size": "most articles in one batch request (default 1000)",
        "db_pool_min": "PostgreSQL pool: fewest connections (default 1)",
        "db_pool_max": "PostgreSQL pool: most connections (default 10)",
        "feed_items": "entries per feed page (default 50)",
        "feed_max_age": "Cache-Control max-age of feeds, seconds (default 300)",
        "feed_page_max_age": "Cache-Control max-age of older feed pages (default 86400)",
        "retry_schedule": "delays before each retry: 5s,5m,30m,2h,5h,10h,10h (default)",
        "delivery_connect_timeout": "connect timeout per delivery attempt (default 5s)",
        "delivery_timeout": "total timeout per delivery attempt (default 15s)",
        "max_in_flight": "delivery requests in flight at once (default 256)",
        "max_per_host": "delivery requests in flight per host (default 8)",
        "max_per_owner": "deliveries held per partner or WebSub callback host (default 32)",
        "webhook_share": "share of the delivery slots kept for webhooks (default 0.5)",
        "websub_share": "share of the delivery slots kept for WebSub (default 0.25)",
        "heartbeat_interval": "how often a process heartbeats in the database (default 2s)",
        "worker_stale_after": "a process silent this long is dead; its leases freed (default 8s)",
        "disable_after": "disable a webhook failing this long without success (default 5d)",
        "secret_grace": "how long a rotated-out signing secret stays valid (default 24h)",
        "allow_private_targets": "allow private/loopback subscription targets (dev only)",
        "websub_lease_default": "WebSub lease when none is asked, seconds (default 10 days)",
        "websub_lease_min": "shortest WebSub lease granted, seconds (default 1 hour)",
        "websub_lease_max": "longest WebSub lease granted, seconds (default 30 days)",
        "websub_max_per_host": "most WebSub subscriptions per callback host (default 1000)",
        "websub_max_per_topic": "most WebSub subscriptions per topic feed (default 10000)",
        "hub_max_pending": "WebSub verifications under way at once (default 1000)",
        "hub_max_pending_per_client": "the same per client address or IPv6 /64 (default 50)",
        "hub_max_pending_per_domain": "the same per callback registrable domain (default 50)",
        "hub_subscribe_rate": "new WebSub subscribe requests per second in all (default 20)",
        "header_timeout": "seconds to receive a request's headers (default 10)",
        "keepalive_timeout": "seconds an idle keep-alive connection stays open (default 75)",
        "body_timeout": "seconds to receive a request's body once its headers are in (default 30)",
        "workers": "serve processes sharing the port (default 1)",
        "write_rate": "partner writes / hub requests per second per token and IP (default 10)",
        "write_burst": "partner writes / hub requests allowed in a burst (default 100)",
        "max_subscriptions": "webhook subscriptions per partner (default 100)",
        "max_topics": "topics per article, at most 20 (default 20)",
        "max_header_size": "longest request header field in bytes (default 8190)",
        "log_level": "debug, info, warning or error (default info)",
        "log_format": "text or json: one JSON object per line (default text)",
        "event_loop": "uvloop or asyncio (default uvloop where installed)",
        "fast_paths": "speed-ups on other projects' internals: 1 on, 0 off (default on)",
    }
    for name in fields:
        env = FIELDS[name][0]
        flag = "--" + name.replace("_", "-")
        if name in BOOLEAN_FIELDS:
            parser.add_argument(
                flag, dest=name, action="store_const", const="true", default=None,
                help=f"{helps[name]} [{env}=1]",
            )  # fmt: skip
        else:
            parser.add_argument(flag, dest=name, default=None, help=f"{helps[name]} [{env}]")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="syndicate",
        description="Article syndication: feeds, a WebSub hub and signed webhooks.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the HTTP service")
    _add_settings_flags(serve, list(FIELDS))

    worker = commands.add_parser("worker", help="run the delivery dispatcher only")
    _add_settings_flags(worker, [f for f in FIELDS if f not in SERVE_ONLY])

    deliveries = commands.add_parser("deliveries", help="show recent webhook deliveries")
    deliveries.add_argument("--subscription", help="only this subscription id")
    deliveries.add_argument("--status", choices=DELIVERY_STATUSES)
    deliveries.add_argument("--limit", type=int, default=50)
    _add_settings_flags(deliveries, ["database", "log_level", "log_format"])

    workers = commands.add_parser(
        "workers", help="list live serve/worker processes, their heartbeats and deliveries held"
    )
    _add_settings_flags(workers, ["database", "log_level", "log_format"])

    token = commands.add_parser("token", help="manage API tokens")
    token_commands = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    create = token_commands.add_parser("create", help="create a token and print it")
    create.add_argument("--role", choices=ROLES, required=True)
    create.add_argument("--name", required=True)
    _add_settings_flags(create, ["database", "log_level", "log_format"])
    listing = token_commands.add_parser("list", help="list tokens (never their secrets)")
    _add_settings_flags(listing, ["database", "log_level", "log_format"])
    revoke = token_commands.add_parser("revoke", help="revoke a token by name, at once")
    revoke.add_argument("name")
    _add_settings_flags(revoke, ["database", "log_level", "log_format"])

    commands.add_parser("openapi", help="print the OpenAPI document of the JSON API")

    imp = commands.add_parser("import", help="import articles from JSON / NDJSON files")
    imp.add_argument("paths", nargs="+", type=Path, metavar="FILE|DIR")
    imp.add_argument("--batch-size", type=int, default=DEFAULT_IMPORT_BATCH)
    imp.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _add_settings_flags(imp, ["database", "base_url", "max_topics", "log_level", "log_format"])
    return parser


def _settings(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    flags = {name: getattr(args, name, None) for name in FIELDS}
    return load_settings(flags, environ)


async def _open(settings: Settings) -> Storage:
    return await open_storage(
        settings.database, pool_min=settings.db_pool_min, pool_max=settings.db_pool_max
    )


async def _wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _worker(settings: Settings) -> int:
    store = await _open(settings)
    service = DeliveryService(store, settings, kind="worker")
    try:
        await service.start()
        service.notify()
        print(f"Syndicate worker ready (database {settings.database}).", flush=True)
        await _wait_for_signal()
        print("Shutting down.", flush=True)
    finally:
        await service.stop()
        await store.close()
    return 0


async def _deliveries(settings: Settings, args: argparse.Namespace) -> int:
    store = await _open(settings)
    try:
        if args.subscription:
            subs = [await store.get_subscription(args.subscription)]
        else:
            subs = await store.list_subscriptions(limit=1000)
        rows = []
        for sub in subs:
            for d in await store.list_deliveries(sub.id, status=args.status, limit=args.limit):
                rows.append((d, sub))
    finally:
        await store.close()
    rows.sort(key=lambda pair: pair[0].id, reverse=True)
    header = f"{'ID':>8}  {'STATUS':<9} {'TRIES':>5} {'CODE':>4}  {'SUBSCRIPTION':<30} LAST ERROR"
    print(header)
    for d, sub in rows[: args.limit]:
        code = str(d.last_status_code or "-")
        error = (d.last_error or "").replace("\n", " ")[:60]
        print(f"{d.id:>8}  {d.status:<9} {d.attempts:>5} {code:>4}  {sub.id:<30} {error}")
    counts = {s: sum(1 for d, _ in rows if d.status == s) for s in DELIVERY_STATUSES}
    print("  ".join(f"{n} {s}" for s, n in counts.items()))
    return 0


async def _workers(settings: Settings) -> int:
    store = await _open(settings)
    try:
        now = utcnow()
        workers = await store.list_workers(now=now)
    finally:
        await store.close()
    print(f"{'WORKER':<20} {'KIND':<6} {'HOST':<24} {'PID':>7} {'HEARTBEAT':>10} {'HELD':>6}")
    for w in workers:
        age = f"{(now - w.heartbeat_at).total_seconds():.1f}s ago"
        stale = (
            " (stale)"
            if (now - w.heartbeat_at).total_seconds() > settings.worker_stale_after
            else ""
        )
        print(
            f"{w.id:<20} {w.kind:<6} {w.hostname[:24]:<24} {w.pid:>7} {age:>10} {w.held:>6}{stale}"
        )
    print(f"{len(workers)} process{'es' if len(workers) != 1 else ''}")
    return 0


async def _serve(settings: Settings, argv: Sequence[str], *, child: bool = False) -> int:
    """Serve HTTP (and deliveries). With ``workers > 1`` this process starts the
    others; ``child`` is one of those (no token bootstrap, no children)."""
    store = await _open(settings)
    children: list[asyncio.subprocess.Process] = []
    try:
        if not child and await store.count_tokens() == 0:
            secret, _ = await create_token(store, name=BOOTSTRAP_TOKEN_NAME, role="operator")
            print(
                "\n  No API token existed, so an operator token was created."
                "\n  It is shown only this once; keep it:\n"
                f"\n    {secret}\n"
                "\n  More: syndicate token create --role operator|partner --name NAME\n",
                flush=True,
            )
        app = create_app(settings, storage=store)
        runner = make_runner(app, settings)
        await runner.setup()
        shared = child or settings.workers > 1
        site = web.TCPSite(runner, settings.host, settings.port, reuse_port=shared or None)
        await site.start()
        if not child:
            children = [await _spawn_child(argv) for _ in range(settings.workers - 1)]
        print(
            f"Syndicate listening on http://{settings.host}:{settings.port} "
            f"(public base URL {settings.base_url}, database {settings.database}"
            + (f", {settings.workers} processes" if settings.workers > 1 else "")
            + ")",
            flush=True,
        )
        await _wait_for_signal()
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


async def _token_list(settings: Settings) -> int:
    store = await _open(settings)
    try:
        tokens = await store.list_tokens()
    finally:
        await store.close()

    def when(value: Any) -> str:
        return value.strftime("%Y-%m-%d %H:%M") if value else "-"

    print(f"{'NAME':<24} {'ROLE':<9} {'CREATED':<17} {'LAST USED':<17} REVOKED")
    for token in tokens:
        print(
            f"{token.name:<24} {token.role:<9} {when(token.created_at):<17} "
            f"{when(token.last_used_at):<17} {when(token.revoked_at)}"
        )
    return 0


async def _token_revoke(settings: Settings, name: str) -> int:
    store = await _open(settings)
    try:
        revoked = await store.revoke_token(name)
    finally:
        await store.close()
    if revoked is None:
        print(f"syndicate: no live token named {name!r}", file=sys.stderr)
        return 1
    print(f"revoked {name}")
    return 0


async def _token_create(settings: Settings, role: Any, name: str) -> int:
    store = await _open(settings)
    try:
        secret, _ = await create_token(store, name=name, role=role)
    except storage_pkg.TokenExists as exc:
        print(f"syndicate: {exc}", file=sys.stderr)
        return 1
    finally:
        await store.close()
    print(secret)
    return 0


async def _import(settings: Settings, args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        print("syndicate: --batch-size must be at least 1", file=sys.stderr)
        return 2
    store = await _open(settings)
    try:
        report = await import_paths(
            store,
            args.paths,
            host=settings.public_host,
            batch_size=args.batch_size,
            progress=not args.no_progress,
            max_topics=settings.max_topics,
        )
    except ImportFileError as exc:
        print(f"syndicate: {exc}", file=sys.stderr)
        return 1
    finally:
        await store.close()
    report.print(sys.stdout)
    return 1 if report.counts["rejected"] else 0


def run(settings: Settings, main: Coroutine[Any, Any, int]) -> int:
    """Run a command's coroutine on the configured event loop."""
    if settings.event_loop == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    argv_list = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv_list)
    env = os.environ if environ is None else environ
    try:
        settings = _settings(args, env)
    except SettingsError as exc:
        print(f"syndicate: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    try:
        if args.command == "serve":
            child = env.get(CHILD_ENV) == "1"
            return run(settings, _serve(settings, argv_list, child=child))
        if args.command == "openapi":
            sys.stdout.buffer.write(document_bytes(settings))
            return 0
        if args.command == "worker":
            return run(settings, _worker(settings))
        if args.command == "workers":
            return run(settings, _workers(settings))
        if args.command == "deliveries":
            return run(settings, _deliveries(settings, args))
        if args.command == "token" and args.token_command == "create":
            return run(settings, _token_create(settings, args.role, args.name))
        if args.command == "token" and args.token_command == "list":
            return run(settings, _token_list(settings))
        if args.command == "token" and args.token_command == "revoke":
            return run(settings, _token_revoke(settings, args.name))
        if args.command == "import":
            return run(settings, _import(settings, args))
    except storage_pkg.StorageError as exc:
        print(f"syndicate: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    raise AssertionError(f"unknown command {args.command}")
