"""``syndicate deliveries`` and ``syndicate workers``: what the delivery machinery is doing."""

from __future__ import annotations

import argparse

from storage.records import utcnow
from syndicate.cli.common import open_database
from syndicate.core.names import DELIVERY_STATUSES
from syndicate.core.settings import Settings


async def deliveries(settings: Settings, args: argparse.Namespace) -> int:
    store = await open_database(settings, create=args.create)
    try:
        if args.subscription:
            subs = [await store.get_subscription(args.subscription)]
        else:
            subs = await store.list_subscriptions(limit=1000)
        rows = []
        for sub in subs:
            for d in await store.list_deliveries(sub.id, status=args.status, limit=args.limit):
                rows.append((d, sub))
    finally:
        await store.close()
    rows.sort(key=lambda pair: pair[0].id, reverse=True)
    header = f"{'ID':>8}  {'STATUS':<9} {'TRIES':>5} {'CODE':>4}  {'SUBSCRIPTION':<30} LAST ERROR"
    print(header)
    for d, sub in rows[: args.limit]:
        code = str(d.last_status_code or "-")
        error = (d.last_error or "").replace("\n", " ")[:60]
        print(f"{d.id:>8}  {d.status:<9} {d.attempts:>5} {code:>4}  {sub.id:<30} {error}")
    counts = {s: sum(1 for d, _ in rows if d.status == s) for s in DELIVERY_STATUSES}
    print("  ".join(f"{n} {s}" for s, n in counts.items()))
    return 0


async def workers(settings: Settings, *, create: bool = False) -> int:
    store = await open_database(settings, create=create)
    try:
        now = utcnow()
        found = await store.list_workers(now=now)
    finally:
        await store.close()
    print(f"{'WORKER':<20} {'KIND':<6} {'HOST':<24} {'PID':>7} {'HEARTBEAT':>10} {'HELD':>6}")
    for w in found:
        age = f"{(now - w.heartbeat_at).total_seconds():.1f}s ago"
        stale = (
            " (stale)"
            if (now - w.heartbeat_at).total_seconds() > settings.worker_stale_after
            else ""
        )
        print(
            f"{w.id:<20} {w.kind:<6} {w.hostname[:24]:<24} {w.pid:>7} {age:>10} {w.held:>6}{stale}"
        )
    print(f"{len(found)} process{'es' if len(found) != 1 else ''}")
    return 0
