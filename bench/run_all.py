"""`make bench`: every benchmark, SQLite first, then 2-4 and 6 on PostgreSQL when reachable.

Each one runs in its own process, prints its table and appends it to BENCHMARKS.md.
A benchmark that cannot run says why and the others still run.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time

from bench import _harness as h

PLAN = [
    ["bench.feed_reads"],
    ["bench.ingest", "--backend", "sqlite"],
    ["bench.fanout", "--backend", "sqlite"],
    ["bench.latency", "--backend", "sqlite"],
    ["bench.isolation", "--backend", "sqlite"],
    ["bench.scale"],
    ["bench.ingest", "--backend", "postgres"],
    ["bench.fanout", "--backend", "postgres"],
    ["bench.latency", "--backend", "postgres"],
    ["bench.isolation", "--backend", "postgres"],
]
TIME_LIMIT = 900


def main() -> int:
    missing = [tool for tool in ("wrk", "nginx") if not h.have(tool)]
    if missing:
        print(
            f"NOTE: {', '.join(missing)} not installed: the parts that need them are skipped "
            "(install with: apt-get install wrk nginx-light).",
            flush=True,
        )
    if not h.pg_available():
        print(
            f"NOTE: PostgreSQL not reachable at {h.PG_ADMIN} (set BENCH_PG): the PostgreSQL "
            "runs are skipped.",
            flush=True,
        )
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    if not h.BENCHMARKS_MD.exists():
        h.BENCHMARKS_MD.write_text("# Benchmarks\n\n")
    with h.BENCHMARKS_MD.open("a") as f:
        f.write(f"\n## make bench — {stamp} — {h.machine()}\n")
    failed = []
    for step in PLAN:
        print(f"\n=== {' '.join(step)}", flush=True)
        started = time.monotonic()
        try:
            code = subprocess.run(
                [sys.executable, "-m", *step], cwd=h.ROOT, timeout=TIME_LIMIT
            ).returncode
        except subprocess.TimeoutExpired:
            code = -1
        print(f"=== {' '.join(step)}: exit {code} in {time.monotonic() - started:.0f}s", flush=True)
        if code != 0:
            failed.append(" ".join(step))
            h.skip(" ".join(step), f"the benchmark failed (exit {code}); see the output above")
    if failed:
        print(f"\nFailed: {', '.join(failed)}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
