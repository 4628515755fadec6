"""A file that is not a database: one line, exit 1, and the process ends."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from conftest import clean_env

from storage import StorageError, open_storage


async def test_opening_a_file_that_is_no_database_fails_cleanly(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database, " * 200)
    with pytest.raises(StorageError, match="not a database"):
        await open_storage(f"sqlite:///{junk}")


@pytest.mark.parametrize("command", [["token", "list"], ["deliveries"]])
async def test_the_cli_exits_on_a_file_that_is_no_database(
    tmp_path: Path, command: list[str]
) -> None:
    """It printed its error and then never exited: the connection whose setup failed
    was left open, and its thread kept the process alive."""
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database, " * 200)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "syndicate",
        *command,
        "--database",
        f"sqlite:///{junk}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=clean_env(),
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=20)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail("the command printed its error but did not exit")
    lines = err.decode().strip().splitlines()
    assert proc.returncode == 1 and out == b""
    assert len(lines) == 1 and str(junk) in lines[0] and "not a database" in lines[0], lines
