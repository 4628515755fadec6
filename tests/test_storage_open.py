"""A file that is not a database: one line, exit 1, and the process ends."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_cli import run

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
    """It printed its error and then never exited (``run`` waits 60 s): the connection
    whose setup failed was left open, and its thread kept the process alive."""
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database, " * 200)
    code, out, err = await run(*command, "--database", f"sqlite:///{junk}")
    lines = err.strip().splitlines()
    assert (code, out) == (1, "")
    assert len(lines) == 1 and str(junk) in lines[0] and "not a database" in lines[0], lines
