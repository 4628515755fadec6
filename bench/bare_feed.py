"""A bare aiohttp server for the feed benchmark's reference: the same bytes, the same
ETag, no middleware, no database. It shows what the framework itself reaches here, so
the gap between it and `syndicate serve` is what the service adds. Run N of them on one
port (SO_REUSEPORT), like `syndicate serve --workers N`, on the event loop the service
runs on by default (uvloop where installed), so the two differ only in what the
service does per request."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from aiohttp import web

from syndicate.core.settings import default_event_loop


def make_app(body: bytes, etag: str) -> web.Application:
    async def feed(request: web.Request) -> web.Response:
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(
            body=body, headers={"ETag": etag, "Content-Type": "application/rss+xml"}
        )

    async def stats(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/feeds/liver-health.rss", feed)
    app.router.add_get("/stats", stats)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--body", type=Path, required=True)
    parser.add_argument("--etag", required=True)
    parser.add_argument("--event-loop", default=default_event_loop())
    args = parser.parse_args()
    app = make_app(args.body.read_bytes(), args.etag)
    loop: asyncio.AbstractEventLoop
    if args.event_loop == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    web.run_app(
        app,
        host="127.0.0.1",
        port=args.port,
        reuse_port=True,
        access_log=None,
        print=None,
        loop=loop,
    )


if __name__ == "__main__":
    main()
