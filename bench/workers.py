"""9. More workers (issue 23): 1, 2 and 4 ``syndicate worker`` processes on one
PostgreSQL database, delivering to receivers that answer after 200 ms; deliveries/s
with 2 and 4 against 1 in the same run, and no delivery sent twice.

The run is latency-bound by construction: each worker may have MAX_IN_FLIGHT requests
in flight (``SYNDICATE_MAX_IN_FLIGHT``: 32 by default here, all of them for webhooks:
``SYNDICATE_WEBSUB_SHARE=0``), the subscriptions are spread over enough owners and
hosts that the per-owner and per-host caps are not what binds, so one worker's bound
is 32 / 0.2 s = 160/s (Little's law) and N workers' N times that, while the CPU
that N x the bound costs stays well under the machine's 2 cores.

No ``syndicate serve`` runs: it would claim deliveries too (every serve process runs a
dispatcher, and no setting turns it off), so the articles are written by this process
through the storage's own batch ingest (``store_batch``, what ``POST
/api/articles/batch`` calls), with the event renderer serve sets; the workers fan
them out and deliver them. The receiver (bench/receiver.py) is one process listening
on 16 loopback addresses (a host each, for the service's per-host caps); it counts
each (webhook-id, path) pair once, so the arrivals beyond the distinct pairs are
deliveries sent twice.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench import _harness as h
from bench.receiver import host_address
from storage import Storage, open_storage
from syndicate.content.ingest import store_batch
from syndicate.core.names import SITE_BASE_URL
from syndicate.delivery.webhooks import body_renderer

TITLE = "9. More workers (issue 23, PostgreSQL)"
#: Throughput with 2 and with 4 workers, over 1 (same run).
TARGETS = {2: 1.8, 4: 3.0}
COUNTS = (1, 2, 4)
#: Seconds each receiver host takes to answer.
DELAY = 0.2
SECRET = "whsec_" + "A" * 43 + "="


@dataclass(frozen=True)
class Scale:
    subscriptions: int
    articles: int
    max_in_flight: int
    hosts: int = 16
    owners: int = 8

    @property
    def deliveries(self) -> int:
        return self.subscriptions * self.articles

    def bound(self, workers: int) -> float:
        """Little's law: requests in flight / seconds each takes."""
        return workers * self.max_in_flight / DELAY


#: Default (make bench): 3,200 deliveries, ~20 s with one worker. BENCH_SCALE=1: ten
#: times the subscriptions, hosts and partners, and ten times the deliveries (32,000,
#: ~200 s with one worker). --quick: a look in under half a minute, too short for a figure (the
#: fan-out's 1 s poll is a large part of it).
SCALES = {
    "default": Scale(subscriptions=800, articles=4, max_in_flight=32),
    "large": Scale(subscriptions=8000, articles=4, max_in_flight=32, hosts=160, owners=80),
    "quick": Scale(subscriptions=200, articles=2, max_in_flight=32),
}


def worker_env(scale: Scale) -> dict[str, str]:
    # Per-owner (32) and per-host (8) caps stay at their defaults: owners x 32 and
    # hosts x 8 are each at least the per-worker cap, so that cap is what binds.
    if scale.owners * 32 < scale.max_in_flight or scale.hosts * 8 < scale.max_in_flight:
        raise SystemExit(f"{scale}: the per-owner or per-host caps would bind, not the global")
    return {
        "SYNDICATE_ALLOW_PRIVATE_TARGETS": "1",
        "SYNDICATE_MAX_IN_FLIGHT": str(scale.max_in_flight),
        "SYNDICATE_WEBSUB_SHARE": "0",
    }


# -- processes ------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In each worker (before exec): SIGTERM when this process dies, however it dies (a
    SIGKILL from run_all's time limit too). The workers run in sessions of their own,
    so nothing else would reach them."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def start_workers(
    db: str, tmp: Path, count: int, env: dict[str, str]
) -> list[subprocess.Popen[bytes]]:
    """``count`` workers, started together; returns once each has said it is ready."""
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    try:
        for n in range(count):
            log = tmp / f"worker-{count}-{n}.log"
            logs.append(log)
            with open(log, "wb") as out:
                procs.append(
                    subprocess.Popen(
                        [h.SYNDICATE, "worker", "--database", db],
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        env=h.bench_env(**env),
                        start_new_session=True,
                        preexec_fn=_die_with_parent,
                    )
                )
        deadline = time.monotonic() + 30
        for proc, log in zip(procs, logs, strict=True):
            while b"worker ready" not in log.read_bytes():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"worker did not start: {log.read_text()[-2000:]}")
                time.sleep(0.05)
    except BaseException:
        stop_workers(procs)
        raise
    return procs


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_pids(dbname: str) -> list[int]:
    """The PostgreSQL backends serving ``dbname`` on this machine (their title names
    it: "postgres: 15/main: postgres bench_workers_123 127.0.0.1(4567) idle"); the
    server's own processes (WAL writer, checkpointer) are left out."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if title.startswith("postgres:") and f" {dbname} " in title:
                pids.append(int(entry.name))
    return pids


@dataclass
class Cpu:
    """CPU seconds of the workers, the receiver and PostgreSQL since a snapshot."""

    workers: list[int]
    receiver: int
    dbname: str
    at: dict[str, dict[int, float]] | None = None

    def _now(self) -> dict[str, dict[int, float]]:
        return {
            "workers": {p: cpu_seconds(p) for p in self.workers},
            "receiver": {self.receiver: cpu_seconds(self.receiver)},
            "postgres": {p: cpu_seconds(p) for p in postgres_pids(self.dbname)},
        }

    def start(self) -> None:
        self.at = self._now()

    def since(self) -> dict[str, float]:
        assert self.at is not None
        now = self._now()
        return {
            part: sum(t - self.at[part].get(pid, 0.0) for pid, t in now[part].items())
            for part in now
        }


# -- receiver -------------------------------------------------------------------------


async def receiver_call(port: int, method: str, path: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, f"http://{h.HOST}:{port}{path}") as r:
            if r.status == 204:
                return {}
            result: dict[str, Any] = await r.json()
            return result


async def wait_arrivals(port: int, expected: int, timeout: float) -> dict[str, Any]:
    """The receiver's stats once ``expected`` distinct deliveries arrived (or the
    timeout passed), and a moment later, so that a late duplicate is counted too."""
    deadline = time.monotonic() + timeout
    while True:
        stats = await receiver_call(port, "GET", "/stats")
        if stats["distinct"] >= expected or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(DELAY + 0.5)
    return await receiver_call(port, "GET", "/stats")


# -- setup and rounds -------------------------------------------------------------------


async def open_writer(db: str) -> Storage:
    """The storage this process writes articles through, rendering each event's body
    as serve would (with the database's base URL)."""
    store = await open_storage(db)
    base = await store.site_setting(SITE_BASE_URL)
    if base is None:
        base = await store.claim_site_setting(SITE_BASE_URL, "http://127.0.0.1:8080")
    store.set_event_renderer(body_renderer(base))
    return store


async def subscribe(db: str, scale: Scale, port: int) -> None:
    store = await open_storage(db)
    try:
        for i in range(scale.subscriptions):
            await store.create_subscription(
                id=f"sub_{i:05d}",
                kind="webhook",
                url=f"http://{host_address(i % scale.hosts)}:{port}/hook/{i}",
                topics=["*"],
                events=[],
                secret=SECRET,
                owner=f"partner-{i % scale.owners}",
            )
    finally:
        await store.close()


async def done_times(db: str, since: float) -> list[float]:
    """When each attempt since ``since`` was recorded (``attempted_at``: the outcome's
    flush, every 20 ms, ~DELAY after it was sent; ``sent_at`` has whole seconds only),
    oldest first: what the ramp, the steady part and the tail are read from."""
    import asyncpg

    conn = await asyncpg.connect(db)
    try:
        rows = await conn.fetch(
            "SELECT extract(epoch FROM attempted_at)::float8 AS t FROM delivery_attempts"
            " WHERE attempted_at >= to_timestamp($1) ORDER BY attempted_at",
            since,
        )
    finally:
        await conn.close()
    return [float(r["t"]) for r in rows]


@dataclass
class Run:
    workers: int
    rate: float
    write_to_last: float
    arrived: int
    duplicates: int
    #: Deliveries/s between the 10th and the 90th percentile of the recorded times.
    steady: float = float("nan")
    #: Seconds from the write to the first recorded attempt, from it to the 10th
    #: percentile, and from the 90th percentile to the last.
    start: float = float("nan")
    ramp: float = float("nan")
    tail: float = float("nan")
    #: CPU milliseconds per delivery: workers, receiver, postgres (this database's).
    cpu_ms: dict[str, float] = field(default_factory=dict)
    #: Cores busy on average from the write to the last arrival (those three parts).
    cores: float = float("nan")
    #: Requests in flight at the receiver: the most at once, and the mean seen by an
    #: arrival (Little's law: N x the per-worker cap when the cap is what binds).
    peak_inflight: int = 0
    mean_inflight: float = float("nan")


async def one_run(db: str, port: int, scale: Scale, workers: int, tag: str, cpu: Cpu) -> Run:
    """Writes ``scale.articles`` articles (one batch) while ``workers`` workers run;
    deliveries/s from the first arrival to the last."""
    await receiver_call(port, "POST", "/reset")
    items = [h.article(n, prefix=tag, size=2000) for n in range(scale.articles)]
    store = await open_writer(db)
    try:
        cpu.start()
        written = time.time()
        results = await store_batch(
            store, items, host=h.HOST, fields=[f"articles[{n}]" for n in range(len(items))]
        )
    finally:
        await store.close()
    assert all(r["status"] == "created" for r in results), results
    expected = scale.deliveries
    # Bounded: a third of the bound's pace, plus the fan-out's poll and some slack.
    timeout = expected / scale.bound(workers) * 3 + 30
    stats = await wait_arrivals(port, expected, timeout)
    wall = time.time() - written
    used = cpu.since()
    if stats["distinct"] < expected:
        raise RuntimeError(
            f"{workers} workers: only {stats['distinct']} of {expected} deliveries "
            f"arrived in {timeout:.0f}s"
        )
    first, last = float(stats["first"]), float(stats["last"])
    run = Run(
        workers=workers,
        rate=(stats["distinct"] - 1) / (last - first),
        write_to_last=last - written,
        arrived=int(stats["distinct"]),
        duplicates=int(stats["count"]) - int(stats["distinct"]),
        cpu_ms={part: seconds * 1000 / expected for part, seconds in used.items()},
        cores=sum(used.values()) / wall,
        peak_inflight=int(stats.get("peak_inflight", 0)),
        mean_inflight=float(stats.get("mean_inflight", float("nan"))),
    )
    sent = await done_times(db, written)
    if len(sent) >= 10:
        lo, hi = len(sent) // 10, len(sent) * 9 // 10
        run.steady = (hi - lo) / max(sent[hi] - sent[lo], 1e-6)
        run.start = sent[0] - written
        run.ramp = sent[lo] - sent[0]
        run.tail = sent[-1] - sent[hi]
    return run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.workers")
    parser.add_argument(
        "--quick", action="store_true", help="one round of 400 deliveries (a look, not a figure)"
    )
    parser.add_argument(
        "--max-in-flight",
        type=int,
        default=0,
        help="each worker's cap instead of the scale's (32); 64 puts 4 workers' bound at "
        "1,280/s, about what the 2 cores can do at all",
    )
    args = parser.parse_args(argv)
    # SIGTERM (e.g. `timeout`) unwinds like Ctrl-C: the finally blocks stop the workers
    # and the receiver and drop the database.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if not h.pg_available():
        h.skip(TITLE, f"PostgreSQL not reachable at {h.PG_ADMIN}")
        return
    size = "quick" if args.quick else "large" if os.environ.get("BENCH_SCALE") == "1" else "default"
    scale = SCALES[size]
    if args.max_in_flight:
        scale = dataclasses.replace(scale, max_in_flight=args.max_in_flight)
    # The large scale is six minutes a round: one round, within run_all's time limit.
    rounds = 1 if args.quick or size == "large" else h.ROUNDS
    runs: dict[int, list[Run]] = {n: [] for n in COUNTS}
    started = time.monotonic()
    with h.scratch_dir() as tmp:
        receiver = h.Helper(
            "bench.receiver", ["--hosts", str(scale.hosts), "--delay", str(DELAY)]
        ).start(tmp)
        assert receiver.proc is not None
        receiver_pid = receiver.proc.pid
        db = h.new_database("postgres", tmp, "workers")
        try:
            h.create_token(db.url)  # makes the schema, as for the other benchmarks
            asyncio.run(subscribe(db.url, scale, receiver.port))
            env = worker_env(scale)
            for round_no in range(rounds):
                for n in COUNTS:
                    procs = start_workers(db.url, tmp, n, env)
                    try:
                        run = asyncio.run(
                            one_run(
                                db.url,
                                receiver.port,
                                scale,
                                n,
                                f"w{round_no}n{n}",
                                Cpu([p.pid for p in procs], receiver_pid, db.url.rsplit("/", 1)[1]),
                            )
                        )
                    finally:
                        stop_workers(procs)
                    runs[n].append(run)
                    print(
                        f"round {round_no + 1}/{rounds}, {n} worker(s): {run.rate:,.0f} "
                        f"deliveries/s ({run.rate / scale.bound(n):.2f}x the bound), write -> "
                        f"last {run.write_to_last:.1f}s, {run.duplicates} duplicates; steady "
                        f"(10-90%) {run.steady:,.0f}/s, write -> first done {run.start:.2f}s, "
                        f"ramp to 10% {run.ramp:.2f}s, tail from 90% {run.tail:.2f}s; CPU ms "
                        "per delivery "
                        + ", ".join(f"{k} {v:.2f}" for k, v in run.cpu_ms.items())
                        + f"; {run.cores:.2f} cores busy; in flight at the receiver: peak "
                        f"{run.peak_inflight}, mean {run.mean_inflight:.1f}",
                        flush=True,
                    )
        finally:
            receiver.stop()
            db.drop()
    print(f"total {time.monotonic() - started:.0f}s", flush=True)
    base = h.median([r.rate for r in runs[1]])
    rows: list[list[Any]] = []
    for n in COUNTS:
        rate = h.median([r.rate for r in runs[n]])
        duplicates = sum(r.duplicates for r in runs[n])
        target = TARGETS.get(n)
        rows.append(
            [
                f"{n} worker{'s' if n > 1 else ''}",
                rate,
                scale.bound(n),
                f"{rate / scale.bound(n):.2f}x",
                f"{rate / base:.2f}x",
                f">= {target}x" if target else "(baseline)",
                h.verdict(rate / base, target) if target else "",
                h.median([r.steady for r in runs[n]]),
                f"{h.median([r.mean_inflight for r in runs[n]]):.1f} / "
                f"{max(r.peak_inflight for r in runs[n])}",
                f"{h.median([r.start for r in runs[n]]):.2f} / "
                f"{h.median([r.ramp for r in runs[n]]):.2f} / "
                f"{h.median([r.tail for r in runs[n]]):.2f}",
                h.median([r.write_to_last for r in runs[n]]),
                " / ".join(
                    f"{h.median([r.cpu_ms.get(k, float('nan')) for r in runs[n]]):.2f}"
                    for k in ("workers", "postgres", "receiver")
                ),
                h.median([r.cores for r in runs[n]]),
                duplicates,
            ]
        )
    flags = (" --quick" if args.quick else "") + (
        f" --max-in-flight {args.max_in_flight}" if args.max_in_flight else ""
    )
    h.report(
        TITLE,
        f"python -m bench.workers{flags}" + (" (BENCH_SCALE=1)" if size == "large" else ""),
        [
            "",
            "deliveries/s",
            "bound (Little)",
            "of bound",
            "vs 1 worker",
            "target",
            "result",
            "steady 10-90% /s",
            "in flight mean / peak",
            "to first / ramp / tail (s)",
            "write -> last (s)",
            "CPU ms/delivery: workers / postgres / receiver",
            "cores busy",
            "duplicates",
        ],
        rows,
        [
            f"{scale.deliveries:,} deliveries per run: {scale.articles} articles (one batch "
            f"written through the storage, no serve running) x {scale.subscriptions:,} "
            f"webhooks of {scale.owners} partners on {scale.hosts} receiver hosts "
            f"(127.0.1.x, one receiver process) answering 204 after {DELAY * 1000:.0f} ms.",
            f"Each worker: SYNDICATE_MAX_IN_FLIGHT={scale.max_in_flight}, all for webhooks "
            f"(SYNDICATE_WEBSUB_SHARE=0); per-owner (32) and per-host (8) caps at their "
            f"defaults, not binding; bound = workers x {scale.max_in_flight} / "
            f"{DELAY:.1f} s.",
            "deliveries/s = (distinct arrivals - 1) / (last arrival - first arrival) at the "
            "receiver; duplicates = arrivals of a (webhook-id, path) pair already seen, "
            "summed over the rounds (must be 0).",
            "steady = deliveries/s between the 10th and 90th percentile of the attempts' "
            "recorded times (delivery_attempts.attempted_at, flushed every 20 ms); to first "
            f"= the write to the first recorded ({DELAY:.1f} s of it the receiver's answer, "
            "the rest the fan-out's poll and claim), ramp = first to the 10th percentile, "
            f"tail = 90th percentile to the last (at the bound, 10% takes "
            f"{scale.deliveries / 10 / scale.bound(1):.1f} s with 1 worker, "
            f"{scale.deliveries / 10 / scale.bound(4):.1f} s with 4).",
            "CPU: user + system seconds from /proc over the write -> last arrival, per "
            "delivery; postgres is the backends serving the benchmark's database (the "
            "server's WAL writer and checkpointer left out); cores busy = those three "
            "parts' CPU seconds / wall seconds.",
            "in flight: requests the receiver held at once, the mean as seen by each "
            "arrival and the peak over the rounds (the cap: workers x "
            f"{scale.max_in_flight}).",
            "Rounds run 1, 2, 4 workers in turn on the same database, the workers started "
            "(and ready) before the articles are written.",
        ],
        rounds=rounds,
    )


if __name__ == "__main__":
    main()
