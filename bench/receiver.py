"""A partner endpoint for the push benchmarks: answers every POST with 204 and records
when each one arrived (wall clock, comparable across processes on this machine)."""

from __future__ import annotations

import argparse
import json
import time

from aiohttp import web

arrivals: list[float] = []
ids: dict[str, float] = {}


async def hook(request: web.Request) -> web.Response:
    body = await request.read()
    now = time.time()
    arrivals.append(now)
    if request.query.get("record") == "1":
        data = json.loads(body).get("data", {})
        ids.setdefault(str(data.get("id")), now)
    return web.Response(status=204)


async def stats(request: web.Request) -> web.Response:
    payload: dict[str, object] = {
        "count": len(arrivals),
        "first": arrivals[0] if arrivals else None,
        "last": arrivals[-1] if arrivals else None,
    }
    if request.query.get("ids") == "1":
        payload["ids"] = ids
    return web.json_response(payload)


async def reset(request: web.Request) -> web.Response:
    arrivals.clear()
    ids.clear()
    return web.Response(status=204)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    app.router.add_post("/{tail:.*}", hook)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
