"""4. End-to-end latency: POST /api/articles -> the partner's receiver has the webhook,
p50/p99 over 1,000 articles sent at a steady 50/s."""

from __future__ import annotations

import argparse
import asyncio
import time

import aiohttp

from bench import _harness as h
from bench.fanout import receiver_reset, receiver_stats

TARGET_P50_MS = 20.0
TARGET_P99_MS = 100.0


async def one_round(
    base: str, token: str, port: int, count: int, rate: float, tag: str
) -> tuple[list[float], int]:
    await receiver_reset(port)
    sent: dict[str, float] = {}
    failures = 0
    async with aiohttp.ClientSession() as session:

        async def post(i: int) -> None:
            nonlocal failures
            payload = h.article(i, prefix=tag, size=2000)
            sent[payload["id"]] = time.time()
            try:
                await h.post_json(session, f"{base}/api/articles", token, payload, expect=(201,))
            except RuntimeError:
                failures += 1

        start = time.monotonic()
        tasks = []
        for i in range(count):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(post(i)))
        await asyncio.gather(*tasks)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        stats = await receiver_stats(port)
        if stats["count"] >= count:
            break
        await asyncio.sleep(0.1)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://{h.HOST}:{port}/stats?ids=1") as r:
            arrived = (await r.json())["ids"]
    latencies = [(arrived[k] - t) * 1000 for k, t in sent.items() if k in arrived]
    return latencies, failures + (count - len(latencies))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=50.0)
    args = parser.parse_args(argv)
    name = "SQLite" if args.backend == "sqlite" else "PostgreSQL"
    title = f"4. End-to-end latency ({name})"
    if args.backend == "postgres" and not h.pg_available():
        h.skip(title, f"PostgreSQL not reachable at {h.PG_ADMIN}")
        return
    p50s: list[float] = []
    p99s: list[float] = []
    lost = 0
    with h.scratch_dir() as tmp:
        receiver = h.Helper("bench.receiver", []).start(tmp)
        db = h.new_database(args.backend, tmp, "latency")
        env = {"SYNDICATE_ALLOW_PRIVATE_TARGETS": "1"}
        try:
            token = h.create_token(db.url)
            with h.Service(db.url, workers=args.workers, env=env).start(tmp) as service:

                async def subscribe() -> None:
                    async with aiohttp.ClientSession() as session:
                        url = f"http://{h.HOST}:{receiver.port}/partner?record=1"
                        await h.post_json(
                            session,
                            f"{service.base}/api/subscriptions",
                            token,
                            {"url": url, "topics": ["*"]},
                            expect=(201,),
                        )

                asyncio.run(subscribe())
                for round_no in range(h.ROUNDS):
                    print(f"round {round_no + 1}/{h.ROUNDS}", flush=True)
                    latencies, missing = asyncio.run(
                        one_round(
                            service.base,
                            token,
                            receiver.port,
                            args.count,
                            args.rate,
                            f"e2e{round_no}",
                        )
                    )
                    lost += missing
                    p50s.append(h.percentile(latencies, 50))
                    p99s.append(h.percentile(latencies, 99))
        finally:
            receiver.stop()
            db.drop()
    p50, p99 = h.median(p50s), h.median(p99s)
    h.report(
        title,
        f"python -m bench.latency --backend {args.backend} --workers {args.workers}",
        ["", "ours p50 ms", "target p50", "result", "ours p99 ms", "target p99", "result"],
        [
            [
                f"{args.count} articles at {args.rate:.0f}/s",
                p50,
                f"<= {TARGET_P50_MS:.0f} ms",
                h.verdict(p50, TARGET_P50_MS, at_most=True),
                p99,
                f"<= {TARGET_P99_MS:.0f} ms",
                h.verdict(p99, TARGET_P99_MS, at_most=True),
            ]
        ],
        [
            "Latency = wall clock when the receiver (a separate process on 127.0.0.1) got the "
            "webhook minus wall clock just before the POST was sent; one subscription (topics "
            f"*), `syndicate serve --workers {args.workers}`. Per-round p50/p99: "
            + ", ".join(f"{a:.1f}/{b:.1f}" for a, b in zip(p50s, p99s, strict=True))
            + f" ms. Missing or failed: {lost}.",
            "No baseline: the target is absolute.",
        ],
    )


if __name__ == "__main__":
    main()
