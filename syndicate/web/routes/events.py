"""``GET /api/events``: the change log as an API, for partners that pull instead of
being pushed to (a firewall, no public endpoint, an hourly batch, an outage longer
than the retry schedule). Items are the webhook bodies with their ids, read through
the process's ``ChangeLog``; ``wait=`` long-polls."""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
from collections import Counter
from collections.abc import Iterator

from aiohttp import web

from syndicate.content.responses import EventList
from syndicate.content.validation import invalid
from syndicate.core.errors import Problem
from syndicate.core.names import EVENT_TYPES, TOPIC_SLUG
from syndicate.web.auth import authenticate
from syndicate.web.changelog import CHANGE_LOG, Page
from syndicate.web.eventquery import cursor_for, parse_filter, resolve_after
from syndicate.web.operations import ANY_TOKEN, ApiRoutes
from syndicate.web.requests import query_param

routes = ApiRoutes()

DEFAULT_EVENTS_LIMIT = 100
MAX_EVENTS_LIMIT = 1_000
#: The longest long-poll, seconds.
MAX_WAIT = 30.0
#: Long-polls waiting at once, per token and in all, per process (each holds a
#: connection for up to MAX_WAIT: uncapped, one partner token held the server's every
#: file descriptor). Beyond: 429 with ``Retry-After``.
MAX_LONG_POLLS_PER_TOKEN = 10
MAX_LONG_POLLS = 1_000
LONG_POLL_RETRY_AFTER = 5


class LongPolls:
    """The long-polls waiting in this process, by token."""

    def __init__(self) -> None:
        self.by_token: Counter[int] = Counter()

    @contextlib.contextmanager
    def admitted(self, token_id: int) -> Iterator[None]:
        retry = {"Retry-After": str(LONG_POLL_RETRY_AFTER)}
        if self.by_token[token_id] >= MAX_LONG_POLLS_PER_TOKEN:
            raise Problem(
                429,
                f"this token has {MAX_LONG_POLLS_PER_TOKEN} long-polls waiting, the most "
                "it may; wait for one to answer, or use GET /api/events/stream",
                headers=retry,
            )
        if self.by_token.total() >= MAX_LONG_POLLS:
            raise Problem(429, "too many long-polls are waiting; try again later", headers=retry)
        self.by_token[token_id] += 1
        try:
            yield
        finally:
            self.by_token[token_id] -= 1
            if not self.by_token[token_id]:
                del self.by_token[token_id]


LONG_POLLS = web.AppKey("long_polls", LongPolls)

#: ``wait``: plain ASCII decimals (``float`` also takes ``1_0``, full-width digits, ``inf``...).
_SECONDS = re.compile(r"[0-9]{1,6}(\.[0-9]{1,6})?")
_TOPIC = rf"(\*|{TOPIC_SLUG})"
_TYPE = "(" + "|".join(re.escape(t) for t in EVENT_TYPES) + ")"
#: ``after``, ``topics`` and ``types``, as the stream takes them too.
EVENT_QUERY: dict[str, dict[str, object]] = {
    "after": {
        "type": "string",
        "minLength": 1,
        "description": "Read after this position: a next_cursor, or an event id (msg_..., "
        "as sent in webhook-id). Left out: from the oldest event kept.",
    },
    "topics": {
        "type": "string",
        "description": "Comma-separated topic slugs (or *): only events of these topics.",
        "pattern": rf"^{_TOPIC}(,{_TOPIC})*$",
    },
    "types": {
        "type": "string",
        "description": f"Comma-separated event types ({', '.join(EVENT_TYPES)}).",
        "pattern": rf"^{_TYPE}(,{_TYPE})*$",
    },
}


def _limit(request: web.Request) -> int:
    raw = query_param(request, "limit")
    if raw is None:
        return DEFAULT_EVENTS_LIMIT
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_EVENTS_LIMIT:
        raise invalid("limit", f"must be a whole number from 1 to {MAX_EVENTS_LIMIT}")
    return int(raw)


def _wait(request: web.Request) -> float:
    raw = query_param(request, "wait")
    if raw is None:
        return 0.0
    if not _SECONDS.fullmatch(raw):
        raise invalid("wait", f"{raw[:40]!r} is not a number of seconds (like 25 or 2.5)")
    seconds = float(raw)
    if not (math.isfinite(seconds) and 0 <= seconds <= MAX_WAIT):
        raise invalid("wait", f"must be from 0 to {MAX_WAIT:g} seconds")
    return seconds


def _answer(page: Page, last: int) -> web.Response:
    more = b"true" if page.more else b"false"
    tail = b'],"next_cursor":"%s","has_more":%s}' % (cursor_for(last).encode(), more)
    # One join, so the items (a megabyte or more in a full page) are copied once.
    parts = [b'{"events":[']
    for item in page.items:
        parts += (item.body, b",")
    if page.items:
        parts.pop()
    parts.append(tail)
    body = b"".join(parts)
    return web.Response(
        body=body,
        content_type="application/json",
        charset="utf-8",
        headers={"Cache-Control": "no-store"},
    )


@routes.operation(
    "get",
    "/api/events",
    "Read the change log",
    ANY_TOKEN,
    {200: EventList},
    query={
        **EVENT_QUERY,
        "limit": {
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_EVENTS_LIMIT,
            "default": DEFAULT_EVENTS_LIMIT,
        },
        "wait": {
            "type": "number",
            "minimum": 0,
            "maximum": MAX_WAIT,
            "default": 0,
            "description": "Long-poll: with nothing to answer, wait up to this many "
            "seconds for an event.",
        },
    },
    errors=(400, 401, 403, 404, 410, 422, 429),
)
async def list_events(request: web.Request) -> web.Response:
    token = await authenticate(request, "operator", "partner")
    limit = _limit(request)
    wait = _wait(request)
    flt = await parse_filter(request)
    after = await resolve_after(request, query_param(request, "after"))
    log = request.app[CHANGE_LOG]
    page = await log.read(after, flt, limit)
    if page.items or wait <= 0:
        return _answer(page, page.last_seq)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    position = page.last_seq
    with request.app[LONG_POLLS].admitted(token.id):
        while not page.items:
            remaining = deadline - loop.time()
            if remaining <= 0 or log.closing:
                break
            # A filtered scan that stopped at its bound (more) reads on at once.
            if not page.more and not await log.wait(position, remaining):
                break
            page = await log.read(position, flt, limit)
            position = page.last_seq
    return _answer(page, position)
