"""How every portal page is answered: Jinja2 templates under ``templates/portal/``,
autoescaped, with a strict Content Security Policy (no script, no inline style: the
one stylesheet is served from the package), never cached, never framed.

Errors a portal handler raises (``Problem``, storage errors, anything unexpected)
are answered as an HTML page of the portal, not problem+json: the reader is a person
in a browser. Redirects (``web.HTTPSeeOther``) pass through.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import Any, Final
from urllib.parse import quote, urlencode

import jinja2
from aiohttp import web
from markupsafe import Markup

from syndicate.core.names import ALL_TOPICS_SLUG
from syndicate.web.portal.session import page_context, set_form_cookie
from syndicate.web.problems import problem_for
from syndicate.web.templating import environment

PORTAL: Final = "/portal"
STYLESHEET_PATH: Final = f"{PORTAL}/static/portal.css"
#: No script at all; the stylesheet from this origin; images only as data: (the
#: charts are inline SVG elements, which need no source); forms post only here.
CSP: Final = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
PAGE_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}
#: The longest error message an error page shows (the rest is cut).
MAX_ERROR_MESSAGE: Final = 400
_STYLESHEET = resources.files("syndicate").joinpath("static/portal.css").read_bytes()


def _when(value: datetime | None) -> Markup:
    """A time as the portal shows it: UTC, to the second, in a ``<time>`` element
    (machine-readable, and never broken across lines)."""
    if value is None:
        return Markup("—")
    utc = value.astimezone(UTC)
    return Markup('<time datetime="{}">{}</time>').format(
        utc.strftime("%Y-%m-%dT%H:%M:%SZ"), utc.strftime("%Y-%m-%d %H:%M:%S UTC")
    )


#: What HTML may not carry as text: C0 controls but tab, line feed and carriage return,
#: DEL, C1 controls, surrogates and the noncharacters U+FDD0..U+FDEF and U+xFFFE/F.
_NOT_TEXT: Final = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef"
    + "".join(f"\\U{plane:04x}fffe\\U{plane:04x}ffff" for plane in range(17))
    + "]"
)


def _printable(text: str | None) -> str | None:
    """Text a partner's server sent (a response body, an error naming it), with what
    HTML cannot show replaced by U+FFFD: the page stays valid whatever it answered."""
    return None if text is None else _NOT_TEXT.sub("\ufffd", text)


def _few(items: Sequence[str], shown: int = 3) -> str:
    """A list in a table cell: the first ``shown``, then how many more."""
    if len(items) <= shown + 1:
        return ", ".join(items)
    return f"{', '.join(items[:shown])} and {len(items) - shown} more"


def _make_templates() -> jinja2.Environment:
    env = environment()
    env.filters["when"] = _when
    env.filters["few"] = _few
    env.filters["printable"] = _printable
    env.filters["url_part"] = lambda value: quote(str(value), safe="")
    env.globals["stylesheet"] = STYLESHEET_PATH
    env.globals["portal"] = PORTAL
    env.globals["all_topics"] = ALL_TOPICS_SLUG
    return env


TEMPLATES: Final = _make_templates()


def page(
    request: web.Request,
    template: str,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    **context: Any,
) -> web.Response:
    """Render ``portal/<template>``. ``context`` gets ``viewer`` and ``csrf`` (the
    signed-in session's, or None / the sign-in form's) and ``nav`` (the active
    nav item) filled in when the handler did not give them."""
    for key, value in page_context(request).items():
        context.setdefault(key, value)
    context.setdefault("nav", "")
    context.setdefault("notice", None)
    body = TEMPLATES.get_template(f"portal/{template}").render(**context)
    response = web.Response(
        status=status,
        text=body,
        content_type="text/html",
        charset="utf-8",
        headers={**PAGE_HEADERS, **(headers or {})},
    )
    set_form_cookie(request, response)
    return response


def see_other(location: str, *, notice: str | None = None) -> web.Response:
    """A 303 to ``location`` (after a POST: a reload does not post again), with a
    ``notice`` key the next page turns into a message of its own choosing. Returned,
    not raised: cookies set on it are sent."""
    if notice is not None:
        joiner = "&" if "?" in location else "?"
        location = f"{location}{joiner}{urlencode({'notice': notice})}"
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


def notice_from(request: web.Request, messages: Mapping[str, str]) -> str | None:
    """The message for the ``notice`` key a redirect carried, from the handler's own
    table: a key nobody issued shows nothing (no text comes from the URL)."""
    key = request.query.get("notice")
    return None if key is None else messages.get(key)


def error_page(request: web.Request, exc: Exception) -> web.StreamResponse | None:
    """The portal's answer for an exception a handler raised (``served``'s
    ``on_error``): an HTML page with the problem's status and detail."""
    problem = problem_for(request, exc)
    if problem is None:
        return None
    message = problem.detail
    if len(message) > MAX_ERROR_MESSAGE:  # it may quote a megabyte-long id from the URL
        message = message[: MAX_ERROR_MESSAGE - 1] + "…"
    return page(
        request,
        "error.html",
        status=problem.status,
        headers=problem.headers,
        title=problem.title,
        message=message,
    )


async def stylesheet(request: web.Request) -> web.Response:
    return web.Response(
        body=_STYLESHEET,
        content_type="text/css",
        charset="utf-8",
        headers={"Cache-Control": "public, max-age=3600"},
    )
