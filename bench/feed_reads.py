"""1. Feed reads: /feeds/liver-health.rss from `syndicate serve --workers N` vs nginx
serving the identical bytes as a static file; 200 and 304 (If-None-Match), wrk -t2 -c64 -d10s."""

from __future__ import annotations

import argparse
import asyncio
import time
import urllib.request

from bench import _harness as h
from syndicate.core.settings import default_event_loop

TITLE = "1. Feed reads (SQLite)"
TARGET_200 = 0.45
TARGET_304 = 0.20


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, b"", dict(exc.headers)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=h.cores())
    parser.add_argument("--duration", type=int, default=10)
    args = parser.parse_args(argv)
    if not h.have("wrk"):
        h.skip(TITLE, "wrk is not installed (apt-get install wrk); nothing measured")
        return
    if not h.have("nginx"):
        h.skip(TITLE, "nginx is not installed (apt-get install nginx-light); no baseline")
        return
    content = h.seed_article()["content"]
    with h.scratch_dir() as tmp:
        db = h.new_database("sqlite", tmp, "feeds")
        token = h.create_token(db.url)
        service = h.Service(db.url, workers=args.workers).start(tmp)
        nginx = None
        bare: list[h.Helper] = []
        try:
            articles = [h.article(i, prefix="feed", content=content) for i in range(50)]
            asyncio.run(h.load_articles(service.base, token, articles))
            url = f"{service.base}/feeds/liver-health.rss"
            status, body, headers = fetch(url)
            assert status == 200, status
            assert body.count(b"<item>") == 50, "expected 50 items"
            etag = headers["ETag"]
            assert fetch(url, {"If-None-Match": etag})[0] == 304
            root = tmp / "www"
            (root / "feeds").mkdir(parents=True)
            (root / "feeds" / "liver-health.rss").write_bytes(body)
            nginx = h.Nginx(root, workers=args.workers).start(tmp)
            nginx_url = f"http://{h.HOST}:{nginx.port}/feeds/liver-health.rss"
            n_status, n_body, n_headers = fetch(nginx_url)
            assert n_status == 200 and n_body == body
            n_etag = n_headers["ETag"]
            assert fetch(nginx_url, {"If-None-Match": n_etag})[0] == 304
            feed_file = root / "feeds" / "liver-health.rss"
            port = h.free_port()
            for _ in range(args.workers):
                bare.append(
                    h.Helper(
                        "bench.bare_feed", ["--body", str(feed_file), "--etag", etag], port=port
                    ).start(tmp)
                )
            time.sleep(1.0)  # the later ones bind after the first already answers
            bare_url = f"http://{h.HOST}:{port}/feeds/liver-health.rss"
            assert fetch(bare_url)[1] == body
            keys = ("o200", "n200", "b200", "o304", "n304", "b304")
            runs: dict[str, list[h.WrkResult]] = {k: [] for k in keys}
            for round_no in range(h.ROUNDS):
                print(f"round {round_no + 1}/{h.ROUNDS}", flush=True)
                d: int = args.duration
                runs["o200"].append(h.wrk(url, duration=d))
                runs["n200"].append(h.wrk(nginx_url, duration=d))
                runs["o304"].append(h.wrk(url, headers=[f"If-None-Match: {etag}"], duration=d))
                runs["n304"].append(
                    h.wrk(nginx_url, headers=[f"If-None-Match: {n_etag}"], duration=d)
                )
                runs["b200"].append(h.wrk(bare_url, duration=d))
                runs["b304"].append(h.wrk(bare_url, headers=[f"If-None-Match: {etag}"], duration=d))
            rss = service.rss_mb()
        finally:
            for helper in bare:
                helper.stop()
            service.stop()
            if nginx is not None:
                nginx.stop()
    m = {k: h.median_wrk(v) for k, v in runs.items()}
    rows = []
    for code, target in (("200", TARGET_200), ("304", TARGET_304)):
        ours, base, bare_run = m["o" + code], m["n" + code], m["b" + code]
        ratio = ours.rps / base.rps
        rows.append(
            [
                f"{code}",
                f"{ours.rps:,.0f}",
                f"{ours.p50_ms:.2f} / {ours.p99_ms:.2f}",
                f"{base.rps:,.0f}",
                f"{base.p50_ms:.2f} / {base.p99_ms:.2f}",
                f"{ratio:.2f}x",
                f">= {target}x",
                h.verdict(ratio, target),
                f"{bare_run.rps / base.rps:.2f}x",
            ]
        )
    errors = sum(r.errors + r.non_2xx_3xx for v in runs.values() for r in v)
    h.report(
        TITLE,
        f"python -m bench.feed_reads --workers {args.workers} (wrk -t2 -c64 -d{args.duration}s)",
        [
            "status",
            "ours req/s",
            "ours p50/p99 ms",
            "nginx req/s",
            "nginx p50/p99 ms",
            "ours/nginx",
            "target",
            "result",
            "bare aiohttp/nginx",
        ],
        rows,
        [
            f"Feed: 50 items with full content, {len(body):,} bytes uncompressed (wrk sends no "
            "Accept-Encoding); nginx serves the identical bytes as a static file.",
            f"Both with {args.workers} processes: `syndicate serve --workers {args.workers}` "
            f"vs nginx `worker_processes {args.workers}`; wrk shares the same {h.cores()} cores.",
            f"Bare aiohttp: `bench/bare_feed.py` x {args.workers} on one port, the same bytes "
            "and ETag with no middleware or database, on the service's event loop "
            f"({default_event_loop()}), same wrk settings: what the framework itself reaches "
            "here.",
            f"Service RSS after the run: {rss:.0f} MB over {args.workers} processes. "
            f"Socket errors + non-2xx/3xx across all runs: {errors}.",
        ],
    )


if __name__ == "__main__":
    main()
