"""docker-compose.yml and the Dockerfile stay honest (Docker itself does not run here)."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from conftest import clean_env

from storage import open_storage

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def test_compose_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "api", "worker"}

    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    volume = postgres["volumes"][0].split(":")[0]
    assert volume in compose["volumes"], "PostgreSQL data lives in a named volume"

    env = postgres["environment"]
    for name in ("api", "worker"):
        service = services[name]
        assert service["build"] == "."
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        dsn = urlsplit(service["environment"]["SYNDICATE_DATABASE"])
        assert dsn.scheme == "postgresql" and dsn.hostname == "postgres"
        assert (dsn.username, dsn.password, dsn.path.lstrip("/")) == (
            env["POSTGRES_USER"],
            env["POSTGRES_PASSWORD"],
            env["POSTGRES_DB"],
        )
    assert services["api"]["command"] == ["serve"]
    assert services["api"]["ports"] == ["8080:8080"]
    assert services["api"]["environment"]["SYNDICATE_HOST"] == "0.0.0.0"
    worker = services["worker"]
    assert worker["command"] == ["worker"]
    assert "ports" not in worker and "container_name" not in worker, (
        "a worker must be scalable with --scale worker=N"
    )


def test_dockerfile() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.\d+-slim", text, re.MULTILINE)
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    assert 'ENTRYPOINT ["syndicate"]' in text
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for package in project["tool"]["setuptools"]["packages"]["find"]["include"]:
        name = package.rstrip("*")
        assert f"COPY {name} ./{name}" in text, f"the image must contain {name}/"
    assert project["project"]["scripts"]["syndicate"] == "syndicate.cli:main"


async def test_worker_command_migrates_and_idles(database_url: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "syndicate",
        "worker",
        "--create",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=clean_env(SYNDICATE_DATABASE=database_url),
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
    while line and b"ready" not in line:
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
    assert b"worker ready" in line
    store = await open_storage(database_url)
    try:
        assert await store.count_tokens() == 0, "a worker never creates tokens"
        await store.ping()
    finally:
        await store.close()
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), timeout=20) == 0


def _make_dry_run(target: str) -> list[str]:
    """The commands ``make TARGET`` runs on a fresh clone (``-B``: as if nothing were
    installed yet; ``-n``: printed, not run)."""
    done = subprocess.run(
        ["make", "-n", "-B", target], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if "pip install" in line]


def test_make_serve_installs_the_runtime_only_and_make_test_the_extras() -> None:
    serve = _make_dry_run("serve")
    assert serve and not any("[" in line for line in serve), serve
    assert any(line.endswith("pip install --quiet -e .") for line in serve), serve
    for target in ("test", "lint"):
        assert any("-e '.[test,dev]'" in line for line in _make_dry_run(target)), target
