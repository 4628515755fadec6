"""A partner endpoint for the push benchmarks: answers every POST with 204 and records
when each one arrived (wall clock, comparable across processes on this machine).

With ``--hosts N`` it also listens on N other loopback addresses (``host_address``; all
of 127.0.0.0/8 is loopback on Linux, no aliases needed), so that one process stands for
N receiver hosts, each with its own per-host cap in the service. ``--delay`` makes every
answer wait that long, as a real endpoint's work would."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import signal
import time

from aiohttp import web

arrivals: list[float] = []
ids: dict[str, float] = {}
#: (webhook-id, path) of each POST: a webhook's id is the event's, the same for every
#: subscriber, and the path tells subscribers apart; a repeat is a duplicate delivery.
#: A WebSub notification's body stands for its id.
seen: set[str] = set()
#: The same two by the path's first segment (``/hook/1`` -> "hook"), so that one kind
#: of push can be counted while another is still arriving: ``/stats?segment=hook``.
segments: dict[str, tuple[list[float], set[str]]] = {}
delay = 0.0
#: Requests being answered now, the most at once, and the sum over arrivals of how
#: many were in flight (its mean says how many of the sender's slots were in use).
inflight = {"now": 0, "peak": 0, "sum": 0}


def host_address(i: int) -> str:
    """The address of receiver host ``i`` (0-based): 127.0.1.1, 127.0.1.2, ...; 250 per
    third octet, up to 63,750 hosts."""
    return f"127.0.{1 + i // 250}.{1 + i % 250}"


async def hook(request: web.Request) -> web.Response:
    body = await request.read()
    now = time.time()
    # A WebSub notification has no id: its body (the feed as the event left it) is one.
    msg_id = request.headers.get("webhook-id") or hashlib.sha1(body).hexdigest()
    key = f"{msg_id} {request.path}"
    arrivals.append(now)
    seen.add(key)
    times, keys = segments.setdefault(request.path.split("/")[1], ([], set()))
    times.append(now)
    keys.add(key)
    if request.query.get("record") == "1":
        data = json.loads(body).get("data", {})
        ids.setdefault(str(data.get("id")), now)
    if not delay:
        return web.Response(status=204)
    inflight["now"] += 1
    inflight["peak"] = max(inflight["peak"], inflight["now"])
    inflight["sum"] += inflight["now"]
    try:
        await asyncio.sleep(delay)
    finally:
        inflight["now"] -= 1
    return web.Response(status=204)


async def stats(request: web.Request) -> web.Response:
    times, keys = arrivals, seen
    if "segment" in request.query:
        times, keys = segments.get(request.query["segment"], ([], set()))
    payload: dict[str, object] = {
        "count": len(times),
        "distinct": len(keys),
        "first": times[0] if times else None,
        "last": times[-1] if times else None,
        "peak_inflight": inflight["peak"],
        "mean_inflight": inflight["sum"] / len(arrivals) if arrivals else 0,
    }
    if request.query.get("ids") == "1":
        payload["ids"] = ids
    if request.query.get("timeline") == "1" and times:
        # Arrivals per 100 ms from the first: stalls show as runs of zeros.
        bins = [0] * (int((times[-1] - times[0]) * 10) + 1)
        for t in times:
            bins[int((t - times[0]) * 10)] += 1
        payload["timeline"] = bins
    return web.json_response(payload)


async def reset(request: web.Request) -> web.Response:
    arrivals.clear()
    ids.clear()
    seen.clear()
    segments.clear()
    inflight.update(peak=0, sum=0)
    return web.Response(status=204)


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    app.router.add_post("/{tail:.*}", hook)
    return app


async def serve(port: int, hosts: int) -> None:
    runner = web.AppRunner(make_app(), access_log=None)
    await runner.setup()
    try:
        for address in ["127.0.0.1", *(host_address(i) for i in range(hosts))]:
            await web.TCPSite(runner, address, port, backlog=1024).start()
        await asyncio.Event().wait()  # until SIGTERM
    finally:
        await runner.cleanup()


def main() -> None:
    global delay
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--hosts", type=int, default=0, help="also listen on N addresses")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before answering")
    args = parser.parse_args()
    delay = args.delay
    if not args.hosts:
        web.run_app(make_app(), host="127.0.0.1", port=args.port, access_log=None, print=None)
        return
    loop = asyncio.new_event_loop()
    task = loop.create_task(serve(args.port, args.hosts))
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        loop.run_until_complete(task)
    except asyncio.CancelledError:
        pass
    finally:
        loop.close()


if __name__ == "__main__":
    main()
