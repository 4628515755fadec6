"""The ``syndicate`` command: serve, worker, token, import, deliveries, workers, openapi,
base-url.

Every command fails in one line on stderr (``syndicate: ...``) naming what to fix,
never a traceback. Commands other than ``serve`` open only an existing SQLite database
unless given ``--create``; the one-shot ones say on stderr which one they opened.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import storage as storage_pkg
from storage.records import ROLES
from syndicate.cli import imports, serve, site, status, tokens
from syndicate.cli.common import CommandFailed, fail, run
from syndicate.content.importer import DEFAULT_IMPORT_BATCH
from syndicate.core.logfmt import configure as configure_logging
from syndicate.core.names import DELIVERY_STATUSES, TOKEN_NAME, TOKEN_NAME_RULE
from syndicate.core.settings import (
    FIELDS,
    Settings,
    SettingsError,
    load_settings,
    parse_duration,
)
from syndicate.web.openapi import document_bytes

__all__ = ["build_parser", "main"]

BOOLEAN_FIELDS = frozenset({"allow_private_targets"})
SERVE_ONLY = frozenset(
    {
        "host",
        "port",
        "max_body_size",
        "max_batch_size",
        "feed_items",
        "feed_max_age",
        "feed_page_max_age",
        "workers",
        "write_rate",
        "write_burst",
        "max_subscriptions",
        "max_header_size",
        "max_topics",
        "websub_max_per_topic",
        "hub_max_pending",
        "hub_max_pending_per_client",
        "hub_max_pending_per_domain",
        "hub_subscribe_rate",
        "header_timeout",
        "keepalive_timeout",
        "body_timeout",
        "stream_max_per_token",
        "stream_max",
        "stream_heartbeat",
        "stream_write_timeout",
        "stream_max_buffer",
    }
)


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
        "event_retention": "how long the change log keeps events (default 30d)",
        "stream_max_per_token": "event streams open at once per token (default 5)",
        "stream_max": "event streams open at once in all (default 1000)",
        "stream_heartbeat": "seconds of silence before a stream sends a comment (default 15)",
        "stream_write_timeout": "seconds a stream client has to take what was sent (default 10)",
        "stream_max_buffer": "bytes a stream client may leave waiting (default 1 MiB)",
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
        help_text = helps.get(name, name.replace("_", " "))
        if name in BOOLEAN_FIELDS:
            parser.add_argument(
                flag,
                dest=name,
                action="store_const",
                const="true",
                default=None,
                help=f"{help_text} [{env}=1]",
            )
        else:
            parser.add_argument(flag, dest=name, default=None, help=f"{help_text} [{env}]")


def _add_create_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--create",
        action="store_true",
        help="make the SQLite database if it does not exist (else refused: a command "
        "run in another folder would silently use a new, empty one)",
    )


def _add_one_shot_flags(parser: argparse.ArgumentParser, more: Sequence[str] = ()) -> None:
    """A command that opens the database and exits: ``--database`` and ``--create``."""
    _add_create_flag(parser)
    _add_settings_flags(parser, ["database", *more, "log_level", "log_format"])


def _name(value: str) -> str:
    """A token name to look up: not empty (nor only spaces)."""
    if not value.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return value


def _new_name(value: str) -> str:
    _name(value)
    if TOKEN_NAME.fullmatch(value) is None:
        raise argparse.ArgumentTypeError(TOKEN_NAME_RULE)
    return value


def _ttl(value: str) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a duration (30m, 1h, 2d...)") from None
    if not 60 <= seconds <= 7 * 86400:
        raise argparse.ArgumentTypeError("must be between 1m and 7d")
    return seconds


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} must be at least 1")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="syndicate",
        description="Article syndication: feeds, a WebSub hub and signed webhooks.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serving = commands.add_parser("serve", help="run the HTTP service")
    _add_settings_flags(serving, list(FIELDS))

    working = commands.add_parser("worker", help="run the delivery dispatcher only")
    _add_create_flag(working)
    _add_settings_flags(working, [f for f in FIELDS if f not in SERVE_ONLY])

    log = commands.add_parser("deliveries", help="show recent webhook deliveries")
    log.add_argument("--subscription", help="only this subscription id")
    log.add_argument("--status", choices=DELIVERY_STATUSES)
    log.add_argument("--limit", type=_positive, default=50, help="most rows (default 50)")
    _add_one_shot_flags(log)

    live = commands.add_parser(
        "workers", help="list live serve/worker processes, their heartbeats and deliveries held"
    )
    _add_one_shot_flags(live)

    token = commands.add_parser("token", help="manage API tokens")
    token_commands = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    create = token_commands.add_parser("create", help="create a token and print it")
    create.add_argument("--role", choices=ROLES, required=True)
    create.add_argument("--name", type=_new_name, required=True)
    _add_one_shot_flags(create)
    listing = token_commands.add_parser("list", help="list tokens (never their secrets)")
    _add_one_shot_flags(listing)
    revoke = token_commands.add_parser("revoke", help="revoke a token by name, at once")
    revoke.add_argument("name", type=_name)
    _add_one_shot_flags(revoke)

    link = commands.add_parser(
        "portal-link", help="print a single-use portal sign-in link for a partner token"
    )
    link.add_argument("partner", type=_name, help="the partner token's name")
    link.add_argument(
        "--ttl",
        type=_ttl,
        default=3600.0,
        help="how long the link works unused: 1m to 7d, e.g. 30m or 1h (default 1h)",
    )
    _add_one_shot_flags(link)

    commands.add_parser("openapi", help="print the OpenAPI document of the JSON API")

    imp = commands.add_parser("import", help="import articles from JSON / NDJSON files")
    imp.add_argument("paths", nargs="+", type=Path, metavar="FILE|DIR")
    imp.add_argument("--batch-size", type=int, default=DEFAULT_IMPORT_BATCH)
    imp.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _add_one_shot_flags(imp, ["base_url", "max_topics"])

    base = commands.add_parser(
        "base-url", help="show or change the public base URL stored in the database"
    )
    base_commands = base.add_subparsers(dest="base_url_command", required=True, metavar="ACTION")
    show = base_commands.add_parser("show", help="print the stored base URL")
    _add_one_shot_flags(show)
    change = base_commands.add_parser(
        "set",
        help="store another base URL: new articles' GUIDs and every link use it "
        "(GUIDs already issued never change)",
    )
    change.add_argument("url", help="the public origin, e.g. https://health.example.org")
    _add_one_shot_flags(change)
    return parser


def _settings(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    flags = {name: getattr(args, name, None) for name in FIELDS}
    return load_settings(flags, environ)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    argv_list = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv_list)
    env = os.environ if environ is None else environ
    try:
        settings = _settings(args, env)
    except SettingsError as exc:
        fail(str(exc))
        return 2
    configure_logging(settings.log_level, settings.log_format)
    try:
        return _dispatch(args, settings, argv_list, env)
    except CommandFailed as exc:
        fail(str(exc))
        return exc.code
    except storage_pkg.StorageError as exc:
        fail(str(exc))
        return 1
    except KeyboardInterrupt:
        return 130


def _dispatch(
    args: argparse.Namespace, settings: Settings, argv: list[str], env: Mapping[str, str]
) -> int:
    create = getattr(args, "create", False)
    given = site.base_url_given(getattr(args, "base_url", None), env)
    if args.command == "serve":
        child = env.get(serve.CHILD_ENV) == "1"
        return run(settings, serve.serve(settings, argv, child=child, base_url_given=given))
    if args.command == "openapi":
        sys.stdout.buffer.write(document_bytes(settings))
        return 0
    if args.command == "worker":
        return run(settings, serve.worker(settings, create=create, base_url_given=given))
    if args.command == "workers":
        return run(settings, status.workers(settings, create=create))
    if args.command == "deliveries":
        return run(settings, status.deliveries(settings, args))
    if args.command == "token" and args.token_command == "create":
        return run(settings, tokens.token_create(settings, args.role, args.name, create=create))
    if args.command == "token" and args.token_command == "list":
        return run(settings, tokens.token_list(settings, create=create))
    if args.command == "token" and args.token_command == "revoke":
        return run(settings, tokens.token_revoke(settings, args.name, create=create))
    if args.command == "portal-link":
        return run(settings, tokens.portal_link(settings, args.partner, args.ttl, create=create))
    if args.command == "import":
        return run(settings, imports.import_command(settings, args, base_url_given=given))
    if args.command == "base-url" and args.base_url_command == "show":
        return run(settings, site.base_url_show(settings, create=create))
    if args.command == "base-url" and args.base_url_command == "set":
        return run(settings, site.base_url_set(settings, args.url, create=create))
    raise AssertionError(f"unknown command {args.command}")
