"""1. Feed reads at three sizes (~4 KB, ~15 KB, ~150 KB), 200 and 304 (If-None-Match),
from `syndicate serve --workers N` vs a bare aiohttp handler serving the same bytes and
ETag from the same number of processes (`bench/bare_feed.py`): the ratio to bare aiohttp
is the target, what the service adds per request over the framework. nginx serving the
identical bytes as static files is shown beside it. wrk -t2 -c64 -d5s per run.

``--before TREE`` also runs a second `syndicate serve` from another checkout of the code
(e.g. a `git worktree` of the commit before a change) on the same database, measured in
the same rounds: an A/B in one run on the same machine.

Each server runs in a session of its own (`serve` and its workers in one, bare aiohttp's
processes in another): Linux gives each session one share of the CPU (autogroups), so a
server in the benchmark's own session, beside wrk, got twice the CPU of `serve` whenever
anything else ran. CPU µs a request (the servers' processes' user + system time over
the requests wrk counted) is shown beside req/s: it moves far less with the machine's
other load than req/s does."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench import _harness as h
from syndicate.core.settings import default_event_loop

TITLE = "1. Feed reads (SQLite)"
TARGET = 0.8  # of bare aiohttp, 200 and 304 alike
# (topic, articles, bytes of HTML content each): RSS feeds of about 4, 15 and 150 KB.
SIZES = [
    ("feed-small", 3, 400),
    ("feed-medium", 5, 1_600),
    ("feed-large", 45, 2_600),
]


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, b"", dict(exc.headers)


def articles() -> list[dict[str, object]]:
    out = []
    n = 0
    for topic, count, size in SIZES:
        for _ in range(count):
            out.append(h.article(n, prefix="feed", topic=topic, size=size))
            n += 1
    return out


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes so far."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def start_bare(tmp: Path, spec: list[str], processes: int) -> h.Helper:
    """`bench/bare_feed.py --processes N` (a helper: a session of its own, like `serve`),
    once all N answer."""
    bare = h.Helper("bench.bare_feed", ["--processes", str(processes), *spec]).start(tmp)
    assert bare.proc is not None
    deadline = time.monotonic() + 20
    while len(h.children_of(bare.proc.pid)) < processes - 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # the later ones bind after the first already answers
    return bare


def check_feed(base: str, path: str, count: int) -> tuple[bytes, str]:
    """The feed's bytes and ETag, after checking the 200 and the 304."""
    status, body, headers = fetch(base + path)
    assert status == 200, (path, status)
    assert body.count(b"<item>") == count, (path, body.count(b"<item>"))
    etag = headers["ETag"]
    assert fetch(base + path, {"If-None-Match": etag})[0] == 304
    return body, etag


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=h.cores())
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument(
        "--before",
        type=Path,
        help="a checkout of the code before a change: its `serve` is measured too",
    )
    args = parser.parse_args(argv)
    if not h.have("wrk"):
        h.skip(TITLE, "wrk is not installed (apt-get install wrk); nothing measured")
        return
    with h.scratch_dir() as tmp:
        db = h.new_database("sqlite", tmp, "feeds")
        token = h.create_token(db.url)
        service = h.Service(db.url, workers=args.workers).start(tmp)
        before: h.Service | None = None
        nginx: h.Nginx | None = None
        bare: h.Helper | None = None
        try:
            asyncio.run(h.load_articles(service.base, token, articles()))
            root = tmp / "www"
            (root / "feeds").mkdir(parents=True)
            feeds: list[tuple[str, str, bytes, str]] = []  # topic, path, body, etag
            for topic, count, _ in SIZES:
                path = f"/feeds/{topic}.rss"
                body, etag = check_feed(service.base, path, count)
                (root / "feeds" / f"{topic}.rss").write_bytes(body)
                feeds.append((topic, path, body, etag))
            if args.before is not None:
                env = {"PYTHONPATH": str(args.before.resolve())}
                before = h.Service(db.url, workers=args.workers, env=env).start(tmp)
                for (_, path, body, _), (_, count, _) in zip(feeds, SIZES, strict=True):
                    assert check_feed(before.base, path, count)[0] == body
            bases = {"ours": service.base}
            if before is not None:
                bases["before"] = before.base
            etags: dict[tuple[str, str], str] = {}  # (variant, path) -> its ETag
            if h.have("nginx"):
                nginx = h.Nginx(root, workers=args.workers).start(tmp)
                bases["nginx"] = f"http://{h.HOST}:{nginx.port}"
                for _, path, body, _ in feeds:
                    status, n_body, n_headers = fetch(bases["nginx"] + path)
                    assert status == 200 and n_body == body
                    etags["nginx", path] = n_headers["ETag"]
            spec = []
            for _, path, _, etag in feeds:
                spec += ["--feed", path, str(root / path.lstrip("/")), etag]
            bare = start_bare(tmp, spec, args.workers)
            assert bare.proc is not None
            bases["bare"] = f"http://{h.HOST}:{bare.port}"
            pids = {"ours": service.pids(), "bare": [bare.proc.pid, *h.children_of(bare.proc.pid)]}
            if before is not None:
                pids["before"] = before.pids()
            if nginx is not None and nginx.proc is not None:
                pids["nginx"] = [nginx.proc.pid, *h.children_of(nginx.proc.pid)]
            for _, path, body, etag in feeds:
                assert fetch(bases["bare"] + path)[1] == body
                for variant in bases:
                    etags.setdefault((variant, path), etag)
            runs: dict[tuple[str, str, str], list[h.WrkResult]] = {}
            cpu: dict[tuple[str, str, str], list[float]] = {}  # CPU µs a request
            for round_no in range(h.ROUNDS):
                print(f"round {round_no + 1}/{h.ROUNDS}", flush=True)
                for topic, path, _, _ in feeds:
                    for code in ("200", "304"):
                        for variant, base in bases.items():
                            headers = []
                            if code == "304":
                                headers = [f"If-None-Match: {etags[variant, path]}"]
                            used = cpu_seconds(pids[variant])
                            result = h.wrk(base + path, headers=headers, duration=args.duration)
                            used = cpu_seconds(pids[variant]) - used
                            runs.setdefault((topic, code, variant), []).append(result)
                            per_request = 1e6 * used / max(1, result.requests)
                            cpu.setdefault((topic, code, variant), []).append(per_request)
            rss = service.rss_mb()
        finally:
            if bare is not None:
                bare.stop()
            service.stop()
            if before is not None:
                before.stop()
            if nginx is not None:
                nginx.stop()
    m = {k: h.median_wrk(v) for k, v in runs.items()}
    c = {k: h.median(v) for k, v in cpu.items()}

    rows = []
    for (topic, _, _), (_, _, body, _) in zip(SIZES, feeds, strict=True):
        for code in ("200", "304"):
            ours, bare_run = m[topic, code, "ours"], m[topic, code, "bare"]
            ratio = ours.rps / bare_run.rps
            row = [
                f"{len(body) / 1024:.1f} KB",
                code,
                f"{ours.rps:,.0f}",
                f"{ours.p50_ms:.2f} / {ours.p99_ms:.2f}",
                f"{bare_run.rps:,.0f}",
                f"{ratio:.2f}x",
                h.verdict(ratio, TARGET),
                f"{c[topic, code, 'ours']:.0f} / {c[topic, code, 'bare']:.0f}",
                f"{c[topic, code, 'bare'] / c[topic, code, 'ours']:.2f}x",
            ]
            if "nginx" in bases:
                nginx_run = m[topic, code, "nginx"]
                row += [f"{nginx_run.rps:,.0f}", f"{ours.rps / nginx_run.rps:.2f}x"]
            if "before" in bases:
                old = m[topic, code, "before"]
                row += [
                    f"{old.rps:,.0f}",
                    f"{old.rps / bare_run.rps:.2f}x",
                    f"{c[topic, code, 'before']:.0f}",
                ]
            rows.append(row)
    headers = [
        "feed",
        "status",
        "ours req/s",
        "ours p50/p99 ms",
        "bare aiohttp req/s",
        "ours/bare",
        f"target >= {TARGET}x",
        "CPU µs/request ours / bare",
        "bare/ours CPU",
    ]
    if "nginx" in bases:
        headers += ["nginx req/s", "ours/nginx"]
    if "before" in bases:
        headers += ["before req/s", "before/bare", "before CPU µs/request"]
    errors = sum(r.errors + r.non_2xx_3xx for v in runs.values() for r in v)
    command = f"python -m bench.feed_reads --workers {args.workers} --duration {args.duration}"
    if args.before is not None:
        command += f" --before {args.before}"
    sizes = ", ".join(
        f"{topic} {count} items {len(body):,} bytes"
        for (topic, count, _), (_, _, body, _) in zip(SIZES, feeds, strict=True)
    )
    h.report(
        TITLE,
        f"{command} (wrk -t2 -c64 -d{args.duration}s)",
        headers,
        rows,
        [
            f"Feeds (RSS, full content, uncompressed: wrk sends no Accept-Encoding): {sizes}.",
            f"All with {args.workers} processes: `syndicate serve --workers {args.workers}`, "
            f"`bench/bare_feed.py` x {args.workers} on one port (the same bytes and ETag, no "
            f"middleware or database, on the service's event loop, {default_event_loop()}) "
            f"and nginx `worker_processes {args.workers}`; wrk shares the same {h.cores()} "
            "cores.",
            "Each server in a session of its own (Linux gives each session one CPU share). "
            "CPU µs/request: the server's processes' user + system time over the requests "
            "wrk counted (medians); ours minus bare is what the service adds to the "
            "framework's own work, and bare/ours is the req/s ratio a machine with nothing "
            "else to run would show.",
            f"Service RSS after the run: {rss:.0f} MB over {args.workers} processes. "
            f"Socket errors + non-2xx/3xx across all runs: {errors}.",
        ],
    )


if __name__ == "__main__":
    main()
