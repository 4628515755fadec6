"""8. Fan-out at scale (issue 23): one article to many webhook subscriptions spread over
many receiver hosts, then one article to many WebSub subscribers of one topic.

Measured against Little's law, not a baseline process: every receiver host answers
after LATENCY (50 ms), so at most ``slots`` deliveries are in flight and the best rate
is ``slots / LATENCY``, where ``slots`` = min(the kind's share of max_in_flight, hosts x
max_per_host, owners x max_per_owner). Also measured: the time from the article's POST
to all its deliveries being in the database (the fan-out), duplicates at the receivers,
and serve's peak RSS (VmHWM).

The receivers are one process (bench/receiver.py --hosts N) listening on N loopback
addresses 127.0.x.y. The subscriptions are written straight into the table (set-based
copies of one made through the API) with the service stopped; what is measured is the
service restarted on that database."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import functools
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench import _harness as h
from bench.receiver import host_address
from storage.postgres import PostgresStorage
from storage.sqlite import SQLiteStorage
from syndicate.delivery.fanout import WEBSUB_STEP_DIVISOR

TITLE = "8. Fan-out at scale"
TARGET_CREATE_SECONDS = 2.0
TARGET_BOUND = 0.8
TARGET_RSS_MB = 300.0
TARGET_WEBSUB = 0.8
#: Every receiver host answers after this long.
LATENCY = 0.05
BASE_URL = "http://bench.example"
WEBHOOK_TOPIC = "liver-health"
WEBSUB_TOPIC = "fanscale-websub"
#: (webhook subscriptions, receiver hosts, WebSub subscriptions) per --scale.
SCALES = {
    "small": (1_000, 10, 100),
    "default": (10_000, 100, 1_000),
    "large": (100_000, 1_000, 10_000),
}
#: The service's caps: its defaults, written out so that the bound below uses the
#: same numbers the service runs with.
MAX_IN_FLIGHT = 256
MAX_PER_HOST = 8
MAX_PER_OWNER = 32
WEBHOOK_SHARE = 0.5
WEBSUB_SHARE = 0.25
SERVICE_ENV = {
    "SYNDICATE_ALLOW_PRIVATE_TARGETS": "1",
    "SYNDICATE_BASE_URL": BASE_URL,
    "SYNDICATE_MAX_IN_FLIGHT": str(MAX_IN_FLIGHT),
    "SYNDICATE_MAX_PER_HOST": str(MAX_PER_HOST),
    "SYNDICATE_MAX_PER_OWNER": str(MAX_PER_OWNER),
    "SYNDICATE_WEBHOOK_SHARE": str(WEBHOOK_SHARE),
    "SYNDICATE_WEBSUB_SHARE": str(WEBSUB_SHARE),
}


def slots(kind: str, hosts: int) -> int:
    """Deliveries of ``kind`` the service may have in flight at once: its share of
    max_in_flight (all but what the other kind keeps, as the dispatcher computes it),
    and each host's cap; each host is one owner (operator-made webhooks are shared out
    by target host, WebSub by callback host), whose cap is the larger."""
    kept = WEBSUB_SHARE if kind == "webhook" else WEBHOOK_SHARE
    share = MAX_IN_FLIGHT - int(MAX_IN_FLIGHT * kept)
    return min(share, hosts * MAX_PER_HOST, hosts * MAX_PER_OWNER)


def rounds_of(count: int, in_flight: int) -> int:
    return -(-count // in_flight)


def best_rate(count: int, in_flight: int) -> float:
    """The best rate for ``count`` deliveries in rounds of ``in_flight``."""
    return count / (rounds_of(count, in_flight) * LATENCY)


# -- setup: subscriptions copied from one made through the API ---------------------------


def address_sql(hosts: int) -> str:
    """SQL for ``receiver.host_address(k % hosts)`` over the row number ``k``."""
    i = f"(k % {hosts})"
    return f"'127.0.' || (1 + {i} / 250) || '.' || (1 + {i} % 250)"


def copy_columns(
    backend: str, kind: str, hosts: int, port: int, lease: dt.datetime
) -> dict[str, str]:
    """The columns that differ from the template row, as SQL over ``k``."""
    address = address_sql(hosts)
    if kind == "webhook":
        return {
            "id": "'bench-wh-' || k",
            "url": f"'http://' || {address} || ':{port}/hook/' || k",
            "owner_key": f"'host:' || {address}",
        }
    pg = backend == "postgres"
    stamp = f"'{lease.isoformat()}'::timestamptz" if pg else f"'{lease:%Y-%m-%dT%H:%M:%S.%fZ}'"
    jsonb = "::jsonb" if pg else ""
    return {
        "id": "'bench-ws-' || k",
        "kind": "'websub'",
        "url": f"'http://' || {address} || ':{port}/ws/' || k",
        "owner_key": f"'callback:' || {address}",
        "topics": f"'[\"{WEBSUB_TOPIC}\"]'{jsonb}",
        "events": f"'[]'{jsonb}",
        "secret": "NULL",
        "lease_expires_at": stamp,
        "topic_url": f"'{BASE_URL}/feeds/{WEBSUB_TOPIC}.rss'",
    }


def copy_sql(backend: str, columns: list[str], changed: dict[str, str]) -> str:
    """One INSERT ... SELECT of rows k = $first..$last from the template row."""
    names = ", ".join(columns)
    values = ", ".join(changed.get(c, f"t.{c}") for c in columns)
    if backend == "postgres":
        return (
            f"INSERT INTO subscriptions ({names}) SELECT {values} FROM subscriptions AS t, "
            "generate_series($1::int, $2::int) AS g (k) WHERE t.id = $3"
        )
    return (
        "WITH RECURSIVE g (k) AS (SELECT ? UNION ALL SELECT k + 1 FROM g WHERE k < ?) "
        f"INSERT INTO subscriptions ({names}) SELECT {values} FROM subscriptions AS t, g "
        "WHERE t.id = ?"
    )


def copy_subscriptions(
    db: h.Database, template: str, webhooks: int, websubs: int, hosts: int, port: int
) -> float:
    """Rows bench-wh-1.. (the template is webhook 0) and bench-ws-0..; seconds taken."""
    started = time.perf_counter()
    lease = dt.datetime.now(dt.UTC) + dt.timedelta(days=10)
    jobs = [("webhook", 1, webhooks - 1), ("websub", 0, websubs - 1)]
    if db.kind == "sqlite":
        conn = sqlite3.connect(db.url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            columns = [
                d[0] for d in conn.execute("SELECT * FROM subscriptions LIMIT 0").description
            ]
            for kind, first, last in jobs:
                changed = copy_columns("sqlite", kind, hosts, port, lease)
                if last >= first:
                    conn.execute(copy_sql("sqlite", columns, changed), (first, last, template))
        finally:
            conn.close()
    else:
        import asyncpg

        async def run() -> None:
            conn = await asyncpg.connect(db.url)
            try:
                stmt = await conn.prepare("SELECT * FROM subscriptions LIMIT 0")
                columns = [a.name for a in stmt.get_attributes()]
                for kind, first, last in jobs:
                    changed = copy_columns("postgres", kind, hosts, port, lease)
                    if last >= first:
                        await conn.execute(
                            copy_sql("postgres", columns, changed), first, last, template
                        )
                await conn.execute("ANALYZE subscriptions")
            finally:
                await conn.close()

        asyncio.run(run())
    return time.perf_counter() - started


async def make_template(base: str, token: str, port: int) -> str:
    async with aiohttp.ClientSession() as session:
        created = await h.post_json(
            session,
            f"{base}/api/subscriptions",
            token,
            {"url": f"http://{host_address(0)}:{port}/hook/0", "topics": [WEBHOOK_TOPIC]},
            expect=(201,),
        )
    return str(created["id"])


# -- measurement -----------------------------------------------------------------------


class Counter:
    """Deliveries of a kind in the database, read from outside the service."""

    def __init__(self, db: h.Database) -> None:
        self.db = db
        self._sqlite: sqlite3.Connection | None = None
        self._pg: Any = None

    async def __aenter__(self) -> Counter:
        if self.db.kind == "sqlite":
            self._sqlite = sqlite3.connect(self.db.url.removeprefix("sqlite:///"))
        else:
            import asyncpg

            self._pg = await asyncpg.connect(self.db.url)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
        if self._pg is not None:
            await self._pg.close()

    async def setting(self, name: str) -> str:
        return str(await self._pg.fetchval(f"SHOW {name}"))

    async def count(self, kind: str) -> int:
        sql = "SELECT count(*) FROM deliveries WHERE kind = "
        if self._sqlite is not None:
            return int(self._sqlite.execute(sql + "?", (kind,)).fetchone()[0])
        return int(await self._pg.fetchval(sql + "$1", kind))


async def autovacuum(db: h.Database) -> str:
    async with Counter(db) as counter:
        return await counter.setting("autovacuum")


async def receiver_get(port: int, path: str, method: str = "GET") -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, f"http://{h.HOST}:{port}{path}") as r:
            r.raise_for_status()
            return dict(await r.json()) if r.status == 200 else {}


@dataclass
class Phase:
    kind: str
    expected: int
    #: Seconds from the POST to the last of its deliveries in the database (nan: never).
    created: float
    arrived: int
    duplicates: int
    #: Deliveries/s at the receivers, first arrival to last answer.
    rate: float
    post_to_last: float
    #: CPU seconds used from the POST to the last arrival by serve and by the receiver.
    serve_cpu: float
    receiver_cpu: float
    #: Requests the receivers held at once: the most, and the mean seen by an arrival.
    peak_inflight: int
    mean_inflight: float


async def run_phase(
    service: h.Service,
    token: str,
    receiver: h.Helper,
    db: h.Database,
    kind: str,
    expected: int,
    bound: float,
) -> Phase:
    base, port = service.base, receiver.port
    # Only this kind's arrivals: webhooks of an earlier phase may still be arriving.
    query = f"/stats?segment={'hook' if kind == 'webhook' else 'ws'}"
    assert receiver.proc is not None
    serve_pids, receiver_pids = service.pids(), [receiver.proc.pid]
    await receiver_get(port, "/reset", "POST")
    topic = WEBHOOK_TOPIC if kind == "webhook" else WEBSUB_TOPIC
    async with Counter(db) as counter, aiohttp.ClientSession() as session:
        before = await counter.count(kind)
        cpu = cpu_seconds(serve_pids), cpu_seconds(receiver_pids)
        started, clock = time.time(), time.monotonic()
        await h.post_json(
            session, f"{base}/api/articles", token, h.article(1, prefix=kind, topic=topic)
        )
        created = float("nan")
        while time.monotonic() - clock < 120:
            if await counter.count(kind) - before >= expected:
                created = time.monotonic() - clock
                break
            await asyncio.sleep(0.01)
    # Ten times the bound's duration, and a minute: past that, the figure is a failure.
    deadline = clock + min(900.0, 60.0 + 10 * expected / bound)
    stats = await receiver_get(port, query)
    while stats["count"] < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        stats = await receiver_get(port, query)
    serve_cpu = cpu_seconds(serve_pids) - cpu[0]
    receiver_cpu = cpu_seconds(receiver_pids) - cpu[1]
    await asyncio.sleep(1.0)  # a duplicate may come after the last first delivery
    stats = await receiver_get(port, query + "&timeline=1")
    if os.environ.get("BENCH_TIMELINE"):
        print(f"{kind} arrivals per 100 ms: {stats.get('timeline')}", flush=True)
    count, first, last = stats["count"], stats["first"], stats["last"]
    if count < expected:
        print(f"{kind}: only {count:,} of {expected:,} arrived", flush=True)
    # From the first request in to the last answer out: on a small run (a few rounds of
    # the slots) first-to-last arrival alone would miss one latency and beat the bound.
    rate = count / (last + LATENCY - first) if count else float("nan")
    return Phase(
        kind=kind,
        expected=expected,
        created=created,
        arrived=min(count, stats["distinct"]),
        duplicates=count - stats["distinct"],
        rate=rate,
        post_to_last=(last - started) if last else float("nan"),
        serve_cpu=serve_cpu,
        receiver_cpu=receiver_cpu,
        peak_inflight=int(stats["peak_inflight"]),
        mean_inflight=float(stats["mean_inflight"]),
    )


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of the processes so far (/proc/<pid>/stat)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


@contextlib.contextmanager
def subscribed(
    backend: str, tmp: Path, name: str, sizes: tuple[int, int, int]
) -> Iterator[tuple[h.Database, str, h.Helper, float]]:
    """The receiver process for ``hosts`` hosts, and a new database holding ``webhooks``
    and ``websubs`` subscriptions on them (copied in SQL from one made through the API,
    with the service stopped): (database, operator token, receiver, seconds the copy
    took). Both are stopped and dropped after."""
    webhooks, hosts, websubs = sizes
    receiver = h.Helper("bench.receiver", ["--hosts", str(hosts), "--delay", str(LATENCY)])
    db = h.new_database(backend, tmp, name)
    try:
        receiver.start(tmp)
        token = h.create_token(db.url)
        with h.Service(db.url, env=SERVICE_ENV).start(tmp) as service:
            template = asyncio.run(make_template(service.base, token, receiver.port))
        setup = copy_subscriptions(db, template, webhooks, websubs, hosts, receiver.port)
        yield db, token, receiver, setup
    finally:
        receiver.stop()
        db.drop()


def peak_rss_mb(pids: list[int]) -> float:
    """VmHWM (the peak resident set) summed over the service's processes."""
    return status_mb(pids, "VmHWM")


def status_mb(pids: list[int], field: str) -> float:
    """A /proc/<pid>/status memory field (kB) summed over the processes, in MB."""
    total = 0.0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            pass
    return total


def report(
    args: argparse.Namespace,
    title: str,
    webhooks: int,
    hosts: int,
    websubs: int,
    bound: dict[str, float],
    hook: Phase,
    sub: Phase,
    rss: tuple[float, float, float],
    extra: list[str],
) -> None:
    idle, hook_rss, peak = rss
    pairs = (PostgresStorage if args.backend == "postgres" else SQLiteStorage).fan_out_step
    step = {"webhook": pairs, "websub": pairs // WEBSUB_STEP_DIVISOR}
    hook_ratio = hook.rate / bound["webhook"]
    sub_ratio = sub.rate / hook.rate
    complete = hook.arrived >= webhooks and sub.arrived >= websubs
    h.report(
        title,
        f"python -m bench.fanout_scale --backend {args.backend} --scale {args.scale}",
        ["measure", "ours", "against", "ratio", "target", "result"],
        [
            [
                f"POST -> {webhooks:,} webhook deliveries created (s)",
                hook.created,
                "",
                "",
                f"<= {TARGET_CREATE_SECONDS:.0f} s",
                h.verdict(hook.created, TARGET_CREATE_SECONDS, at_most=True),
            ],
            [
                "webhook deliveries/s",
                hook.rate,
                f"bound {bound['webhook']:,.0f}/s",
                f"{hook_ratio:.2f}x",
                f">= {TARGET_BOUND}x",
                h.verdict(hook_ratio, TARGET_BOUND) if complete else "MISSED (lost)",
            ],
            [f"POST -> {websubs:,} WebSub deliveries created (s)", sub.created, *[""] * 4],
            [
                "WebSub deliveries/s",
                sub.rate,
                f"webhooks {hook.rate:,.0f}/s",
                f"{sub_ratio:.2f}x",
                f">= {TARGET_WEBSUB}x",
                h.verdict(sub_ratio, TARGET_WEBSUB) if complete else "MISSED (lost)",
            ],
            [
                "serve peak RSS (MB)",
                peak,
                f"idle {idle:.0f} MB",
                "",
                f"<= {TARGET_RSS_MB:.0f} MB",
                h.verdict(peak, TARGET_RSS_MB, at_most=True),
            ],
        ],
        [
            f"{webhooks:,} webhook subscriptions (topic {WEBHOOK_TOPIC}, made by the operator, "
            f"so each host is its own owner) on {hosts:,} receiver hosts 127.0.x.y, "
            f"{websubs:,} WebSub subscriptions of {BASE_URL}/feeds/{WEBSUB_TOPIC}.rss on the "
            f"same hosts; every host answers 204 after {LATENCY * 1000:.0f} ms (one "
            "receiver process). One article per kind, one after the other.",
            f"Bound (Little's law): webhooks min({MAX_IN_FLIGHT} - {WEBSUB_SHARE:g} x "
            f"{MAX_IN_FLIGHT} kept for WebSub, {hosts:,} hosts x max_per_host "
            f"{MAX_PER_HOST}, owners x max_per_owner {MAX_PER_OWNER}) = "
            f"{slots('webhook', hosts)} in flight / {LATENCY:g} s = "
            f"{bound['webhook']:,.0f}/s. WebSub's own bound is {bound['websub']:,.0f}/s "
            f"({slots('websub', hosts)} in flight: {MAX_IN_FLIGHT} less the "
            f"{WEBHOOK_SHARE:g} kept for webhooks, or the hosts' caps): "
            f"{sub.rate / bound['websub']:.2f}x of it; in whole rounds of its slots "
            f"{websubs:,} take at least {rounds_of(websubs, slots('websub', hosts))} x "
            f"{LATENCY * 1000:.0f} ms, at most {best_rate(websubs, slots('websub', hosts)):,.0f}"
            "/s (a small run is mostly its last round). The caps are the defaults.",
            f"Rate = arrivals / (last arrival + {LATENCY * 1000:.0f} ms - first arrival) at "
            "the receiver (first request in to last answer out). POST -> last "
            f"arrival: webhooks {hook.post_to_last:.1f} s, WebSub {sub.post_to_last:.1f} s. "
            f"Arrived: {hook.arrived:,}/{webhooks:,} and {sub.arrived:,}/{websubs:,}; "
            f"duplicates (same webhook-id and path twice): {hook.duplicates + sub.duplicates}.",
            "Created = the deliveries table holds one row per subscription for the article "
            "(polled every 10 ms from outside). The database matches and writes them "
            "(fan_out_events: one statement joins the event to the subscriptions) in "
            f"steps of {step['webhook']:,} subscriptions (webhooks) and {step['websub']:,} "
            "(WebSub), each one statement and transaction: "
            f"{-(-webhooks // step['webhook'])} for the webhooks, "
            f"{-(-websubs // step['websub'])} for WebSub.",
            f"In flight at the receivers (of {slots('webhook', hosts)} slots): webhooks "
            f"peak {hook.peak_inflight}, mean {hook.mean_inflight:.0f} as seen by an "
            f"arrival; WebSub peak {sub.peak_inflight} (of {slots('websub', hosts)}), mean "
            f"{sub.mean_inflight:.0f}.",
            f"CPU from the POST to the last arrival, per delivery: serve "
            f"{hook.serve_cpu / webhooks * 1e6:,.0f} µs (webhooks; "
            f"{hook.serve_cpu / (hook.post_to_last or 1):.0%} of a core), "
            f"{sub.serve_cpu / websubs * 1e6:,.0f} µs (WebSub); the receiver "
            f"{hook.receiver_cpu / webhooks * 1e6:,.0f} µs "
            f"({hook.receiver_cpu / (hook.post_to_last or 1):.0%} of a core). "
            f"The machine has {h.cores()} cores for serve, the receiver and the database.",
            f"RSS: VmHWM of serve; {idle:.0f} MB after start, {hook_rss:.0f} MB after the "
            f"webhooks, {peak:.0f} MB after WebSub.",
            *extra,
        ],
        rounds=1,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument(
        "--scale",
        choices=sorted(SCALES),
        default="large" if os.environ.get("BENCH_SCALE") == "1" else "default",
        help="small 1k webhooks / 10 hosts / 100 WebSub; default 10k / 100 / 1k; "
        "large (BENCH_SCALE=1) 100k / 1,000 / 10k",
    )
    args = parser.parse_args(argv)
    name = "SQLite" if args.backend == "sqlite" else "PostgreSQL"
    webhooks, hosts, websubs = SCALES[args.scale]
    title = f"{TITLE} ({name}, {webhooks:,} webhooks on {hosts:,} hosts)"
    if args.backend == "postgres" and not h.pg_available():
        h.skip(title, f"PostgreSQL not reachable at {h.PG_ADMIN}")
        return
    bound = {kind: slots(kind, hosts) / LATENCY for kind in ("webhook", "websub")}
    with (
        h.scratch_dir() as tmp,
        subscribed(args.backend, tmp, "fanscale", SCALES[args.scale]) as (
            db,
            token,
            receiver,
            setup,
        ),
    ):
        print(f"{webhooks:,} + {websubs:,} subscriptions written in {setup:.1f}s", flush=True)
        extra = [
            "Setup (not measured): the subscriptions copied in SQL from one made through "
            f"the API, {setup:.1f} s."
        ]
        if db.kind == "postgres":
            # The claim's plan depends on the deliveries' statistics (BENCHMARKS.md).
            extra.append(f"PostgreSQL autovacuum: {asyncio.run(autovacuum(db))}.")
        with h.Service(db.url, env=SERVICE_ENV).start(tmp) as service:
            idle = peak_rss_mb(service.pids())
            phase = functools.partial(run_phase, service, token, receiver, db)
            hook = asyncio.run(phase("webhook", webhooks, bound["webhook"]))
            hook_rss = peak_rss_mb(service.pids())
            print(f"webhooks: {hook}, peak RSS {hook_rss:.0f} MB", flush=True)
            sub = asyncio.run(phase("websub", websubs, bound["websub"]))
            peak = peak_rss_mb(service.pids())
            print(f"websub: {sub}, peak RSS {peak:.0f} MB", flush=True)
    report(args, title, webhooks, hosts, websubs, bound, hook, sub, (idle, hook_rss, peak), extra)


if __name__ == "__main__":
    main()
