"""``syndicate token create|list|revoke``."""

from __future__ import annotations

import sys
from typing import Any

import storage as storage_pkg
from syndicate.cli.common import open_database
from syndicate.core.settings import Settings
from syndicate.web.auth import create_token


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
