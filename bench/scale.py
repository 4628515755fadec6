"""5. Scale: feed read latency and `GET /api/articles` latency with 1k, 100k and 1M stored
articles, and the service's RSS; the curve must stay flat.

The first 1,000 articles go in through the real API (`POST /api/articles/batch`, i.e.
`Storage.put_articles`), which also gives its load rate. Beyond that, rows are written
straight into the same tables with sqlite3 (load phase only; the service is stopped
meanwhile and restarted on the grown file, so what is measured is the real service)."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sqlite3
import time
import urllib.request
from pathlib import Path

from bench import _harness as h
from bench.ingest import SERVICE_ENV

TARGET_GROWTH = 1.5
TARGET_RSS_MB = 300.0
TOPICS = [f"topic-{i:02d}" for i in range(19)] + ["liver-health"]
API_LOADED = 1000
CHUNK = 50_000


def api_articles(start: int, stop: int) -> list[dict[str, object]]:
    return [
        h.article(i, prefix="s", topic=TOPICS[i % len(TOPICS)], size=1000)
        for i in range(start, stop)
    ]


def direct_load(path: Path, start: int, stop: int) -> None:
    """Copy the shape of the API-written rows for ids start..stop-1 (load phase only)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = OFF")
    template = conn.execute("SELECT * FROM articles WHERE id = 's-0'").fetchone()
    cols = [d[0] for d in conn.execute("SELECT * FROM articles LIMIT 0").description]
    row0 = dict(zip(cols, template, strict=True))
    base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    insert = f"INSERT INTO articles ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
    for lo in range(start, stop, CHUNK):
        hi = min(stop, lo + CHUNK)
        articles = []
        links = []
        for i in range(lo, hi):
            topic = TOPICS[i % len(TOPICS)]
            published = (base + dt.timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%S.000000Z")
            row = dict(
                row0,
                id=f"s-{i}",
                guid=f"tag:bench,2026:article/s-{i}",
                slug=f"liver-calcification-question-{i}",
                title=f"Liver calcification, question {i}",
                topics=json.dumps([topic]),
                published_at=published,
            )
            articles.append(tuple(row[c] for c in cols))
            links.append((topic, f"s-{i}", published))
        conn.execute("BEGIN")
        conn.executemany(insert, articles)
        conn.executemany(
            "INSERT INTO article_topics (topic, article_id, published_at) VALUES (?, ?, ?)", links
        )
        conn.execute("COMMIT")
    conn.execute(
        "UPDATE topics SET article_count = "
        "(SELECT count(*) FROM article_topics WHERE topic = topics.slug), "
        "changed_seq = changed_seq + 1"
    )
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def timed_get(url: str, headers: dict[str, str]) -> float:
    start = time.perf_counter()
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as r:
        r.read()
    return (time.perf_counter() - start) * 1000


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,100000,1000000")
    parser.add_argument("--duration", type=int, default=5)
    args = parser.parse_args(argv)
    title = "5. Scale (SQLite)"
    if not h.have("wrk"):
        h.skip(title, "wrk is not installed (apt-get install wrk); nothing measured")
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    notes = []
    results: dict[int, dict[str, float]] = {}
    with h.scratch_dir() as tmp:
        db = h.new_database("sqlite", tmp, "scale")
        path = Path(db.url.removeprefix("sqlite:///"))
        token = h.create_token(db.url)
        loaded = 0
        for size in sizes:
            started = time.perf_counter()
            if loaded < API_LOADED:
                with h.Service(db.url, env=SERVICE_ENV).start(tmp) as service:
                    asyncio.run(
                        h.load_articles(service.base, token, api_articles(0, min(size, API_LOADED)))
                    )
                api_rate = min(size, API_LOADED) / (time.perf_counter() - started)
                notes.append(
                    f"API load (POST /api/articles/batch, 500 per request): "
                    f"{api_rate:,.0f} articles/s; 1M this way would take about "
                    f"{1_000_000 / api_rate / 60:.0f} min."
                )
                loaded = min(size, API_LOADED)
                started = time.perf_counter()
            if size > loaded:
                direct_load(path, loaded, size)
                notes.append(
                    f"Direct load {loaded:,} -> {size:,}: "
                    f"{time.perf_counter() - started:.0f} s "
                    f"(database {path.stat().st_size / 2**20:,.0f} MB)."
                )
                loaded = size
            print(f"measuring at {size:,} articles", flush=True)
            with h.Service(db.url).start(tmp) as service:
                feed = f"{service.base}/feeds/liver-health.rss"
                listing = f"{service.base}/api/articles?limit=50"
                auth = f"Authorization: Bearer {token}"
                cold = timed_get(feed, {})
                feeds_, lists = [], []
                for _ in range(h.ROUNDS):
                    feeds_.append(h.wrk(feed, threads=1, connections=4, duration=args.duration))
                    lists.append(
                        h.wrk(
                            listing,
                            threads=1,
                            connections=4,
                            duration=args.duration,
                            headers=[auth],
                        )
                    )
                f, li = h.median_wrk(feeds_), h.median_wrk(lists)
                results[size] = {
                    "feed50": f.p50_ms,
                    "feed99": f.p99_ms,
                    "list50": li.p50_ms,
                    "list99": li.p99_ms,
                    "cold": cold,
                    "rss": service.rss_mb(),
                    "bad": sum(r.non_2xx_3xx + r.errors for r in feeds_ + lists),
                }
        db.drop()
    first = results[sizes[0]]
    for size in sizes:
        r = results[size]
        rows.append(
            [
                f"{size:,}",
                f"{r['feed50']:.2f} / {r['feed99']:.2f}",
                f"{r['cold']:.0f}",
                f"{r['list50']:.2f} / {r['list99']:.2f}",
                f"{r['rss']:.0f}",
                f"{r['feed50'] / first['feed50']:.2f}x / {r['list50'] / first['list50']:.2f}x",
            ]
        )
    last = results[sizes[-1]]
    growth = max(last["feed50"] / first["feed50"], last["list50"] / first["list50"])
    peak_rss = max(r["rss"] for r in results.values())
    h.report(
        title,
        f"python -m bench.scale --sizes {args.sizes}",
        [
            "articles",
            "feed p50/p99 ms",
            "feed cold ms",
            "list p50/p99 ms",
            "RSS MB",
            "p50 vs first (feed / list)",
        ],
        rows,
        [
            f"Growth {sizes[0]:,} -> {sizes[-1]:,} (worst p50 ratio): {growth:.2f}x, target <= "
            f"{TARGET_GROWTH}x: {h.verdict(growth, TARGET_GROWTH, at_most=True)}. Peak RSS "
            f"{peak_rss:.0f} MB, target <= {TARGET_RSS_MB:.0f} MB: "
            f"{h.verdict(peak_rss, TARGET_RSS_MB, at_most=True)}.",
            "Latency by wrk -t1 -c4 -d"
            f"{args.duration}s (a latency probe, not a throughput test) against "
            "`syndicate serve --workers 1` restarted on the grown database; feed = "
            "/feeds/liver-health.rss (50 items; 1/20 of all articles are in that topic), "
            "list = GET /api/articles?limit=50 (all topics). 'cold' = first feed request after "
            "start (renders from the database). RSS of the one process after the runs. "
            f"Non-2xx/errors: {sum(int(r['bad']) for r in results.values())}.",
            *notes,
        ],
    )


if __name__ == "__main__":
    main()
