"""``syndicate token create|list|revoke`` and ``syndicate portal-link``."""

from __future__ import annotations

import sys
from datetime import timedelta
from typing import Any

import storage as storage_pkg
from syndicate.cli.common import open_database
from syndicate.core.errors import Problem
from syndicate.core.names import SITE_BASE_URL
from syndicate.core.settings import Settings
from syndicate.web.auth import create_token
from syndicate.web.portal.links import create_link


async def token_list(settings: Settings, *, create: bool = False) -> int:
    store = await open_database(settings, create=create)
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


async def token_revoke(settings: Settings, name: str, *, create: bool = False) -> int:
    store = await open_database(settings, create=create)
    try:
        revoked = await store.revoke_token(name)
    except storage_pkg.TokenAlreadyRevoked as exc:
        at = f" at {exc.revoked_at:%Y-%m-%d %H:%M} UTC" if exc.revoked_at else ""
        message = f"syndicate: no live token named {name!r}: it was already revoked{at}"
        print(message, file=sys.stderr)
        return 1
    finally:
        await store.close()
    if revoked is None:
        print(f"syndicate: no live token named {name!r}", file=sys.stderr)
        return 1
    print(f"revoked {name}")
    return 0


async def token_create(settings: Settings, role: Any, name: str, *, create: bool = False) -> int:
    store = await open_database(settings, create=create)
    try:
        secret, _ = await create_token(store, name=name, role=role)
    except (storage_pkg.TokenExists, storage_pkg.TokenNameKeepsRole) as exc:
        print(f"syndicate: cannot create the {role} token {name!r}: {exc}", file=sys.stderr)
        return 1
    finally:
        await store.close()
    print(secret)
    return 0


async def portal_link(settings: Settings, partner: str, ttl: float, *, create: bool = False) -> int:
    """Print a single-use portal sign-in link for the partner token ``partner``, made
    with the database's stored base URL (the one the service answers on)."""
    store = await open_database(settings, create=create)
    try:
        base_url = await store.site_setting(SITE_BASE_URL) or settings.base_url
        try:
            url, expires_at = await create_link(store, base_url, partner, timedelta(seconds=ttl))
        except Problem as exc:
            print(f"syndicate: no portal link: {exc.detail}", file=sys.stderr)
            return 1
    finally:
        await store.close()
    print(url)
    print(f"single use; expires {expires_at:%Y-%m-%d %H:%M:%S} UTC", file=sys.stderr)
    return 0
