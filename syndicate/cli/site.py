"""The public base URL, one per database: every process mints GUIDs and links with it.

It is stored on the first start of any process that uses it (``serve``, ``worker``,
``import``); later processes take the stored one. One given explicitly (``--base-url``
or ``SYNDICATE_BASE_URL``) that differs is refused: ``import`` without ``--base-url``
stamped ``tag:127.0.0.1,...`` GUIDs while ``serve`` ran as ``https://health.example.org``,
and a GUID can never change afterwards. ``syndicate base-url set URL`` changes it on
purpose (GUIDs already issued keep their host: they are stored with each article).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

from storage import Storage
from syndicate.cli.common import CommandFailed, command_name, database_flag, open_database
from syndicate.core.names import SITE_BASE_URL
from syndicate.core.settings import FIELDS, Settings, SettingsError

#: Where a base URL given explicitly comes from, for the messages.
BASE_URL_SETTING = "--base-url or " + FIELDS["base_url"][0]


def base_url_given(flag: str | None, environ: Mapping[str, str]) -> bool:
    """Whether the operator named a base URL (flag or environment), rather than
    leaving it to the default made from the host and port."""
    return bool(flag) or bool(environ.get(FIELDS["base_url"][0]))


async def settle_base_url(store: Storage, settings: Settings, *, given: bool) -> Settings:
    """``settings`` with the database's base URL. None stored yet: this one is stored
    (the first process to do so wins). One ``given`` that differs from the stored one:
    ``CommandFailed`` naming both and how to change it. Not given: the stored one."""
    stored = await store.site_setting(SITE_BASE_URL)
    if stored is None:
        stored = await store.claim_site_setting(SITE_BASE_URL, settings.base_url)
    if stored == settings.base_url:
        return settings
    if given:
        raise CommandFailed(
            f"the base URL {settings.base_url} ({BASE_URL_SETTING}) is not this database's, "
            f"{stored}: its GUIDs and links use that one. Leave {BASE_URL_SETTING} out to use "
            f"it, or change it for new articles with: {command_name()} base-url set "
            f"{settings.base_url}{database_flag(settings)}",
            code=2,
        )
    return settings.replace(base_url=stored)


async def base_url_show(settings: Settings, *, create: bool) -> int:
    store = await open_database(settings, create=create)
    try:
        stored = await store.site_setting(SITE_BASE_URL)
    finally:
        await store.close()
    print(
        stored if stored is not None else "(none yet: the first serve, worker or import stores it)"
    )
    return 0


async def base_url_set(settings: Settings, url: str, *, create: bool) -> int:
    if not url.strip():
        raise CommandFailed("base-url set: give the URL (an empty one is no base URL)", code=2)
    try:
        wanted = settings.replace(base_url=url).base_url
    except SettingsError as exc:
        raise CommandFailed(str(exc), code=2) from None
    store = await open_database(settings, create=create)
    try:
        before = await store.site_setting(SITE_BASE_URL)
        await store.set_site_setting(SITE_BASE_URL, wanted)
    finally:
        await store.close()
    print(f"base URL {wanted}" + (f" (was {before})" if before and before != wanted else ""))
    if before and before != wanted:
        print(
            "Articles stored before keep their GUIDs; restart serve and worker processes "
            "to use the new base URL.",
            file=sys.stderr,
        )
    return 0
