"""Run the W3C Feed Validator (w3c/feedvalidator) over the feeds the service serves.

A development aid, not a test: the validator is not a dependency and is never
committed. Get it and its three libraries once, outside the repository::

    git clone https://github.com/w3c/feedvalidator /tmp/feedvalidator
    python3 -m venv /tmp/fv-venv && /tmp/fv-venv/bin/pip install lxml html5lib rdflib

Then, from the repository root::

    .venv/bin/python tools/validate_feeds.py --validator /tmp/feedvalidator \\
        --python /tmp/fv-venv/bin/python [--save DIR] [URL ...]

With URLs, those feeds are validated. Without, the adversarial corpus
(tests/fixtures/corpus.json) is posted to the service on a new SQLite database
and every topic's RSS and Atom feed (and ``all``) is validated, fetched by the
validator itself over HTTP, so the Content-Type and the self link are checked too.
Prints each feed's errors and warnings (the online validator's level, "AA");
exits 1 when any feed has an error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "fixtures" / "corpus.json"

#: Runs under the validator's Python: one JSON line per logged event.
_RUNNER = """
import json, sys, urllib.request  # feedvalidator uses urllib.request without importing it
sys.path.insert(0, sys.argv[1] + "/src")
import feedvalidator
from feedvalidator import compatibility
from feedvalidator.formatter.text_plain import Formatter
from feedvalidator.logging import Error
for url in sys.argv[2:]:
    try:
        events = feedvalidator.validateURL(url, firstOccurrenceOnly=1)["loggedEvents"]
    except feedvalidator.logging.ValidationFailure as failure:
        events = [failure.event]
    for event, text in zip(compatibility.AA(events), Formatter(compatibility.AA(events))):
        level = "error" if isinstance(event, Error) else "warning"
        print(json.dumps({"url": url, "level": level, "kind": type(event).__name__, "text": text}))
    print(json.dumps({"url": url, "done": True}))
"""


async def validate(validator: Path, python: str, urls: list[str]) -> list[dict[str, Any]]:
    proc = await asyncio.create_subprocess_exec(
        python, "-c", _RUNNER, str(validator), *urls, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"the validator failed (exit {proc.returncode})")
    return [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]


def report(urls: list[str], events: list[dict[str, Any]]) -> int:
    """Print the events per feed; the number of errors."""
    errors = 0
    for url in urls:
        found = [e for e in events if e["url"] == url and "level" in e]
        done = any(e["url"] == url and e.get("done") for e in events)
        counts = {level: sum(e["level"] == level for e in found) for level in ("error", "warning")}
        state = f"{counts['error']} errors, {counts['warning']} warnings"
        state = state if done else "not validated"
        print(f"{url}: {state}")
        for event in found:
            print(f"  {event['level']:7} {event['kind']}: {event['text']}")
        errors += counts["error"] + (0 if done else 1)
    return errors


async def serve_corpus(validator: Path, python: str, save: Path | None) -> int:
    """Post the corpus to the service on a new database, then validate its feeds."""
    import aiohttp
    from aiohttp import web

    from storage import open_storage
    from syndicate.core.settings import Settings
    from syndicate.web.app import create_app
    from syndicate.web.auth import create_token

    corpus = json.loads(CORPUS.read_text("utf-8"))
    with tempfile.TemporaryDirectory() as tmp:
        store = await open_storage(f"sqlite:///{tmp}/corpus.db")
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        runner = web.AppRunner(create_app(Settings(host="127.0.0.1", port=port), storage=store))
        try:
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            token, _ = await create_token(store, name="validate-feeds", role="operator")
            async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
                await _post_corpus(http, base, corpus)
                slugs = [t["slug"] for t in corpus["topics"]] + ["all"]
                urls = [f"{base}/feeds/{slug}.{fmt}" for slug in slugs for fmt in ("rss", "atom")]
                if save is not None:
                    await _save(http, urls, save)
            return report(urls, await validate(validator, python, urls))
        finally:
            await runner.cleanup()
            await store.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _post_corpus(http: Any, base: str, corpus: dict[str, Any]) -> None:
    for topic in corpus["topics"]:
        body = {"title": topic["title"], "description": topic["description"]}
        async with http.put(f"{base}/api/topics/{topic['slug']}", json=body) as resp:
            resp.raise_for_status()
    for article in corpus["articles"]:
        async with http.post(f"{base}/api/articles", json=article) as resp:
            if resp.status != 201:
                print(f"{article['id']} refused: {resp.status} {await resp.text()}")


async def _save(http: Any, urls: list[str], directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for url in urls:
        async with http.get(url) as resp:
            (directory / url.rsplit("/", 1)[1]).write_bytes(await resp.read())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--validator", type=Path, required=True, help="w3c/feedvalidator checkout")
    parser.add_argument("--python", default=sys.executable, help="a Python with its libraries")
    parser.add_argument("--save", type=Path, help="also save the corpus feeds in this directory")
    parser.add_argument("urls", nargs="*", help="feeds to validate (default: serve the corpus)")
    args = parser.parse_args()
    if not (args.validator / "src" / "feedvalidator").is_dir():
        parser.error(f"{args.validator} is not a w3c/feedvalidator checkout (no src/feedvalidator)")
    if args.urls:
        errors = report(args.urls, asyncio.run(validate(args.validator, args.python, args.urls)))
    else:
        sys.path.insert(0, str(ROOT))
        errors = asyncio.run(serve_corpus(args.validator, args.python, args.save))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
