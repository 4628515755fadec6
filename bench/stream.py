"""7. Pull and stream (issue 21).

Streams: 1,000 concurrent SSE clients (`GET /api/events/stream`, aiohttp connections
from this process) on one `syndicate serve`; one article POSTed per round; latency =
the moment each client has the event's `data:` line minus the moment the POST's 201
(the commit) came back. Per round: p50 and p99 over the clients, and the last client.

Pull: `GET /api/events?limit=1000` paged through 20,000 events (`after=` the
`next_cursor`, each page's JSON decoded), events/s, beside a raw driver `SELECT *
FROM events WHERE seq > ? ORDER BY seq LIMIT 1000` paging the same rows of the same
database, rounds alternating, in the same run; and beside a raw SELECT of only the
columns the pull reads (the body, not the snapshot), shown for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Callable

import aiohttp
import orjson

from bench import _harness as h

TARGET_P99_MS = 250.0
TARGET_PULL = 0.5
CLIENTS = 1000
EVENTS = 20_000
PAGE = 1000
SEED_BATCH = 500
SERVICE_ENV = {
    "SYNDICATE_STREAM_MAX": str(CLIENTS + 100),
    "SYNDICATE_STREAM_MAX_PER_TOKEN": str(CLIENTS + 100),
    "SYNDICATE_MAX_BODY_SIZE": str(4 * 1024 * 1024),
    "SYNDICATE_WRITE_BURST": "100000",
}


class Listener:
    """One SSE client: connected, then records when each round's event arrives."""

    def __init__(self) -> None:
        self.ready = asyncio.Event()
        self.arrived: dict[str, float] = {}
        self.changed = asyncio.Event()

    async def run(self, session: aiohttp.ClientSession, url: str, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        async with session.get(url, headers=headers) as response:
            assert response.status == 200, response.status
            async for line in response.content:
                if line.startswith(b"retry:"):
                    self.ready.set()
                elif line.startswith(b"data: "):
                    now = time.perf_counter()
                    article_id = orjson.loads(line[6:])["data"]["id"]
                    self.arrived[article_id] = now
                    self.changed.set()


async def open_listeners(
    base: str, token: str, after: str, count: int
) -> tuple[list[Listener], list[asyncio.Task[None]], aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    session = aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=None, sock_connect=30)
    )
    url = f"{base}/api/events/stream?after={after}"
    listeners = [Listener() for _ in range(count)]
    tasks: list[asyncio.Task[None]] = []
    for start in range(0, count, 100):  # within the listen backlog
        group = listeners[start : start + 100]
        tasks += [asyncio.create_task(one.run(session, url, token)) for one in group]
        async with asyncio.timeout(60):
            await asyncio.gather(*(one.ready.wait() for one in group))
    return listeners, tasks, session


async def stream_rounds(
    base: str, token: str, rounds: int, rss: Callable[[], float]
) -> tuple[list[tuple[float, float, float]], float]:
    """(p50, p99, last) ms per round, and serve's RSS with the streams open."""
    async with aiohttp.ClientSession() as http:
        async with http.get(
            f"{base}/api/events?limit=1", headers={"Authorization": f"Bearer {token}"}
        ) as r:
            head = (await r.json())["next_cursor"]
        while True:  # the head: page on to the end
            async with http.get(
                f"{base}/api/events?limit=1000&after={head}",
                headers={"Authorization": f"Bearer {token}"},
            ) as r:
                page = await r.json()
            head = page["next_cursor"]
            if not page["has_more"]:
                break
    listeners, tasks, session = await open_listeners(base, token, head, CLIENTS)
    results = []
    memory = rss()
    try:
        async with aiohttp.ClientSession() as http:
            for round_no in range(rounds):
                article = h.article(round_no, prefix="stream", size=2000)
                await h.post_json(http, f"{base}/api/articles", token, article, expect=(201,))
                committed = time.perf_counter()
                key = article["id"]
                async with asyncio.timeout(30):
                    for one in listeners:
                        while key not in one.arrived:
                            one.changed.clear()
                            await one.changed.wait()
                latencies = [(one.arrived[key] - committed) * 1000 for one in listeners]
                results.append(
                    (h.percentile(latencies, 50), h.percentile(latencies, 99), max(latencies))
                )
                print(
                    f"round {round_no + 1}/{rounds}: p50 {results[-1][0]:.1f} ms, "
                    f"p99 {results[-1][1]:.1f} ms, last {results[-1][2]:.1f} ms",
                    flush=True,
                )
                await asyncio.sleep(0.5)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        await session.close()
    return results, memory


async def seed(base: str, token: str, count: int) -> None:
    articles = [h.article(n, prefix="pull", size=1000) for n in range(count)]
    await h.load_articles(base, token, articles, batch=SEED_BATCH)


async def pull_ours(base: str, token: str) -> tuple[int, float]:
    headers = {"Authorization": f"Bearer {token}"}
    got = 0
    async with aiohttp.ClientSession(headers=headers) as http:
        started = time.perf_counter()
        url = f"{base}/api/events?limit={PAGE}"
        while True:
            async with http.get(url) as r:
                assert r.status == 200, r.status
                page = orjson.loads(await r.read())
            got += len(page["events"])
            if not page["has_more"]:
                break
            url = f"{base}/api/events?limit={PAGE}&after={page['next_cursor']}"
        return got, time.perf_counter() - started


#: The raw baselines: every column (the issue's baseline; since events hold their
#: webhook bodies too, that is the snapshot and the body), and the body beside the
#: columns an event is listed with (no snapshot; ``list_event_items`` reads five of them).
RAW_ALL = "SELECT * FROM events WHERE seq > {} ORDER BY seq LIMIT {}"
RAW_SAME = (
    "SELECT seq, id, type, article_id, topics, created_at, body FROM events "
    "WHERE seq > {} ORDER BY seq LIMIT {}"
)


async def pull_raw(
    db: h.Database, query: str = RAW_ALL, *, decode: bool = False
) -> tuple[int, float]:
    """``decode``: each row's event (its body) parsed as a consumer of the rows would,
    as ours parses each page (the two then do the same client work)."""
    got = 0
    if db.kind == "postgres":
        import asyncpg

        conn = await asyncpg.connect(db.url)
        try:
            started = time.perf_counter()
            after = 0
            while True:
                rows = await conn.fetch(query.format("$1", "$2"), after, PAGE)
                if decode:
                    for record in rows:
                        orjson.loads(record["body"])
                got += len(rows)
                if len(rows) < PAGE:
                    break
                after = rows[-1]["seq"]
            return got, time.perf_counter() - started
        finally:
            await conn.close()
    import aiosqlite

    async with aiosqlite.connect(db.url.removeprefix("sqlite:///")) as lite:
        started = time.perf_counter()
        position = 0
        while True:
            cursor = await lite.execute(query.format("?", "?"), (position, PAGE))
            page = list(await cursor.fetchall())
            if decode:
                body = [d[0] for d in cursor.description].index("body")
                for values in page:
                    orjson.loads(values[body])
            got += len(page)
            if len(page) < PAGE:
                break
            position = page[-1][0]
        return got, time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--clients", type=int, default=CLIENTS)
    args = parser.parse_args(argv)
    name = "SQLite" if args.backend == "sqlite" else "PostgreSQL"
    title = f"7. Pull and stream ({name})"
    if args.backend == "postgres" and not h.pg_available():
        h.skip(title, f"PostgreSQL not reachable at {h.PG_ADMIN}")
        return
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    rounds = max(h.ROUNDS, 5)
    ours: list[float] = []
    raw: list[float] = []
    same: list[float] = []
    decoded: list[float] = []
    with h.scratch_dir() as tmp:
        db = h.new_database(args.backend, tmp, "stream")
        try:
            token = h.create_token(db.url)
            with h.Service(db.url, env=SERVICE_ENV).start(tmp) as service:
                asyncio.run(seed(service.base, token, EVENTS))
                for round_no in range(h.ROUNDS):
                    count, seconds = asyncio.run(pull_ours(service.base, token))
                    assert count >= EVENTS, count
                    ours.append(count / seconds)
                    count, seconds = asyncio.run(pull_raw(db))
                    raw.append(count / seconds)
                    count, seconds = asyncio.run(pull_raw(db, RAW_SAME))
                    same.append(count / seconds)
                    count, seconds = asyncio.run(pull_raw(db, RAW_SAME, decode=True))
                    decoded.append(count / seconds)
                    print(
                        f"pull round {round_no + 1}/{h.ROUNDS}: ours {ours[-1]:,.0f}/s, "
                        f"raw {raw[-1]:,.0f}/s, raw (same columns) {same[-1]:,.0f}/s",
                        flush=True,
                    )
                streamed, rss = asyncio.run(
                    stream_rounds(service.base, token, rounds, service.rss_mb)
                )
        finally:
            db.drop()
    p50 = h.median([r[0] for r in streamed])
    p99 = h.median([r[1] for r in streamed])
    last = h.median([r[2] for r in streamed])
    # The first pass renders every event for the first time in this process (what a
    # partner catching up on old events meets); later ones find them rendered.
    cold, cold_raw, cold_same = ours[0], raw[0], same[0]
    warm, warm_raw = h.median(ours[1:] or ours), h.median(raw[1:] or raw)
    warm_same = h.median(same[1:] or same)
    cold_dec, warm_dec = decoded[0], h.median(decoded[1:] or decoded)
    h.report(
        title,
        f"python -m bench.stream --backend {args.backend}",
        ["", "ours", "baseline", "ratio / target", "result"],
        [
            [
                f"{CLIENTS} SSE clients, commit -> client: p50 / p99 / last (ms)",
                f"{p50:.1f} / {p99:.1f} / {last:.1f}",
                "none (absolute)",
                f"p99 <= {TARGET_P99_MS:.0f} ms",
                h.verdict(p99, TARGET_P99_MS, at_most=True),
            ],
            [
                f"pull {EVENTS:,} events, limit={PAGE}, first pass (events/s)",
                f"{cold:,.0f}",
                f"raw SELECT {cold_raw:,.0f}",
                f"{cold / cold_raw:.2f}x (>= {TARGET_PULL}x)",
                h.verdict(cold / cold_raw, TARGET_PULL),
            ],
            [
                f"pull {EVENTS:,} events, limit={PAGE}, later passes (events/s)",
                f"{warm:,.0f}",
                f"raw SELECT {warm_raw:,.0f}",
                f"{warm / warm_raw:.2f}x (>= {TARGET_PULL}x)",
                h.verdict(warm / warm_raw, TARGET_PULL),
            ],
            [
                "the same passes beside a raw SELECT of the columns the pull reads (first / later)",
                f"{cold:,.0f} / {warm:,.0f}",
                f"{cold_same:,.0f} / {warm_same:,.0f}",
                f"{cold / cold_same:.2f}x / {warm / warm_same:.2f}x",
                "(shown)",
            ],
            [
                "the same passes beside that raw SELECT decoding each event, as ours "
                "decodes each page (first / later)",
                f"{cold:,.0f} / {warm:,.0f}",
                f"{cold_dec:,.0f} / {warm_dec:,.0f}",
                f"{cold / cold_dec:.2f}x / {warm / warm_dec:.2f}x",
                "(shown)",
            ],
        ],
        [
            f"`syndicate serve` (one process, {name}); the {CLIENTS} clients are aiohttp "
            "connections of the bench process (uvloop), each reading lines; latency = "
            "perf_counter when a client has the event's data line minus when the POST's "
            f"201 came back. Medians of {rounds} rounds (one article each); per round p50/"
            "p99/last: "
            + ", ".join(f"{a:.0f}/{b:.0f}/{c:.0f}" for a, b, c in streamed)
            + f" ms. serve's RSS with the streams open: {rss:.0f} MB.",
            "Pull: each page's body decoded (orjson) for next_cursor; raw: the driver's "
            "rows (aiosqlite / asyncpg, one connection) of the same table: `SELECT *` "
            "(every column: since events store their webhook bodies, the snapshot and "
            "the body), and the body beside the event's listed columns (seq, id, type, "
            "article_id, topics, created_at, body). Per round ours/raw/raw same columns: "
            + ", ".join(
                f"{a:,.0f}/{b:,.0f}/{c:,.0f}" for a, b, c in zip(ours, raw, same, strict=True)
            )
            + " events/s.",
        ],
    )


if __name__ == "__main__":
    main()
