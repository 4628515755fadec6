"""What every command shares: the one-line failure, opening the database (and saying
which one), the event loop, and how to name this command to the operator."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from storage import Storage, StorageError, is_postgres_url, open_storage
from storage.sqlite import path_from_url
from syndicate.core.errors import SyndicateError
from syndicate.core.settings import DEFAULT_DATABASE, Settings

DATABASE_SETTING = "--database or SYNDICATE_DATABASE"


class CommandFailed(SyndicateError):
    """A command cannot go on: ``str()`` is the one line the operator reads (after
    ``syndicate: ``), naming what to fix; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def fail(message: str) -> None:
    print(f"syndicate: {message}", file=sys.stderr, flush=True)


def describe_database(url: str) -> str:
    """The database as the operator can find it: a SQLite file's absolute path, or a
    PostgreSQL URL with its host and port spelled out and no password."""
    if url.startswith("sqlite:"):
        path = path_from_url(url)
        return path if path == ":memory:" else str(Path(path).absolute())
    if is_postgres_url(url):
        parts = urlsplit(url)
        user = f"{parts.username}@" if parts.username else ""
        host = parts.hostname or "localhost"
        host = f"[{host}]" if ":" in host else host
        return f"postgresql://{user}{host}:{parts.port or 5432}{parts.path}"
    return url


def _postgres_address(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    return f"{f'[{host}]' if ':' in host else host}:{parts.port or 5432}"


def _check_sqlite_path(url: str, *, create: bool) -> None:
    """Refuse, in one line, a SQLite path that cannot be a database (under a file, a
    folder) or, unless ``create``, that does not exist yet."""
    raw = path_from_url(url)
    if raw == ":memory:":
        return
    path = Path(raw).absolute()
    existing = path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise CommandFailed(
            f"cannot use the database {path}: {existing} is a file, not a folder; "
            f"choose another path with {DATABASE_SETTING}"
        )
    if path.is_dir():
        raise CommandFailed(
            f"cannot use the database {path}: it is a folder; "
            f"name a file in it with {DATABASE_SETTING}"
        )
    if path.exists():
        return
    if not create:
        raise CommandFailed(
            f"no database at {path}: run this command in the folder `syndicate serve` runs in, "
            f"name the database with {DATABASE_SETTING}, or add --create to make a new one"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CommandFailed(
            f"cannot create the database {path}: {existing} is not writable; "
            f"choose another path with {DATABASE_SETTING}"
        )


async def open_database(settings: Settings, *, create: bool, announce: bool = True) -> Storage:
    """Open (and migrate) the configured database, or raise ``CommandFailed`` naming
    the file or host:port and the setting. ``create``: a missing SQLite file may be
    made. ``announce``: say on stderr which database this is."""
    url = settings.database
    if url.startswith("sqlite:"):
        _check_sqlite_path(url, create=create)
    try:
        store = await open_storage(
            url,
            pool_min=settings.db_pool_min,
            pool_max=settings.db_pool_max,
            fast_paths=settings.fast_paths,
        )
    except StorageError as exc:
        if is_postgres_url(url):
            raise CommandFailed(
                f"cannot open the database {describe_database(url)}: {exc}; is PostgreSQL "
                f"running at {_postgres_address(url)}? Set the database with {DATABASE_SETTING}"
            ) from None
        raise CommandFailed(
            f"cannot open the database {describe_database(url)}: {exc}; "
            f"choose another with {DATABASE_SETTING}"
        ) from None
    if announce:
        print(f"syndicate: database {describe_database(url)}", file=sys.stderr, flush=True)
    return store


def command_name() -> str:
    """How the operator can run ``syndicate`` from where they are: ``syndicate`` when
    that is on PATH, else the script beside this Python (``.venv/bin/syndicate``)."""
    script = Path(sys.executable).parent / "syndicate"
    on_path = shutil.which("syndicate")
    if on_path and script.exists() and Path(on_path).resolve() == script.resolve():
        return "syndicate"
    if not script.exists():
        return f"{sys.executable} -m syndicate"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


def database_flag(settings: Settings) -> str:
    """`` --database URL`` when the database is not the default, so a printed command
    reaches this one."""
    url = settings.database
    if url == DEFAULT_DATABASE:
        return ""
    if url.startswith("sqlite:"):
        return f" --database sqlite:///{describe_database(url)}"
    return f" --database {describe_database(url)}"


def run(settings: Settings, main: Coroutine[Any, Any, int]) -> int:
    """Run a command's coroutine on the configured event loop."""
    if settings.event_loop == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)
