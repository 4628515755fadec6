"""The ``syndicate`` command: serve, token, import."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

import storage as storage_pkg
from storage import Storage, open_storage
from storage.records import ROLES

from .app import create_app
from .auth import create_token
from .importer import DEFAULT_IMPORT_BATCH, ImportFileError, import_paths
from .settings import FIELDS, Settings, SettingsError, load_settings

logger = logging.getLogger("syndicate")
BOOTSTRAP_TOKEN_NAME = "operator"


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
        "log_level": "debug, info, warning or error (default info)",
    }
    for name in fields:
        env = FIELDS[name][0]
        parser.add_argument(
            "--" + name.replace("_", "-"), dest=name, default=None, help=f"{helps[name]} [{env}]"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="syndicate",
        description="Article syndication: feeds, a WebSub hub and signed webhooks.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the HTTP service")
    _add_settings_flags(serve, list(FIELDS))

    worker = commands.add_parser("worker", help="run the delivery dispatcher only")
    _add_settings_flags(worker, ["database", "db_pool_min", "db_pool_max", "log_level"])

    token = commands.add_parser("token", help="manage API tokens")
    token_commands = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    create = token_commands.add_parser("create", help="create a token and print it")
    create.add_argument("--role", choices=ROLES, required=True)
    create.add_argument("--name", required=True)
    _add_settings_flags(create, ["database", "log_level"])

    imp = commands.add_parser("import", help="import articles from JSON / NDJSON files")
    imp.add_argument("paths", nargs="+", type=Path, metavar="FILE|DIR")
    imp.add_argument("--batch-size", type=int, default=DEFAULT_IMPORT_BATCH)
    imp.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _add_settings_flags(imp, ["database", "base_url", "log_level"])
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
    try:
        print(f"Syndicate worker ready (database {settings.database}).", flush=True)
        await _wait_for_signal()
        print("Shutting down.", flush=True)
    finally:
        await store.close()
    return 0


async def _serve(settings: Settings) -> int:
    store = await _open(settings)
    try:
        if await store.count_tokens() == 0:
            secret, _ = await create_token(store, name=BOOTSTRAP_TOKEN_NAME, role="operator")
            print(
                "\n  No API token existed, so an operator token was created."
                "\n  It is shown only this once; keep it:\n"
                f"\n    {secret}\n"
                "\n  More: syndicate token create --role operator|partner --name NAME\n",
                flush=True,
            )
        app = create_app(settings, storage=store)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        print(
            f"Syndicate listening on http://{settings.host}:{settings.port} "
            f"(public base URL {settings.base_url}, database {settings.database})",
            flush=True,
        )
        await _wait_for_signal()
        print("Shutting down.", flush=True)
        await runner.cleanup()
    finally:
        await store.close()
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
        )
    except ImportFileError as exc:
        print(f"syndicate: {exc}", file=sys.stderr)
        return 1
    finally:
        await store.close()
    report.print(sys.stdout)
    return 1 if report.counts["rejected"] else 0


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    env = os.environ if environ is None else environ
    try:
        settings = _settings(args, env)
    except SettingsError as exc:
        print(f"syndicate: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    try:
        if args.command == "serve":
            return asyncio.run(_serve(settings))
        if args.command == "worker":
            return asyncio.run(_worker(settings))
        if args.command == "token":
            return asyncio.run(_token_create(settings, args.role, args.name))
        if args.command == "import":
            return asyncio.run(_import(settings, args))
    except storage_pkg.StorageError as exc:
        print(f"syndicate: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    raise AssertionError(f"unknown command {args.command}")
