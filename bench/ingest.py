"""2. Ingest: single `POST /api/articles` (~2 KB HTML, 64 concurrent clients, wrk) and
`POST /api/articles/batch` (500 per batch), in articles/s, vs raw driver inserts of the
same rows into the same `articles` table in the same run (one commit per row; executemany
of 500 per commit)."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench import _harness as h

TARGET_SINGLE = 0.5
TARGET_BATCH = 0.2
BATCH = 500
CONCURRENCY = 64
#: 500 articles of ~2.3 KB JSON each exceed the default 1 MiB body limit.
SERVICE_ENV = {"SYNDICATE_MAX_BODY_SIZE": str(4 * 1024 * 1024)}

LUA = """\
local n = 0
function setup(thread)
  n = n + 1
  thread:set("tid", n)
end
local counter = 0
local head = %s
local mid = %s
local tail = %s
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer %s"
wrk.headers["Content-Type"] = "application/json"
request = function()
  counter = counter + 1
  local id = "%s-" .. tostring(tid) .. "-" .. tostring(counter)
  local body = head .. id .. mid .. id .. tail
  return wrk.format("POST", "/api/articles", nil, body)
end
"""


def lua_script(tmp: Path, token: str, tag: str) -> Path:
    sample = h.article(0, prefix="x")
    sample["id"] = "@@ID@@"
    sample["title"] = "Liver calcification, question @@ID@@"
    text = json.dumps(sample)
    head, mid, tail = text.split("@@ID@@")
    path = tmp / f"post-{tag}.lua"

    def lua_str(s: str) -> str:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'

    path.write_text(LUA % (lua_str(head), lua_str(mid), lua_str(tail), token, tag))
    return path


def raw_rows(articles: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    now = "2026-01-01T00:00:00.000000Z"
    return [
        (
            a["id"],
            f"tag:bench,2026:article/{a['id']}",
            a["id"],
            a["title"],
            a["content"][:200],
            a["content"],
            "html",
            json.dumps(a["topics"]),
            a["author"],
            None,
            None,
            None,
            a["published_at"],
            now,
            now,
            1,
            None,
        )
        for a in articles
    ]


COLUMNS = (
    "id, guid, slug, title, summary, content, content_type, topics, author, url, image, "
    "language, published_at, updated_at, created_at, version, deleted_at"
)


async def raw_sqlite(
    db_url: str, rows: list[tuple[Any, ...]], *, per_row_seconds: float, batches: int
) -> tuple[float, float]:
    """(rows/s one commit per row, rows/s executemany of BATCH) with aiosqlite."""
    import aiosqlite

    from storage import open_storage

    store = await open_storage(db_url)  # the real schema, indexes included
    await store.close()
    path = db_url.removeprefix("sqlite:///")
    sql = f"INSERT INTO articles ({COLUMNS}) VALUES ({', '.join('?' * 17)})"
    async with aiosqlite.connect(path) as db:
        await db.execute("PRAGMA journal_mode = WAL")
        await db.execute("PRAGMA synchronous = NORMAL")
        done = 0
        start = time.perf_counter()
        for row in rows[: -BATCH * batches]:
            await db.execute(sql, row)
            await db.commit()
            done += 1
            if time.perf_counter() - start > per_row_seconds:
                break
        single = done / (time.perf_counter() - start)
        rest = rows[-BATCH * batches :]
        start = time.perf_counter()
        count = 0
        for i in range(batches):
            chunk = rest[i * BATCH : (i + 1) * BATCH]
            await db.executemany(sql, chunk)
            await db.commit()
            count += len(chunk)
        batch = count / (time.perf_counter() - start)
    return single, batch


async def raw_postgres(
    db_url: str, rows: list[tuple[Any, ...]], *, per_row_seconds: float, batches: int, pool_max: int
) -> tuple[float, float]:
    """The same with asyncpg: autocommit INSERT per row from CONCURRENCY tasks over a pool
    the size of the service's, and executemany of BATCH in one transaction."""
    import asyncpg

    from storage import open_storage

    store = await open_storage(db_url)
    await store.close()
    sql = f"INSERT INTO articles ({COLUMNS}) VALUES ({', '.join(f'${i}' for i in range(1, 18))})"
    from datetime import datetime

    def convert(row: tuple[Any, ...]) -> tuple[Any, ...]:
        values = list(row)
        for i in (12, 13, 14):
            values[i] = datetime.fromisoformat(values[i].replace("Z", "+00:00"))
        values[7] = json.loads(values[7])
        return tuple(values)

    conv = [convert(r) for r in rows]
    pool = await asyncpg.create_pool(db_url, min_size=pool_max, max_size=pool_max)
    try:
        async with pool.acquire() as conn:
            types = await conn.fetch(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = 'articles'"
            )
        if any(t["column_name"] == "topics" and t["data_type"] in ("jsonb", "json") for t in types):
            conv = [(*r[:7], json.dumps(r[7]), *r[8:]) for r in conv]
        index = 0
        deadline = time.perf_counter() + per_row_seconds
        done = 0

        async def client() -> None:
            nonlocal index, done
            while time.perf_counter() < deadline and index < len(conv) - BATCH * batches:
                row = conv[index]
                index += 1
                await pool.execute(sql, *row)
                done += 1

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
        single = done / (time.perf_counter() - start)
        rest = conv[-BATCH * batches :]
        start = time.perf_counter()
        count = 0
        async with pool.acquire() as conn:
            for i in range(batches):
                chunk = rest[i * BATCH : (i + 1) * BATCH]
                async with conn.transaction():
                    await conn.executemany(sql, chunk)
                count += len(chunk)
        batch = count / (time.perf_counter() - start)
    finally:
        await pool.close()
    return single, batch


async def post_batches(
    base: str, token: str, articles: list[dict[str, Any]], concurrency: int
) -> float:
    # Bodies encoded before the clock starts, as wrk's script builds its requests
    # up front: the client shares the service's 2 cores, and json.dumps of 500
    # articles (1.3 MB) is ~6 ms of its CPU per request that is not the service's.
    chunks = [
        (len(articles[i : i + BATCH]), json.dumps({"articles": articles[i : i + BATCH]}).encode())
        for i in range(0, len(articles), BATCH)
    ]
    queue = list(reversed(chunks))
    timeout = aiohttp.ClientTimeout(total=120)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def worker() -> None:
            while queue:
                count, body = queue.pop()
                async with session.post(
                    f"{base}/api/articles/batch", data=body, headers=headers
                ) as response:
                    answer = await response.read()
                    if response.status not in (200, 201):
                        raise RuntimeError(f"batch: {response.status} {answer[:300]!r}")
                results = json.loads(answer)["results"]
                created = sum(1 for r in results if r.get("status") == "created")
                assert created == count, results[:3]

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return len(articles) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    # One process per core, as for feed reads: the deployment we recommend (docs).
    parser.add_argument("--workers", type=int, default=h.cores())
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args(argv)
    title = f"2. Ingest ({'SQLite' if args.backend == 'sqlite' else 'PostgreSQL'})"
    if not h.have("wrk"):
        h.skip(title, "wrk is not installed (apt-get install wrk); nothing measured")
        return
    if args.backend == "postgres" and not h.pg_available():
        h.skip(title, f"PostgreSQL not reachable at {h.PG_ADMIN}")
        return
    results: dict[str, list[float]] = {"single": [], "batch": [], "raw1": [], "rawN": []}
    failures = 0
    with h.scratch_dir() as tmp:
        for round_no in range(h.ROUNDS):
            print(f"round {round_no + 1}/{h.ROUNDS}", flush=True)
            db = h.new_database(args.backend, tmp, f"ingest{round_no}")
            try:
                token = h.create_token(db.url)
                with h.Service(db.url, workers=args.workers, env=SERVICE_ENV).start(tmp) as service:
                    script = lua_script(tmp, token, f"r{round_no}")
                    single = h.wrk(
                        f"{service.base}/api/articles",
                        connections=CONCURRENCY,
                        duration=args.duration,
                        script=script,
                    )
                    failures += single.non_2xx_3xx + single.errors
                    results["single"].append(
                        single.rps * (1 - single.non_2xx_3xx / max(1, single.requests))
                    )
                    batch_articles = [
                        h.article(i, prefix=f"b{round_no}") for i in range(BATCH * args.batches)
                    ]
                    results["batch"].append(
                        asyncio.run(
                            post_batches(service.base, token, batch_articles, concurrency=2)
                        )
                    )
            finally:
                db.drop()
            raw_db = h.new_database(args.backend, tmp, f"raw{round_no}")
            try:
                rows = raw_rows(
                    [
                        h.article(i, prefix=f"r{round_no}")
                        for i in range(200_000 if args.backend == "sqlite" else 150_000)
                    ]
                )
                if args.backend == "sqlite":
                    r1, rn = asyncio.run(
                        raw_sqlite(
                            raw_db.url, rows, per_row_seconds=args.duration, batches=args.batches
                        )
                    )
                else:
                    r1, rn = asyncio.run(
                        raw_postgres(
                            raw_db.url,
                            rows,
                            per_row_seconds=args.duration,
                            batches=args.batches,
                            pool_max=10,
                        )
                    )
                results["raw1"].append(r1)
                results["rawN"].append(rn)
            finally:
                raw_db.drop()
    m = {k: h.median(v) for k, v in results.items()}
    r_single = m["single"] / m["raw1"]
    r_batch = m["batch"] / m["rawN"]
    driver = "aiosqlite" if args.backend == "sqlite" else "asyncpg"
    h.report(
        title,
        f"python -m bench.ingest --backend {args.backend} --workers {args.workers}",
        ["mode", "ours articles/s", f"raw {driver} rows/s", "ratio", "target", "result"],
        [
            [
                "single POST (64 clients)",
                m["single"],
                m["raw1"],
                f"{r_single:.2f}x",
                f">= {TARGET_SINGLE}x",
                h.verdict(r_single, TARGET_SINGLE),
            ],
            [
                f"batch POST ({BATCH}/batch)",
                m["batch"],
                m["rawN"],
                f"{r_batch:.2f}x",
                f">= {TARGET_BATCH}x",
                h.verdict(r_batch, TARGET_BATCH),
            ],
        ],
        [
            f"Ours: `syndicate serve --workers {args.workers}`; single POSTs by wrk -t2 "
            f"-c{CONCURRENCY} -d{args.duration}s with a Lua script (unique ids, ~2 KB seed HTML); "
            f"batches: {args.batches} x {BATCH} articles, 2 concurrent requests "
            "(SYNDICATE_MAX_BODY_SIZE=4 MiB: 500 such articles exceed the default 1 MiB). "
            f"Failed requests: {failures}.",
            f"Raw: {driver} INSERTs of the same rows into the same `articles` table (real "
            "schema and indexes), one commit per row"
            + (
                " (one connection, in sequence)"
                if args.backend == "sqlite"
                else f" ({CONCURRENCY} tasks over a pool of 10)"
            )
            + f", then executemany of {BATCH} per commit. The service does far more per "
            "article (auth, validation, HTML sanitising, slug, topic index, event row).",
            "Per round (ours / raw): single "
            + ", ".join(
                f"{a:,.0f} / {b:,.0f}"
                for a, b in zip(results["single"], results["raw1"], strict=True)
            )
            + "; batch "
            + ", ".join(
                f"{a:,.0f} / {b:,.0f}"
                for a, b in zip(results["batch"], results["rawN"], strict=True)
            )
            + ". With 2 processes the kernel (SO_REUSEPORT) puts each batch connection in "
            "one of them: both in one process is markedly slower than one in each.",
        ],
    )


if __name__ == "__main__":
    main()
