"""The partner's pages about what was sent to an endpoint: the delivery log (with
filters), one delivery and its attempts (retry it), one attempt (the request as it
was sent, what came back), recovering failed deliveries since a time, and the
endpoint's status page. Retry, recover and status go through ``web.subscriptionops``,
as the JSON API's do.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any, Final

from aiohttp import web

from storage import DeliveryNotFound, Storage
from storage.records import Delivery, DeliveryAttempt, Event, Subscription, format_time
from syndicate.content.models import RecoverIn
from syndicate.content.responses import DayStatsOut
from syndicate.content.validation import validate
from syndicate.core.errors import Problem
from syndicate.core.names import DELIVERY_STATUSES, EVENT_TYPES
from syndicate.delivery.webhooks import event_body
from syndicate.web import subscriptionops as ops
from syndicate.web.appkeys import SETTINGS, STORAGE
from syndicate.web.portal.partner import NAV, endpoint_path, form_errors, viewer_and_endpoint
from syndicate.web.portal.render import notice_from, page, see_other
from syndicate.web.portal.session import read_form

routes = web.RouteTableDef()
#: Deliveries on one page of the log; attempts listed on a delivery's page.
LOG_PAGE: Final = 50
DELIVERY_ATTEMPTS: Final = 100
#: What an ``<input type="datetime-local">`` sends (seconds optional): read as UTC.
_LOCAL_TIME: Final = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?")
_TIME_HINT: Final = "a date and time in UTC, e.g. 2026-11-20T08:00"
_NOTICES: Final = {"retried": "The delivery is due now: reload to see its new attempt."}


def _local_time(text: str) -> datetime:
    """A datetime-local field's value, taken as UTC; ValueError when it is none."""
    if _LOCAL_TIME.fullmatch(text) is None:
        raise ValueError(f"enter {_TIME_HINT}")
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _local_value(value: datetime) -> str:
    """A time as a datetime-local field shows it (UTC, to the second)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


async def _event_types(storage: Storage, ids: set[str]) -> dict[str, str]:
    """Each event's type, by id. One small read per event (``find_event`` reads no
    snapshot); a pruned event has no entry."""
    types: dict[str, str] = {}
    for event_id in sorted(ids):
        event = await storage.find_event(event_id)
        if event is not None:
            types[event_id] = event.type
    return types


def _log_filters(query: Any) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    """The log's filters from the query: (storage arguments, values as typed, errors)."""
    typed = {name: query.get(name, "").strip() for name in ("status", "type", "since", "until")}
    args: dict[str, Any] = {}
    errors: dict[str, str] = {}
    if typed["status"]:
        if typed["status"] in DELIVERY_STATUSES:
            args["status"] = typed["status"]
        else:
            errors["status"] = f"must be one of {', '.join(DELIVERY_STATUSES)}"
    if typed["type"]:
        if typed["type"] in EVENT_TYPES:
            args["event_type"] = typed["type"]
        else:
            errors["type"] = f"must be one of {', '.join(EVENT_TYPES)}"
    for name in ("since", "until"):
        if typed[name]:
            try:
                args[name] = _local_time(typed[name])
            except ValueError as exc:
                errors[name] = str(exc)
    cursor = query.get("cursor")
    if cursor:
        before = ops.row_id(cursor)
        if before is None:
            errors[""] = "That page link is not one this portal made: start again from the top."
        args["before_id"] = before
    return args, typed, errors


@routes.get("/portal/endpoints/{id}/deliveries")
async def delivery_log(request: web.Request) -> web.Response:
    _, sub = await viewer_and_endpoint(request)
    storage = request.app[STORAGE]
    args, typed, errors = _log_filters(request.query)
    rows: list[Delivery] = []
    more = None
    if not errors:
        found = await storage.list_deliveries(sub.id, limit=LOG_PAGE + 1, **args)
        more = str(found[LOG_PAGE - 1].id) if len(found) > LOG_PAGE else None
        rows = found[:LOG_PAGE]
    ids = await storage.get_event_ids(sorted({d.event_seq for d in rows}))
    types = await _event_types(storage, set(ids.values()))
    next_query = None
    if more is not None:
        next_query = {**{k: v for k, v in typed.items() if v}, "cursor": more}
    return page(
        request,
        "deliveries.html",
        status=422 if errors else 200,
        nav=NAV,
        sub=sub,
        deliveries=rows,
        event_ids=ids,
        event_types=types,
        values=typed,
        errors=errors,
        statuses=DELIVERY_STATUSES,
        types=EVENT_TYPES,
        next_query=next_query,
    )


@routes.get("/portal/endpoints/{id}/deliveries/{delivery_id}")
async def show_delivery(request: web.Request) -> web.Response:
    _, sub = await viewer_and_endpoint(request)
    delivery = await ops.owned_delivery(request.app, sub, request.match_info["delivery_id"])
    storage = request.app[STORAGE]
    attempts = await storage.list_attempts(sub.id, delivery_id=delivery.id, limit=DELIVERY_ATTEMPTS)
    event_id = (await storage.get_event_ids([delivery.event_seq])).get(delivery.event_seq)
    types = await _event_types(storage, {event_id} if event_id else set())
    return page(
        request,
        "delivery.html",
        nav=NAV,
        sub=sub,
        delivery=delivery,
        event_id=event_id,
        event_type=types.get(event_id or ""),
        attempts=attempts,
        notice=notice_from(request, _NOTICES),
    )


@routes.post("/portal/endpoints/{id}/deliveries/{delivery_id}/retry")
async def retry_delivery(request: web.Request) -> web.Response:
    _, sub = await viewer_and_endpoint(request)
    await read_form(request)
    delivery = await ops.owned_delivery(request.app, sub, request.match_info["delivery_id"])
    await ops.retry(request.app, delivery)
    return see_other(endpoint_path(sub, "deliveries", str(delivery.id)), notice="retried")


async def _owned_attempt(request: web.Request, sub: Subscription) -> DeliveryAttempt:
    raw = request.match_info["attempt_id"]
    attempt_id = ops.row_id(raw)
    attempt = None if attempt_id is None else await request.app[STORAGE].get_attempt(attempt_id)
    if attempt is None or attempt.subscription_id != sub.id:
        raise Problem(404, f"no attempt {raw!r} for subscription {sub.id!r}")
    return attempt


async def _sent_body(request: web.Request, attempt: DeliveryAttempt) -> str | None:
    """The body that attempt POSTed, pretty-printed: the event's webhook body (the
    same bytes on every attempt), or None once the event was pruned."""
    storage = request.app[STORAGE]
    event: Event | None = None
    if attempt.event_id is not None:
        try:
            delivery = await storage.get_delivery(attempt.delivery_id)
        except DeliveryNotFound:  # it went with its event: nothing left to show
            return None
        event = (await storage.get_events([delivery.event_seq])).get(delivery.event_seq)
    if event is None:
        return None
    body = event_body(event, request.app[SETTINGS].base_url)
    return json.dumps(json.loads(body), indent=2, ensure_ascii=False)


@routes.get("/portal/endpoints/{id}/attempts/{attempt_id}")
async def show_attempt(request: web.Request) -> web.Response:
    _, sub = await viewer_and_endpoint(request)
    attempt = await _owned_attempt(request, sub)
    sent_at = attempt.sent_at
    request_headers = [
        ("Content-Type", "application/json"),
        ("webhook-id", attempt.event_id or "— (the event was pruned)"),
        ("webhook-timestamp", str(int(sent_at.timestamp())) if sent_at else "—"),
        ("webhook-signature", "v1,… (not stored)"),
    ]
    return page(
        request,
        "attempt.html",
        nav=NAV,
        sub=sub,
        attempt=attempt,
        request_headers=request_headers,
        body=await _sent_body(request, attempt),
    )


def _recover_page(
    request: web.Request,
    sub: Subscription,
    *,
    since: str,
    errors: dict[str, str] | None = None,
    recovered: int | None = None,
    status: int = 200,
) -> web.Response:
    return page(
        request,
        "deliveries_recover.html",
        status=status,
        nav=NAV,
        sub=sub,
        since=since,
        errors=errors or {},
        recovered=recovered,
    )


@routes.get("/portal/endpoints/{id}/recover")
async def recover_form(request: web.Request) -> web.Response:
    _, sub = await viewer_and_endpoint(request)
    start = sub.failing_since or sub.created_at
    return _recover_page(request, sub, since=_local_value(start))


@routes.post("/portal/endpoints/{id}/recover")
async def recover(request: web.Request) -> web.Response:
    _, sub = await viewer_and_endpoint(request)
    form = await read_form(request)
    typed = form.get("since", "").strip()
    try:
        # The model's own rules too (the years it takes), as the JSON API applies them.
        body = validate(RecoverIn, {"since": format_time(_local_time(typed))})
    except ValueError as exc:
        return _recover_page(request, sub, since=typed, errors={"since": str(exc)}, status=422)
    except Problem as problem:
        errors = form_errors(problem, ("since",))
        return _recover_page(request, sub, since=typed, errors=errors, status=422)
    count = await ops.recover(request.app, sub, body.since)
    return _recover_page(request, sub, since=typed, recovered=count)


@routes.get("/portal/endpoints/{id}/status")
async def endpoint_status(request: web.Request) -> web.Response:
    _, sub = await viewer_and_endpoint(request)
    status = await ops.status(request.app, sub)
    return page(
        request,
        "endpoint_status.html",
        nav=NAV,
        sub=status.subscription,
        health=status,
        day=DayStatsOut.of(status.last_day),
        window_hours=int(ops.STATS_WINDOW.total_seconds() // 3600),
    )
