"""`make bench`: every benchmark, SQLite first, then 2-4, 6 and 7 on PostgreSQL when reachable.

Each one runs in its own process and prints its table. Nothing is written unless the run
is recorded (`make bench RECORD=1`, i.e. `python -m bench.run_all --record`): then every
table goes into one new file, bench/results/<UTC date>T<HHMM>-<machine>.md.
A benchmark that cannot run says why and the others still run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench import _harness as h

PLAN = [
    ["bench.feed_reads"],
    ["bench.ingest", "--backend", "sqlite"],
    ["bench.fanout", "--backend", "sqlite"],
    ["bench.latency", "--backend", "sqlite"],
    ["bench.isolation", "--backend", "sqlite"],
    ["bench.stream", "--backend", "sqlite"],
    ["bench.scale"],
    ["bench.ingest", "--backend", "postgres"],
    ["bench.fanout", "--backend", "postgres"],
    ["bench.latency", "--backend", "postgres"],
    ["bench.isolation", "--backend", "postgres"],
    ["bench.stream", "--backend", "postgres"],
    ["bench.fanout_scale", "--backend", "sqlite"],
    ["bench.fanout_scale", "--backend", "postgres"],
    ["bench.fanout_soak", "--backend", "sqlite"],
    ["bench.fanout_soak", "--backend", "postgres"],
    ["bench.workers"],
]
TIME_LIMIT = 900


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run_all",
        description="Run every benchmark and print their tables (BENCHMARKS.md explains "
        "them). Nothing is written unless --record is given.",
    )
    parser.add_argument(
        "--record",
        nargs="?",
        const="",
        metavar="FILE",
        help="also write the tables to a new raw result file, by default "
        "bench/results/<YYYY-MM-DD>T<HHMM>-<machine>.md (UTC; the machine from "
        "BENCH_MACHINE or the CPU model)",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="TEXT",
        help="run only the steps whose command contains TEXT (repeatable), e.g. "
        "--only fanout, --only 'backend postgres'",
    )
    return parser.parse_args(argv)


def start_record(target: str) -> Path:
    now = dt.datetime.now(dt.UTC)
    path = Path(target) if target else h.result_path(now)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        raise SystemExit(f"{path} already exists: a recorded run writes a new file")
    stamp = now.strftime("%Y-%m-%d %H:%M UTC")
    path.write_text(f"# make bench — {stamp} — {h.machine()}\n")
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = [s for s in PLAN if not args.only or any(t in " ".join(s) for t in args.only)]
    if not plan:
        print(f"no step matches {args.only}", file=sys.stderr)
        return 2
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
    if args.record is not None:
        path = start_record(args.record)
        os.environ[h.RECORD_ENV] = str(path)  # the benchmarks below append to it
        print(f"Recording this run in {path}", flush=True)
    else:
        os.environ.pop(h.RECORD_ENV, None)
    failed = []
    for step in plan:
        print(f"\n=== {' '.join(step)}", flush=True)
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", *step], cwd=h.ROOT)
        try:
            code = proc.wait(timeout=TIME_LIMIT)
        except subprocess.TimeoutExpired:
            # SIGINT first: a benchmark unwinds on it (KeyboardInterrupt) and stops the
            # helpers it started in sessions of their own (a SIGKILL would leave them
            # running).
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            code = -1
        print(f"=== {' '.join(step)}: exit {code} in {time.monotonic() - started:.0f}s", flush=True)
        if code != 0:
            failed.append(" ".join(step))
            h.skip(" ".join(step), f"the benchmark failed (exit {code}); see the output above")
    if args.record is not None:
        print(f"\nRecorded in {os.environ[h.RECORD_ENV]}", flush=True)
    if failed:
        print(f"\nFailed: {', '.join(failed)}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
