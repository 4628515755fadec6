"""``syndicate import FILE|DIR ...``."""

from __future__ import annotations

import argparse
import sys

from syndicate.cli.common import CommandFailed, open_database
from syndicate.cli.site import settle_base_url
from syndicate.content.importer import ImportFileError, count_paths, import_paths
from syndicate.core.settings import Settings
from syndicate.delivery.webhooks import body_renderer


async def import_command(
    settings: Settings, args: argparse.Namespace, *, base_url_given: bool = False
) -> int:
    if args.batch_size < 1:
        raise CommandFailed("--batch-size must be at least 1", code=2)
    # The input first: a missing, malformed or empty one stops here, before a
    # database is opened (or, with --create, made and migrated for nothing).
    try:
        counted = count_paths(args.paths)
    except ImportFileError as exc:
        raise CommandFailed(str(exc)) from None
    store = await open_database(settings, create=args.create)
    try:
        # GUIDs are minted with the database's base URL, as serve's are.
        settings = await settle_base_url(store, settings, given=base_url_given)
        store.set_event_renderer(body_renderer(settings.base_url))
        report = await import_paths(
            store,
            args.paths,
            host=settings.public_host,
            base_url=settings.base_url,
            batch_size=args.batch_size,
            progress=not args.no_progress,
            max_topics=settings.max_topics,
            counted=counted,
        )
    except ImportFileError as exc:
        raise CommandFailed(str(exc)) from None
    finally:
        await store.close()
    report.print(sys.stdout)
    return 1 if report.counts["rejected"] else 0
