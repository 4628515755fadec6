"""Single-use sign-in links for partners (``syndicate portal-link`` and
``POST /api/portal-links``): a random secret in the URL, stored only as its hash,
good for one sign-in before it expires."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Final

from storage import Storage
from storage.records import utcnow
from syndicate.core.errors import Problem
from syndicate.web.auth import hash_token

LINK_PATH: Final = "/portal/link/"
DEFAULT_TTL: Final = timedelta(hours=1)
MAX_TTL: Final = timedelta(days=7)
MIN_TTL: Final = timedelta(minutes=1)


async def create_link(
    storage: Storage, base_url: str, partner: str, ttl: timedelta
) -> tuple[str, datetime]:
    """A sign-in link for the partner token named ``partner``: (its URL, when it
    expires). 404 when no live token has that name, 422 for an operator token (a link
    in an e-mail must never sign anyone in as an operator) or a TTL out of range."""
    if not MIN_TTL <= ttl <= MAX_TTL:
        raise Problem(
            422,
            "ttl: must be between 1 minute and 7 days",
            errors=[{"field": "ttl", "message": "must be between 1 minute and 7 days"}],
        )
    token = await storage.get_live_token(partner)
    if token is None:
        raise Problem(404, f"no live token named {partner!r}")
    if token.role != "partner":
        message = "portal links are for partner tokens; operators sign in with their token"
        raise Problem(422, f"partner: {message}", errors=[{"field": "partner", "message": message}])
    secret = secrets.token_urlsafe(32)
    expires_at = utcnow() + ttl
    await storage.create_portal_link(
        link_hash=hash_token(secret), token_id=token.id, expires_at=expires_at
    )
    return f"{base_url}{LINK_PATH}{secret}", expires_at
