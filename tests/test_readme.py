"""The README's and the operations guide's command blocks, run as a user pastes them.

Every fenced block is ```sh, ```text or ```json; every ```sh block is run, in order,
in one bash session from the repository folder, unless the line before it is a
``<!-- not run: reason -->`` marker (starting the service, the suite, Docker). The
README's commands run against a ``syndicate serve`` this test starts on a free port
of 127.0.0.1 (the text's ``127.0.0.1:8080`` and the example receiver's ``9000`` are
replaced by the ports used), with ``TOKEN`` exported as a user is told to, and
loopback targets allowed as the README says to start it for these examples.
``curl`` fails on an HTTP error (``--fail-with-body``) and every command must succeed.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest
from conftest import clean_env, free_port

from storage import open_storage

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
NOT_RUN = re.compile(r"<!-- not run: [^>]+ -->\n\Z")
PRELUDE = """set -euo pipefail
curl() { command curl --fail-with-body --max-time 10 "$@"; }
"""


@dataclass(frozen=True)
class Block:
    line: int
    language: str
    text: str
    run: bool


def blocks(path: Path) -> list[Block]:
    text = path.read_text("utf-8")
    found = []
    for match in FENCE.finditer(text):
        before = text[: match.start()]
        found.append(
            Block(
                line=before.count("\n") + 1,
                language=match.group(1),
                text=match.group(2),
                run=match.group(1) == "sh" and not NOT_RUN.search(before),
            )
        )
    return found


def script(path: Path, replacements: dict[str, str], having: str = "") -> str:
    """The run blocks of ``path`` (those holding ``having``) as one bash script."""
    parts = [PRELUDE]
    for block in blocks(path):
        if not block.run or having not in block.text:
            continue
        text = block.text
        for old, new in replacements.items():
            text = text.replace(old, new)
        parts.append(f"printf '\\n### {path.name} line {block.line}\\n'\n{text}")
    return "\n".join(parts)


async def run_bash(source: str, env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """Run ``source`` in its own process group (its background jobs are killed after)."""
    proc = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        source,
        cwd=cwd,
        env=env,
        start_new_session=True,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode is not None
    return proc.returncode, out.decode()


@pytest.mark.parametrize("name", ["README.md", "docs/operations.md"])
def test_every_block_is_tagged_and_skips_say_why(name: str) -> None:
    found = blocks(ROOT / name)
    assert found
    for block in found:
        assert block.language in ("sh", "text", "json"), f"{name}:{block.line} untagged"
    run = [b for b in found if b.run]
    assert run, "some commands are run"


async def test_readme_commands_run_as_written(tmp_path: Path) -> None:
    port, receiver_port = free_port(), free_port()
    database = f"sqlite:///{tmp_path / 'syndicate.db'}"
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "syndicate",
        "serve",
        "--port",
        str(port),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=clean_env(SYNDICATE_DATABASE=database, SYNDICATE_ALLOW_PRIVATE_TARGETS="1"),
    )
    assert server.stdout is not None
    banner = ""
    try:
        while "listening on" not in banner:
            line = await asyncio.wait_for(server.stdout.readline(), timeout=30)
            assert line, "serve exited early:\n" + banner
            banner += line.decode()
        token = re.findall(r"\bsyn_[A-Za-z0-9_-]{20,}\b", banner)[0]
        source = script(
            ROOT / "README.md",
            {
                "127.0.0.1:8080": f"127.0.0.1:{port}",
                "127.0.0.1:9000": f"127.0.0.1:{receiver_port}",
                "receiver.py 9000": f"receiver.py {receiver_port}",
            },
        )
        env = clean_env(TOKEN=token, SYNDICATE_DATABASE=database)
        code, out = await run_bash(source, env, ROOT)
    finally:
        server.send_signal(signal.SIGTERM)
        await asyncio.wait_for(server.wait(), timeout=20)
    assert code == 0, out[-3000:]
    assert "Traceback" not in out, out
    for expected in (
        "HTTP/1.1 201 Created",  # the walkthrough's POST
        "HTTP/1.1 204 No Content",  # its DELETE
        "imported: ",  # the bulk import
        '"secret":"whsec_',  # the webhook subscription
        "receiver: POST /hooks/syndicate",  # its ping, received
        '"delivered":true',
        "HTTP/1.1 202 Accepted",  # the WebSub subscription
        "receiver: GET /websub/123?hub.mode=subscribe",  # its verification
        "HTTP/1.1 304 Not Modified",  # the conditional feed read
    ):
        assert expected in out, f"{expected!r} not in:\n{out[-3000:]}"


async def test_operations_backup_commands_run_as_written(tmp_path: Path) -> None:
    """From the folder the service runs in: the backup is a working database."""
    store = await open_storage(f"sqlite:///{tmp_path / 'data' / 'syndicate.db'}")
    await store.close()
    source = script(ROOT / "docs/operations.md", {}, having="backup/")
    assert source.count("mkdir -p backup") == 2, "both ways are run"
    code, out = await run_bash(source, clean_env(), tmp_path)
    assert code == 0, out
    backup = tmp_path / "backup" / f"syndicate-{date.today():%Y-%m-%d}.db"
    with sqlite3.connect(backup) as db:
        assert db.execute("SELECT count(*) FROM tokens").fetchone() == (0,)


@pytest.mark.parametrize("backend", ["postgres"])
async def test_operations_pg_dump_and_restore_run_as_written(
    database_url: str, tmp_path: Path
) -> None:
    store = await open_storage(database_url)
    await store.close()
    source = script(ROOT / "docs/operations.md", {}, having="pg_")
    assert "pg_dump" in source and "pg_restore" in source
    code, out = await run_bash(source, clean_env(SYNDICATE_DATABASE=database_url), tmp_path)
    assert code == 0, out
    assert (tmp_path / "syndicate.dump").stat().st_size > 0
