"""Portal sessions and CSRF tokens.

A session is a random 256-bit secret in an HttpOnly, SameSite=Strict cookie (Secure
when the service is reached over https), stored server-side only as its SHA-256 hash,
with a fixed lifetime (``SESSION_TTL``). It acts as one token: revoking the token ends
its sessions (the storage deletes them, and a session whose token is revoked is never
read back), and signing out deletes the one session.

Every form carries a CSRF token. Signed in, it is an HMAC of the session's secret
(nothing more to store, different per session); before signing in, a random value in
a second cookie that the form must repeat (the double-submit pattern). A POST is also
refused when the browser says it came from another site (``Origin``,
``Sec-Fetch-Site``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final
from urllib.parse import urlencode, urlsplit

from aiohttp import web
from multidict import MultiDict, MultiDictProxy

from storage.records import Role, Token, utcnow
from syndicate.core.errors import Problem
from syndicate.web.appkeys import SETTINGS, STORAGE
from syndicate.web.auth import hash_token, touch
from syndicate.web.limits import enforce

SESSION_COOKIE: Final = "syndicate_session"
FORM_COOKIE: Final = "syndicate_form"
COOKIE_PATH: Final = "/portal"
SESSION_TTL: Final = timedelta(hours=12)
SIGN_IN_PATH: Final = "/portal/sign-in"
_CSRF_CONTEXT: Final = b"syndicate portal csrf"


@dataclass(frozen=True)
class Viewer:
    """Who is signed in: the token the session acts as, and its forms' CSRF token."""

    token: Token
    csrf: str
    session_hash: str

    @property
    def role(self) -> Role:
        return self.token.role

    @property
    def name(self) -> str:
        return self.token.name

    @property
    def is_operator(self) -> bool:
        return self.token.role == "operator"


VIEWER = web.RequestKey("portal_viewer", Viewer)
_NEW_FORM_TOKEN = web.RequestKey("portal_new_form_token", str)


def _csrf_of(secret: str) -> str:
    return hmac.new(secret.encode(), _CSRF_CONTEXT, hashlib.sha256).hexdigest()


def _secure(request: web.Request) -> bool:
    return request.secure or request.app[SETTINGS].base_url.startswith("https:")


def _cookie_options(request: web.Request) -> dict[str, Any]:
    return {
        "path": COOKIE_PATH,
        "httponly": True,
        "secure": _secure(request),
        "samesite": "Strict",
    }


async def signed_in(request: web.Request) -> Viewer | None:
    """The request's session, if its cookie names a live one."""
    if VIEWER in request:
        return request[VIEWER]
    secret = request.cookies.get(SESSION_COOKIE)
    if not secret or len(secret) > 128:
        return None
    session_hash = hash_token(secret)
    session = await request.app[STORAGE].get_portal_session(session_hash)
    if session is None:
        return None
    viewer = Viewer(session.token, _csrf_of(secret), session_hash)
    request[VIEWER] = viewer
    await touch(request.app[STORAGE], session.token)
    return viewer


async def require(request: web.Request, *roles: Role) -> Viewer:
    """The signed-in viewer, who must hold one of ``roles``: without a session, a
    redirect to the sign-in page (back here after); with another role, 403."""
    viewer = await signed_in(request)
    if viewer is None:
        target = request.path_qs if request.method == "GET" else "/portal/"
        raise web.HTTPSeeOther(
            f"{SIGN_IN_PATH}?{urlencode({'next': target})}",
            headers={"Cache-Control": "no-store"},
        )
    if viewer.role not in roles:
        raise Problem(
            403, f"this page is for {' or '.join(roles)}s; you are signed in as a {viewer.role}"
        )
    return viewer


async def start_session(request: web.Request, response: web.StreamResponse, token: Token) -> None:
    """Sign ``token`` in: store a new session and set its cookie on ``response``.
    Any session the browser had is ended first (no session fixation)."""
    await end_session(request, response)
    secret = secrets.token_urlsafe(32)
    await request.app[STORAGE].create_portal_session(
        session_hash=hash_token(secret), token_id=token.id, expires_at=utcnow() + SESSION_TTL
    )
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        max_age=int(SESSION_TTL.total_seconds()),
        **_cookie_options(request),
    )


async def end_session(request: web.Request, response: web.StreamResponse) -> None:
    """Delete the browser's session, if any, and clear its cookie."""
    secret = request.cookies.get(SESSION_COOKIE)
    if secret:
        await request.app[STORAGE].delete_portal_session(hash_token(secret))
        response.del_cookie(SESSION_COOKIE, path=COOKIE_PATH)
    request.pop(VIEWER, None)


def _form_token(request: web.Request) -> str:
    """The CSRF token of forms shown before signing in (the form cookie's value),
    made (and set on the response by ``page``) when the browser has none."""
    existing = request.cookies.get(FORM_COOKIE)
    if existing and 20 <= len(existing) <= 128:
        return existing
    if _NEW_FORM_TOKEN not in request:
        request[_NEW_FORM_TOKEN] = secrets.token_urlsafe(32)
    return request[_NEW_FORM_TOKEN]


def set_form_cookie(request: web.Request, response: web.StreamResponse) -> None:
    """Set the form cookie if this request made one."""
    value = request.get(_NEW_FORM_TOKEN)
    if value is not None:
        response.set_cookie(FORM_COOKIE, value, **_cookie_options(request))


def page_context(request: web.Request) -> dict[str, Any]:
    """What every portal page is rendered with: the viewer and its forms' CSRF token."""
    viewer = request.get(VIEWER)
    return {
        "viewer": viewer,
        "csrf": viewer.csrf if viewer is not None else _form_token(request),
    }


def _same_site(request: web.Request) -> bool:
    """False when the browser says the request came from another site."""
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    if origin == "null":
        return False
    return urlsplit(origin).netloc.lower() == request.host.lower()


async def read_form(request: web.Request, *, write: bool = True) -> MultiDictProxy[str]:
    """A portal form's fields, after its CSRF check: 403 without the right token, or
    from another site. The token is the session's when signed in, else the form
    cookie's. A partner's form that changes something (``write``) spends ``spend_write``."""
    ctype = request.content_type
    if ctype not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        raise Problem(415, f"send a form (application/x-www-form-urlencoded), not {ctype}")
    form = await request.post()
    fields = MultiDictProxy(MultiDict((k, v) for k, v in form.items() if isinstance(v, str)))
    viewer = await signed_in(request)
    expected = viewer.csrf if viewer is not None else request.cookies.get(FORM_COOKIE)
    sent = fields.get("csrf", "")
    if (
        not _same_site(request)
        or not expected
        or not hmac.compare_digest(sent.encode(), expected.encode())
    ):
        raise Problem(
            403,
            "this form was not sent from this site's own page, or the page had expired: "
            "go back, reload it and send it again",
            title="Form refused",
        )
    if write and viewer is not None:
        spend_write(request, viewer)
    return fields


def spend_write(request: web.Request, viewer: Viewer) -> None:
    """A partner's write spends its token's rate limit, the bucket its API writes
    spend (429 beyond); operators' are not limited, as in the API. Only the token's
    bucket: the per-address one is also spent by requests without a session, which
    must not be able to hold a signed-in partner back."""
    if viewer.role != "operator":
        enforce(request, f"token:{viewer.token.id}")
