"""6. Isolation and recovery (issue 18), against ``syndicate serve`` in its own process.

Isolation: a healthy partner (a webhook on 127.0.0.1) gets pushes while another party
attacks; its latency (the article POST's answer -> the push's arrival) is measured
without the attack and under it, in the same run, on the same service:

- ``hosts``: one partner with 100 webhook subscriptions on 100 hosts (127.0.1.1-100,
  made through the API with its own token) that hang past the delivery timeout;
- ``websub``: 5,000 WebSub subscriptions (stored directly: the hub's rate limit would
  take minutes) whose callbacks on 50 hosts (127.0.2.1-50) hang;
- ``retries``: one partner's 1,000 deliveries fail at once with 503 and their retries,
  due together 3 s later, hang.

Recovery: 500 deliveries to a slow partner (50 ms per request); serve is SIGKILLed
mid-fan-out, then restarted (seconds from the restart until all 500 arrived), or a
``syndicate worker`` that was running beside it takes over (seconds from the kill).

Every service uses the default delivery timeout (15 s) and caps; the hanging endpoints
answer after 30 s. Receivers and hanging hosts run in this process; all on 127.0.x.x.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench import _harness as h
from storage import open_storage
from storage.records import utcnow

TARGET_P50_MS = 100.0
TARGET_P99_MS = 2000.0
TARGET_RECOVERY_S = 15.0
#: Hanging endpoints answer after this long: longer than the delivery timeout (15 s).
HANG_SECONDS = 30.0
#: The healthy partner's pushes: this many articles, this far apart, per phase.
ARTICLES = 50
GAP = 0.1
WARMUP = 3
#: How long to wait for the last push of a phase after its last POST.
ARRIVAL_WAIT = 30.0
SECRET = "whsec_" + "A" * 43 + "="
#: Failed attempts wait an hour: the attacks are first attempts (but for ``retries``).
ENV = {"SYNDICATE_ALLOW_PRIVATE_TARGETS": "1", "SYNDICATE_RETRY_SCHEDULE": "1h"}
#: The service's (default) delivery timeout, and articles posted to start an attack.
DELIVERY_TIMEOUT = 15.0
PRIME_ARTICLES = 5
#: ``--verbose``: print each phase's latencies (ms, in posting order).
VERBOSE = {"on": False}
#: Articles per phase (``--quick``: fewer).
PHASE = {"articles": ARTICLES}
RECOVERY_COUNT = 500
RECOVERY_DELAY = 0.05
#: SIGKILL once this many of the 500 have arrived.
KILL_AFTER = 50
RECOVERY_WAIT = 60.0


# -- receivers ------------------------------------------------------------------------


class Healthy:
    """The healthy partner: records when each article's push first arrived
    (``time.monotonic``, this process's clock), and which subscriptions got one."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.first: dict[str, float] = {}
        self.seen: set[str] = set()
        self.requests = 0
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.delay:
            await asyncio.sleep(self.delay)
        now = time.monotonic()
        self.requests += 1
        self.first.setdefault(str(json.loads(body)["data"]["id"]), now)
        self.seen.add(request.query.get("n", ""))
        return web.Response(status=204)

    async def start(self) -> Healthy:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._hook)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, h.HOST, 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    def url(self, path: str) -> str:
        return f"http://{h.HOST}:{self.port}{path}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class Hosts:
    """One aiohttp app listening on many loopback addresses: a host per address. Hangs
    (answers after HANG_SECONDS) or, with ``refuse``, answers 503 at once."""

    def __init__(self, prefix: str, count: int) -> None:
        self.addresses = [f"{prefix}.{n}" for n in range(1, count + 1)]
        self.refuse = False
        self.requests = 0
        self.ports: dict[str, int] = {}
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        await request.read()
        if self.refuse:
            return web.Response(status=503)
        await asyncio.sleep(HANG_SECONDS)
        return web.Response(status=204)

    async def start(self) -> Hosts:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        for address in self.addresses:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, 0))
            self.ports[address] = sock.getsockname()[1]
            await web.SockSite(self._runner, sock, backlog=256).start()
        return self

    def url(self, n: int, path: str) -> str:
        address = self.addresses[n % len(self.addresses)]
        return f"http://{address}:{self.ports[address]}{path}"

    async def close(self) -> None:
        """Drops every hanging connection: serve's attempts then fail at once, and it
        stops without waiting out its delivery timeout."""
        if self._runner is not None:
            await self._runner.cleanup()


# -- phases ---------------------------------------------------------------------------


@dataclass
class Phase:
    latencies_ms: list[float] = field(default_factory=list)
    posted: int = 0
    failed_posts: int = 0
    slowest_post_ms: float = 0.0

    @property
    def p50(self) -> float:
        return h.percentile(self.latencies_ms, 50)

    @property
    def p99(self) -> float:
        return h.percentile(self.latencies_ms, 99)

    @property
    def missing(self) -> int:
        return self.posted + self.failed_posts - len(self.latencies_ms)


async def post_articles(
    http: aiohttp.ClientSession,
    base: str,
    token: str,
    healthy: Healthy,
    prefix: str,
    count: int,
    *,
    gap: float = GAP,
    wait: bool = True,
) -> Phase:
    """POST ``count`` articles ``gap`` apart (one at a time); then wait, bounded, for
    the healthy partner's pushes of them."""
    phase = Phase()
    posted: dict[str, float] = {}
    start = time.monotonic()
    for i in range(count):
        delay = start + i * gap - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        payload = h.article(i, prefix=prefix, size=2000)
        sent = time.monotonic()
        try:
            await h.post_json(http, f"{base}/api/articles", token, payload, expect=(201,))
        except (RuntimeError, aiohttp.ClientError, TimeoutError) as exc:
            print(f"  POST failed: {exc}", flush=True)
            phase.failed_posts += 1
            continue
        posted[payload["id"]] = answered = time.monotonic()
        phase.slowest_post_ms = max(phase.slowest_post_ms, (answered - sent) * 1000)
    phase.posted = len(posted)
    if wait:
        deadline = time.monotonic() + ARRIVAL_WAIT
        while time.monotonic() < deadline and not all(k in healthy.first for k in posted):
            await asyncio.sleep(0.05)
    phase.latencies_ms = [
        (healthy.first[k] - t) * 1000 for k, t in posted.items() if k in healthy.first
    ]
    if VERBOSE["on"]:
        print(f"  {prefix}: " + " ".join(f"{x:.0f}" for x in phase.latencies_ms), flush=True)
    return phase


async def subscribe(
    http: aiohttp.ClientSession, base: str, token: str, url: str, topics: list[str]
) -> None:
    """POST /api/subscriptions, waiting out a 429 (the partner's write rate limit)."""
    for _ in range(100):
        async with http.post(
            f"{base}/api/subscriptions",
            json={"url": url, "topics": topics},
            headers={"Authorization": f"Bearer {token}"},
        ) as r:
            body = await r.read()
            if r.status == 201:
                return
            if r.status != 429:
                raise RuntimeError(f"subscribe {url}: {r.status} {body[:300]!r}")
            await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
    raise RuntimeError(f"subscribe {url}: still limited")


@dataclass
class Result:
    name: str
    baseline: Phase
    attack: Phase
    detail: str

    @property
    def ok(self) -> bool:
        a = self.attack
        return a.p50 <= TARGET_P50_MS and a.p99 <= TARGET_P99_MS and a.missing == 0

    def line(self) -> str:
        b, a = self.baseline, self.attack
        return (
            f"{self.name}: p50 {b.p50:.0f} -> {a.p50:.0f} ms ({ratio(a.p50, b.p50)}), "
            f"p99 {b.p99:.0f} -> {a.p99:.0f} ms ({ratio(a.p99, b.p99)}), "
            f"arrived {len(a.latencies_ms)}/{a.posted + a.failed_posts} (baseline "
            f"{len(b.latencies_ms)}/{b.posted + b.failed_posts}); target p50 <= "
            f"{TARGET_P50_MS:.0f} ms, p99 <= {TARGET_P99_MS:.0f} ms, all arrive: "
            f"{'met' if self.ok else 'MISSED'}; {self.detail}"
        )


Attack = Callable[
    [aiohttp.ClientSession, h.Service, h.Database, dict[str, str]], Awaitable[Callable[[], str]]
]


async def isolation(
    name: str, backend: str, tmp: Path, count: int, attack: Attack, env: dict[str, str]
) -> Result:
    """A fresh database and service; the healthy partner's baseline, then ``attack``
    (which returns a function describing what the attackers got), then the same
    measurement under it."""
    db = await asyncio.to_thread(h.new_database, backend, tmp, f"iso_{name}")
    healthy = await Healthy().start()
    service: h.Service | None = None
    try:
        tokens = {
            role_name: await asyncio.to_thread(h.create_token, db.url, role, role_name)
            for role, role_name in [
                ("operator", "ops"),
                ("partner", "healthy"),
                ("partner", "attacker"),
            ]
        }
        service = await asyncio.to_thread(h.Service(db.url, env=env).start, tmp)
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            await subscribe(http, service.base, tokens["healthy"], healthy.url("/healthy"), ["*"])
            await post_articles(http, service.base, tokens["ops"], healthy, f"{name}-w", WARMUP)
            baseline = await post_articles(
                http, service.base, tokens["ops"], healthy, f"{name}-b", count
            )
            print(f"  {name} baseline: p50 {baseline.p50:.0f} ms p99 {baseline.p99:.0f} ms")
            describe = await attack(http, service, db, tokens)
            under = await post_articles(
                http, service.base, tokens["ops"], healthy, f"{name}-a", count
            )
            detail = describe()
        result = Result(name, baseline, under, detail)
        print(result.line(), flush=True)
        return result
    finally:
        await healthy.close()
        for closer in CLOSERS:
            await closer()
        CLOSERS.clear()
        if service is not None:
            await asyncio.to_thread(service.stop)
        await asyncio.to_thread(db.drop)


#: Attackers' servers, closed (connections dropped) before serve is stopped.
CLOSERS: list[Callable[[], Awaitable[None]]] = []


async def prime(http: aiohttp.ClientSession, service: h.Service, tokens: dict[str, str]) -> None:
    """Start the attack before the measurement: PRIME_ARTICLES articles, then wait until
    the first hanging attempts are about to time out, so that their timeouts (and what
    the dispatcher does then: record, hand back, claim more) fall mid-measurement."""
    started = time.monotonic()
    for i in range(PRIME_ARTICLES):
        payload = h.article(i, prefix="prime", size=2000)
        await h.post_json(http, f"{service.base}/api/articles", tokens["ops"], payload)
    window = PHASE["articles"] * GAP
    await asyncio.sleep(max(0.0, started + DELIVERY_TIMEOUT - window / 2 - time.monotonic()))


async def hanging_hosts(
    http: aiohttp.ClientSession, service: h.Service, db: h.Database, tokens: dict[str, str]
) -> Callable[[], str]:
    hosts = await Hosts("127.0.1", 100).start()
    CLOSERS.append(hosts.close)
    for n in range(100):
        await subscribe(http, service.base, tokens["attacker"], hosts.url(n, f"/hook/{n}"), ["*"])
    await prime(http, service, tokens)
    return lambda: f"{hosts.requests} requests reached the hanging hosts"


async def hanging_websub(
    http: aiohttp.ClientSession, service: h.Service, db: h.Database, tokens: dict[str, str]
) -> Callable[[], str]:
    hosts = await Hosts("127.0.2", 50).start()
    CLOSERS.append(hosts.close)
    started = time.monotonic()
    store = await open_storage(db.url)
    try:
        expires = utcnow() + timedelta(days=1)
        topic_url = f"{service.base}/feeds/liver-health.atom"
        for n in range(5000):
            await store.create_subscription(
                id=f"ws_{n:05d}",
                kind="websub",
                url=hosts.url(n, f"/cb/{n}"),
                topics=["liver-health"],
                events=[],
                secret=None,
                lease_expires_at=expires,
                topic_url=topic_url,
            )
    finally:
        await store.close()
    print(f"  5,000 WebSub subscriptions stored in {time.monotonic() - started:.1f}s", flush=True)
    await prime(http, service, tokens)
    return lambda: f"{hosts.requests} notifications reached the hanging callbacks"


async def retry_storm(
    http: aiohttp.ClientSession, service: h.Service, db: h.Database, tokens: dict[str, str]
) -> Callable[[], str]:
    hosts = await Hosts("127.0.3", 20).start()
    CLOSERS.append(hosts.close)
    hosts.refuse = True
    for n in range(100):
        await subscribe(http, service.base, tokens["attacker"], hosts.url(n, f"/hook/{n}"), ["*"])
    # 10 articles x 100 subscriptions: 1,000 first attempts answered 503.
    for i in range(10):
        payload = h.article(i, prefix="storm", size=2000)
        await h.post_json(http, f"{service.base}/api/articles", tokens["ops"], payload)
    deadline = time.monotonic() + 30
    while hosts.requests < 1000 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    failed = hosts.requests
    hosts.refuse = False  # the retries, due 2.4-3.6 s after their failures, hang
    print(f"  {failed} attempts answered 503; their retries will hang", flush=True)

    def describe() -> str:
        retried = hosts.requests - failed
        return f"{failed} attempts failed, then {retried} retries reached the hanging hosts"

    return describe


# -- recovery -------------------------------------------------------------------------


@dataclass
class Recovery:
    name: str
    before: int
    seconds: float
    arrived: int
    duplicates: int
    ready_s: float = float("nan")

    @property
    def ok(self) -> bool:
        return self.arrived == RECOVERY_COUNT and self.seconds <= TARGET_RECOVERY_S


def start_worker(db: str, tmp: Path) -> subprocess.Popen[bytes]:
    log = tmp / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [h.SYNDICATE, "worker", "--database", db],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=h.bench_env(**ENV),
            start_new_session=True,
        )
    deadline = time.monotonic() + 30
    while b"worker ready" not in log.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"worker did not start: {log.read_text()[-2000:]}")
        time.sleep(0.1)
    return proc


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


async def recovery(backend: str, tmp: Path, *, with_worker: bool) -> Recovery:
    name = "worker" if with_worker else "restart"
    db = await asyncio.to_thread(h.new_database, backend, tmp, f"rec_{name}")
    slow = await Healthy(delay=RECOVERY_DELAY).start()
    worker: subprocess.Popen[bytes] | None = None
    services: list[h.Service] = []
    try:
        token = await asyncio.to_thread(h.create_token, db.url)
        store = await open_storage(db.url)
        try:
            for n in range(RECOVERY_COUNT):
                await store.create_subscription(
                    id=f"sub_{n:04d}",
                    kind="webhook",
                    url=slow.url(f"/hook?n={n}"),
                    topics=["*"],
                    events=[],
                    secret=SECRET,
                    owner="partner",
                )
        finally:
            await store.close()
        if with_worker:
            worker = await asyncio.to_thread(start_worker, db.url, tmp)
        service = await asyncio.to_thread(h.Service(db.url, env=ENV).start, tmp)
        services.append(service)
        async with aiohttp.ClientSession() as http:
            await h.post_json(
                http, f"{service.base}/api/articles", token, h.article(0, prefix="rec")
            )
        deadline = time.monotonic() + 30
        while len(slow.seen) < KILL_AFTER and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        assert service.proc is not None
        service.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(service.proc.wait, 10)
        killed = time.monotonic()
        before = len(slow.seen)
        ready = float("nan")
        if not with_worker:
            restarted = await asyncio.to_thread(h.Service(db.url, env=ENV).start, tmp)
            services.append(restarted)
            ready = time.monotonic() - killed
        deadline = killed + RECOVERY_WAIT
        while len(slow.seen) < RECOVERY_COUNT and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        seconds = time.monotonic() - killed
        result = Recovery(
            name,
            before=before,
            seconds=seconds,
            arrived=len(slow.seen),
            duplicates=slow.requests - len(slow.seen),
            ready_s=ready,
        )
        print(
            f"recovery ({name}): {before} of {RECOVERY_COUNT} arrived before the SIGKILL; all "
            f"{result.arrived} {seconds:.1f}s after it"
            + ("" if with_worker else f" (the restarted serve answered after {ready:.1f}s)")
            + f"; {result.duplicates} duplicates; target <= {TARGET_RECOVERY_S:.0f}s: "
            + ("met" if result.ok else "MISSED"),
            flush=True,
        )
        return result
    finally:
        await slow.close()
        for service in services:
            await asyncio.to_thread(service.stop)
        if worker is not None:
            await asyncio.to_thread(stop_worker, worker)
        await asyncio.to_thread(db.drop)


# -- main -----------------------------------------------------------------------------

SCENARIOS: dict[str, tuple[str, Attack, dict[str, str]]] = {
    "hosts": ("1 partner, 100 hanging hosts", hanging_hosts, ENV),
    "websub": ("5,000 hanging WebSub callbacks", hanging_websub, ENV),
    "retries": (
        "1,000 retries due at once (then hanging)",
        retry_storm,
        {**ENV, "SYNDICATE_RETRY_SCHEDULE": "3s,1h"},
    ),
}


def ratio(a: float, b: float) -> str:
    return "n/a" if not b or a != a or b != b else f"{a / b:.1f}x"


def ms(value: float) -> str:
    return "n/a" if value != value else f"{value:,.0f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--quick", action="store_true", help="20 articles per phase")
    parser.add_argument(
        "--only", choices=[*SCENARIOS, "restart", "worker"], action="append", default=None
    )
    parser.add_argument("--verbose", action="store_true", help="print every latency")
    args = parser.parse_args(argv)
    VERBOSE["on"] = args.verbose
    label = "SQLite" if args.backend == "sqlite" else "PostgreSQL"
    title = f"6. Isolation (issue 18, {label})"
    if args.backend == "postgres" and not h.pg_available():
        h.skip(title, f"PostgreSQL not reachable at {h.PG_ADMIN}")
        return
    count = PHASE["articles"] = 20 if args.quick else ARTICLES
    chosen = args.only or [*SCENARIOS, "restart", "worker"]
    results: list[Result] = []
    recoveries: list[Recovery] = []
    started = time.monotonic()
    with h.scratch_dir() as tmp:
        for key in chosen:
            print(f"--- {key}", flush=True)
            if key in SCENARIOS:
                _, attack, env = SCENARIOS[key]
                results.append(asyncio.run(isolation(key, args.backend, tmp, count, attack, env)))
            else:
                recoveries.append(
                    asyncio.run(recovery(args.backend, tmp, with_worker=key == "worker"))
                )
    print(f"total {time.monotonic() - started:.0f}s", flush=True)
    rows: list[list[Any]] = []
    for r in results:
        b, a = r.baseline, r.attack
        rows.append(
            [
                SCENARIOS[r.name][0],
                f"{ms(b.p50)} / {ms(b.p99)}",
                f"{ms(a.p50)} / {ms(a.p99)}",
                f"{ratio(a.p50, b.p50)} / {ratio(a.p99, b.p99)}",
                f"{len(a.latencies_ms)}/{a.posted + a.failed_posts}",
                f"p50 <= {TARGET_P50_MS:.0f}, p99 <= {TARGET_P99_MS:.0f}, all",
                "met" if r.ok else "MISSED",
            ]
        )
    for rec in recoveries:
        what = (
            "SIGKILL mid-fan-out of 500, restart"
            if rec.name == "restart"
            else "SIGKILL mid-fan-out of 500, live worker"
        )
        rows.append(
            [
                what,
                f"{rec.before} arrived before the kill",
                f"all in {rec.seconds:.1f} s",
                "",
                f"{rec.arrived}/{RECOVERY_COUNT}",
                f"<= {TARGET_RECOVERY_S:.0f} s",
                "met" if rec.ok else "MISSED",
            ]
        )
    notes = [r.detail for r in results] + [
        f"{rec.name}: {rec.duplicates} duplicate requests (in flight at the kill)"
        + (
            ""
            if rec.ready_s != rec.ready_s
            else f"; the restart answered after {rec.ready_s:.1f} s"
        )
        for rec in recoveries
    ]
    quick = " --quick" if args.quick else ""
    h.report(
        title,
        f"python -m bench.isolation --backend {args.backend}{quick}",
        [
            "",
            "baseline p50 / p99 ms",
            "attack p50 / p99 ms",
            "ratio",
            "arrived",
            "target",
            "result",
        ],
        rows,
        [
            f"Healthy partner: {count} articles {GAP * 1000:.0f} ms apart per phase, "
            "latency from the POST's answer to the push's arrival; baseline and attack on "
            "the same service, one after the other.",
            *notes,
        ],
        rounds=1,
    )


if __name__ == "__main__":
    main()
