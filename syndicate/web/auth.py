"""Bearer tokens: made here, stored only as SHA-256 hashes, checked per request.

Tokens carry 256 bits of randomness, so a fast hash is enough (there is nothing
to brute-force) and lookups by hash take the same time whatever the secret.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Final

from aiohttp import web

from storage import Storage
from storage.records import Role, Token
from syndicate.core.errors import Problem
from syndicate.web.appkeys import STORAGE
from syndicate.web.limits import client_key, enforce
from syndicate.web.requests import check_query

TOKEN_PREFIX: Final = "syn_"
#: How often ``last_used_at`` is written for one token, at most.
TOUCH_INTERVAL_SECONDS: Final = 60.0
_TOKEN_KEY = web.RequestKey("token", Token)
_last_touch: dict[tuple[int, int], float] = {}


def generate_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


async def create_token(storage: Storage, *, name: str, role: Role) -> tuple[str, Token]:
    """Make a new token; returns the secret (shown once) and its record."""
    secret = generate_token()
    record = await storage.create_token(name=name, role=role, token_hash=hash_token(secret))
    return secret, record


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


async def touch(storage: Storage, token: Token) -> None:
    """Record that ``token`` was used (its ``last_used_at``), at most once a minute per
    process: by the API, and by the portal for the token a session acts as."""
    now = time.monotonic()
    key = (id(storage), token.id)
    if now - _last_touch.get(key, -TOUCH_INTERVAL_SECONDS) >= TOUCH_INTERVAL_SECONDS:
        _last_touch[key] = now
        await storage.touch_token(token.id)


async def still_valid(request: web.Request) -> bool:
    """Is the request's token still unrevoked? For responses that last (an event
    stream): a token revoked while one is open must not go on reading."""
    secret = _bearer(request)
    if secret is None:
        return False
    return await request.app[STORAGE].get_token_by_hash(hash_token(secret)) is not None


async def authenticate(request: web.Request, *roles: Role) -> Token:
    """The request's token, which must hold one of ``roles``: 401 without a
    valid one, 403 when it holds another role."""
    cached: Token | None = request.get(_TOKEN_KEY)
    if cached is not None:
        token = cached
    else:
        secret = _bearer(request)
        challenge = {"WWW-Authenticate": 'Bearer realm="syndicate"'}
        if secret is None:
            enforce(request, client_key(request))
            raise Problem(401, "send Authorization: Bearer <token>", headers=challenge)
        storage = request.app[STORAGE]
        found = await storage.get_token_by_hash(hash_token(secret))
        if found is None:
            enforce(request, client_key(request))
            raise Problem(401, "the token is not valid", headers=challenge)
        token = found
        request[_TOKEN_KEY] = token
        await touch(storage, token)
    if token.role not in roles:
        raise Problem(403, f"this needs a {' or '.join(roles)} token; yours is {token.role}")
    if token.role != "operator" and request.method not in ("GET", "HEAD"):
        enforce(request, f"token:{token.id}", client_key(request))
    if request.query:
        check_query(request)
    return token
