"""A bare aiohttp server for the feed benchmark's reference: the same bytes, the same
ETag, no middleware, no database. It shows what the framework itself reaches here, so
the gap between it and `syndicate serve` is what the service adds. Run N of them on one
port (SO_REUSEPORT), like `syndicate serve --workers N`, on the event loop the service
runs on by default (uvloop where installed), so the two differ only in what the
service does per request. Each ``--feed PATH FILE ETAG`` serves FILE's bytes at PATH.

``--processes N`` starts N-1 more of itself, as `syndicate serve --workers N` does: the
benchmark starts the first in a session of its own, like the service, so that Linux's
scheduler (autogroups: one CPU share per session) treats the two alike."""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from syndicate.core.settings import default_event_loop


def make_app(feeds: dict[str, tuple[bytes, str]]) -> web.Application:
    """One route per feed path, answering 200 with the bytes or 304 to its ETag."""

    def handler(body: bytes, etag: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def feed(request: web.Request) -> web.Response:
            if request.headers.get("If-None-Match") == etag:
                return web.Response(status=304, headers={"ETag": etag})
            return web.Response(
                body=body, headers={"ETag": etag, "Content-Type": "application/rss+xml"}
            )

        return feed

    async def stats(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    for path, (body, etag) in feeds.items():
        app.router.add_get(path, handler(body, etag))
    app.router.add_get("/stats", stats)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--feed", nargs=3, action="append", required=True, metavar=("PATH", "FILE", "ETAG")
    )
    parser.add_argument("--event-loop", default=default_event_loop())
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args()
    same = ["--port", str(args.port), "--event-loop", args.event_loop]
    for feed in args.feed:
        same += ["--feed", *feed]
    children = [
        subprocess.Popen([sys.executable, "-m", "bench.bare_feed", *same])
        for _ in range(args.processes - 1)
    ]
    app = make_app({path: (Path(file).read_bytes(), etag) for path, file, etag in args.feed})
    loop: asyncio.AbstractEventLoop
    if args.event_loop == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    try:
        web.run_app(
            app,
            host="127.0.0.1",
            port=args.port,
            reuse_port=True,
            access_log=None,
            print=None,
            loop=loop,
        )
    finally:
        for child in children:
            child.terminate()
            child.wait(timeout=10)


if __name__ == "__main__":
    main()
