"""3. Fan-out: one article to 1,000 webhook subscriptions on a receiver process on
127.0.0.1 (204), deliveries/s from the first arrival to the last, vs a raw aiohttp client
sending the same signed bodies with the same concurrency in the same run."""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import aiohttp

from bench import _harness as h
from syndicate.delivery import webhooks

TARGET = 0.5
SUBSCRIPTIONS = 1000
CONCURRENCY = 64
WAIT_SECONDS = 60.0
#: A round takes about a second, and single rounds of either side vary by a third on
#: a 2-core machine shared with the receiver: at least 5 rounds for the medians.
ROUNDS = max(h.ROUNDS, 5)


async def receiver_stats(port: int) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://{h.HOST}:{port}/stats") as r:
            result: dict[str, Any] = await r.json()
            return result


async def receiver_reset(port: int) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"http://{h.HOST}:{port}/reset") as r:
            assert r.status == 204


async def wait_for(port: int, count: int, timeout: float = WAIT_SECONDS) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        stats = await receiver_stats(port)
        if stats["count"] >= count or time.monotonic() > deadline:
            return stats
        await asyncio.sleep(0.02)


async def subscribe(base: str, token: str, port: int, n: int) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as session:
        sem = asyncio.Semaphore(16)

        async def one(i: int) -> dict[str, Any]:
            async with sem:
                result: dict[str, Any] = await h.post_json(
                    session,
                    f"{base}/api/subscriptions",
                    token,
                    {"url": f"http://{h.HOST}:{port}/hook/{i}", "topics": ["*"]},
                    expect=(201,),
                )
                return result

        return list(await asyncio.gather(*(one(i) for i in range(n))))


async def ours_round(base: str, token: str, port: int, n: int, tag: str) -> tuple[float, float]:
    """(deliveries/s first->last, seconds from POST to last)."""
    await receiver_reset(port)
    async with aiohttp.ClientSession() as session:
        started = time.time()
        await h.post_json(
            session, f"{base}/api/articles", token, h.article(0, prefix=tag), expect=(201,)
        )
    stats = await wait_for(port, n)
    if stats["count"] < n:
        raise RuntimeError(f"only {stats['count']} of {n} deliveries arrived in {WAIT_SECONDS}s")
    return (n - 1) / (stats["last"] - stats["first"]), stats["last"] - started


async def raw_round(subs: list[dict[str, Any]], body: bytes, port: int) -> float:
    """The same signed webhook POSTs from a bare aiohttp client, CONCURRENCY at a time."""
    await receiver_reset(port)
    connector = aiohttp.TCPConnector(limit=CONCURRENCY, limit_per_host=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:
        sem = asyncio.Semaphore(CONCURRENCY)

        async def send(i: int, sub: dict[str, Any]) -> None:
            msg_id = f"msg_{i + 1}"
            stamp = int(time.time())
            headers = {
                "Content-Type": "application/json",
                "webhook-id": msg_id,
                "webhook-timestamp": str(stamp),
                "webhook-signature": webhooks.signature_header(
                    [sub["secret"]], msg_id, stamp, body
                ),
            }
            async with sem, session.post(sub["url"], data=body, headers=headers) as r:
                await r.read()
                assert r.status == 204

        await asyncio.gather(*(send(i, s) for i, s in enumerate(subs)))
    stats = await wait_for(port, len(subs), 5)
    first: float = stats["first"]
    last: float = stats["last"]
    return (len(subs) - 1) / (last - first)


async def sample_body(base: str, token: str, port: int, subs: list[dict[str, Any]]) -> bytes:
    """One delivered body as the service signed it (same bytes for every subscription)."""
    del base, token, port, subs
    article = h.article(0, prefix="raw")
    return webhooks.encode(
        {
            "type": "article.published",
            "timestamp": "2026-01-01T00:00:00Z",
            "data": {**article, "guid": "tag:bench", "version": 1},
        }
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    name = "SQLite" if args.backend == "sqlite" else "PostgreSQL"
    title = f"3. Fan-out ({name})"
    if args.backend == "postgres" and not h.pg_available():
        h.skip(title, f"PostgreSQL not reachable at {h.PG_ADMIN}")
        return
    ours: list[float] = []
    total: list[float] = []
    raw: list[float] = []
    with h.scratch_dir() as tmp:
        receiver = h.Helper("bench.receiver", []).start(tmp)
        db = h.new_database(args.backend, tmp, "fanout")
        # The per-host cap is per process: split the raw client's concurrency between them.
        per_host = max(1, CONCURRENCY // args.workers)
        # One owner (the operator's webhooks on one host): its cap too.
        env = {
            "SYNDICATE_ALLOW_PRIVATE_TARGETS": "1",
            "SYNDICATE_MAX_PER_HOST": str(per_host),
            "SYNDICATE_MAX_PER_OWNER": str(per_host),
        }
        try:
            token = h.create_token(db.url)
            with h.Service(db.url, workers=args.workers, env=env).start(tmp) as service:
                subs = asyncio.run(subscribe(service.base, token, receiver.port, SUBSCRIPTIONS))
                body = asyncio.run(sample_body(service.base, token, receiver.port, subs))
                for round_no in range(ROUNDS):
                    rate, elapsed = asyncio.run(
                        ours_round(
                            service.base, token, receiver.port, SUBSCRIPTIONS, f"fan{round_no}"
                        )
                    )
                    ours.append(rate)
                    total.append(elapsed)
                    raw.append(asyncio.run(raw_round(subs, body, receiver.port)))
                    print(
                        f"round {round_no + 1}/{ROUNDS}: ours {rate:,.0f}/s, raw "
                        f"{raw[-1]:,.0f}/s ({rate / raw[-1]:.2f}x)",
                        flush=True,
                    )
        finally:
            receiver.stop()
            db.drop()
    ratio = h.median(ours) / h.median(raw)
    per_round = sorted(o / r for o, r in zip(ours, raw, strict=True))
    h.report(
        title,
        f"python -m bench.fanout --backend {args.backend} --workers {args.workers}",
        [
            "",
            "ours deliveries/s",
            "raw aiohttp deliveries/s",
            "ratio",
            "target",
            "result",
            "POST -> last delivery (s)",
        ],
        [
            [
                "1 article -> 1,000 webhooks",
                h.median(ours),
                h.median(raw),
                f"{ratio:.2f}x",
                f">= {TARGET}x",
                h.verdict(ratio, TARGET),
                h.median(total),
            ]
        ],
        [
            "Receiver: one aiohttp process on 127.0.0.1 answering 204; rate = 999 / (last "
            "arrival - first arrival) at the receiver, for both.",
            f"Ours: `syndicate serve --workers {args.workers}` with SYNDICATE_MAX_PER_HOST="
            f"SYNDICATE_MAX_PER_OWNER={CONCURRENCY} (all 1,000 URLs are on one host, of one "
            "owner, so both caps are set equal "
            f"to the raw client's concurrency of {CONCURRENCY}) and "
            "SYNDICATE_ALLOW_PRIVATE_TARGETS=1 (the receiver is on loopback).",
            f"Raw: one aiohttp ClientSession, {CONCURRENCY} concurrent POSTs of a body of the "
            "same shape, each signed with that subscription's secret (Standard Webhooks headers).",
            f"Rounds alternate ours and raw; each round's ratio ranged {per_round[0]:.2f}x to "
            f"{per_round[-1]:.2f}x.",
        ],
        rounds=ROUNDS,
    )


if __name__ == "__main__":
    main()
