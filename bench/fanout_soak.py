"""10. Memory over a long fan-out (issue 23): the largest fan-out of benchmark 8
(100,000 webhooks on 1,000 receiver hosts, 10,000 WebSub subscribers) run for 10
minutes under BENCH_SCALE=1 (else its default scale, 10,000 / 100 / 1,000, for 2): a
new article as soon as the last one's deliveries have all arrived, webhook and WebSub
articles in turn, while serve's resident set (VmRSS, every 5 s) is sampled. Memory is
flat when what serve holds after the first article (warm: caches, pools, the
dispatcher's tables filled) is what it holds at the end: the target is the last sample
within 10% of the first warm one, and the most it held within 20% (``TARGET_GROWTH``,
``TARGET_PEAK``). Duplicates are counted at the receivers over the whole run.

The setup is benchmark 8's (bench/fanout_scale.py): the subscriptions copied in SQL,
the receivers one process on 127.0.x.y answering after 50 ms."""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import aiohttp

from bench import _harness as h
from bench.fanout_scale import (
    SCALES,
    SERVICE_ENV,
    WEBHOOK_TOPIC,
    WEBSUB_TOPIC,
    receiver_get,
    status_mb,
    subscribed,
)

TITLE = "10. Memory over a long fan-out"
#: The last sample at most this much above the first warm one, the peak at most TARGET_PEAK.
TARGET_GROWTH = 1.10
TARGET_PEAK = 1.20
SAMPLE_SECONDS = 5.0


def rss_mb(pids: list[int]) -> float:
    """VmRSS summed over the service's processes, now."""
    return status_mb(pids, "VmRSS")


async def soak(
    service: h.Service, token: str, port: int, sizes: tuple[int, int], seconds: float
) -> tuple[list[tuple[float, float]], list[float], int, int, int]:
    """Articles back to back for ``seconds``: the RSS samples (seconds since the start,
    MB), the RSS after each article's deliveries, articles posted, deliveries arrived,
    duplicates."""
    webhooks, websubs = sizes
    samples: list[tuple[float, float]] = []
    after_each: list[float] = []
    start = time.monotonic()
    await receiver_get(port, "/reset", "POST")

    async def sample() -> None:
        while True:
            samples.append((time.monotonic() - start, rss_mb(service.pids())))
            await asyncio.sleep(SAMPLE_SECONDS)

    sampler = asyncio.create_task(sample())
    expected = posted = 0
    try:
        async with aiohttp.ClientSession() as session:
            while time.monotonic() - start < seconds:
                kind = "webhook" if posted % 2 == 0 else "websub"
                topic = WEBHOOK_TOPIC if kind == "webhook" else WEBSUB_TOPIC
                await h.post_json(
                    session,
                    f"{service.base}/api/articles",
                    token,
                    h.article(posted, prefix="soak", topic=topic),
                )
                posted += 1
                expected += webhooks if kind == "webhook" else websubs
                deadline = time.monotonic() + 300
                while time.monotonic() < deadline:
                    stats = await receiver_get(port, "/stats")
                    if stats["distinct"] >= expected:
                        break
                    await asyncio.sleep(0.2)
                else:
                    print(f"article {posted}: only {stats['distinct']:,} of {expected:,}")
                    break
                after_each.append(rss_mb(service.pids()))
    finally:
        sampler.cancel()
    samples.append((time.monotonic() - start, rss_mb(service.pids())))
    await asyncio.sleep(1.0)  # a duplicate may come after the last first delivery
    stats = await receiver_get(port, "/stats")
    return samples, after_each, posted, stats["distinct"], stats["count"] - stats["distinct"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument(
        "--minutes", type=float, default=10.0 if os.environ.get("BENCH_SCALE") == "1" else 2.0
    )
    parser.add_argument(
        "--scale",
        choices=sorted(SCALES),
        default="large" if os.environ.get("BENCH_SCALE") == "1" else "default",
    )
    args = parser.parse_args(argv)
    name = "SQLite" if args.backend == "sqlite" else "PostgreSQL"
    webhooks, _, websubs = SCALES[args.scale]
    title = f"{TITLE} ({name}, {webhooks:,} webhooks + {websubs:,} WebSub, {args.minutes:g} min)"
    if args.backend == "postgres" and not h.pg_available():
        h.skip(title, f"PostgreSQL not reachable at {h.PG_ADMIN}")
        return
    with (
        h.scratch_dir() as tmp,
        subscribed(args.backend, tmp, "fansoak", SCALES[args.scale]) as (
            db,
            token,
            receiver,
            _,
        ),
    ):
        with h.Service(db.url, env=SERVICE_ENV).start(tmp) as service:
            idle = rss_mb(service.pids())
            samples, after_each, posted, arrived, duplicates = asyncio.run(
                soak(service, token, receiver.port, (webhooks, websubs), args.minutes * 60)
            )
    warm = after_each[0] if after_each else float("nan")
    last = samples[-1][1]
    peak = max(mb for _, mb in samples)
    half = [(t, mb) for t, mb in samples if t >= samples[-1][0] / 2]
    slope = slope_per_minute(half)
    minute = {m: nearest(samples, m * 60.0) for m in (1, 5, 10) if m * 60 <= samples[-1][0]}
    h.report(
        title,
        f"python -m bench.fanout_soak --backend {args.backend} --scale {args.scale} "
        f"--minutes {args.minutes:g}",
        ["measure", "MB", "against", "ratio", "target", "result"],
        [
            [
                "serve RSS at the end",
                last,
                f"warm {warm:.0f} MB",
                f"{last / warm:.2f}x",
                f"<= {TARGET_GROWTH}x",
                h.verdict(last / warm, TARGET_GROWTH, at_most=True),
            ],
            [
                "serve RSS, most sampled",
                peak,
                f"warm {warm:.0f} MB",
                f"{peak / warm:.2f}x",
                f"<= {TARGET_PEAK}x",
                h.verdict(peak / warm, TARGET_PEAK, at_most=True),
            ],
            ["slope over the second half (MB/min)", slope, "", "", "", ""],
        ],
        [
            f"{posted} articles back to back (webhook and WebSub in turn): {arrived:,} "
            f"deliveries arrived, {duplicates} duplicates (same webhook-id and path twice).",
            "RSS (VmRSS of serve): "
            + ", ".join(
                [
                    f"{idle:.0f} MB after start",
                    f"{warm:.0f} MB after the first article (warm)",
                    *[f"{mb:.0f} MB at minute {m}" for m, mb in minute.items()],
                    f"{last:.0f} MB at the end",
                ]
            )
            + "; after each article: "
            + " ".join(f"{mb:.0f}" for mb in after_each)
            + ".",
        ],
        rounds=1,
    )


def nearest(samples: list[tuple[float, float]], at: float) -> float:
    return min(samples, key=lambda s: abs(s[0] - at))[1]


def slope_per_minute(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of RSS over time, in MB a minute."""
    if len(samples) < 2:
        return float("nan")
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_m = sum(m for _, m in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    cov = sum((t - mean_t) * (m - mean_m) for t, m in samples)
    return cov / var * 60 if var else float("nan")


if __name__ == "__main__":
    main()
