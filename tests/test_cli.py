"""The ``syndicate`` command as operators run it: real processes, real databases."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import FIXTURES, ServerFactory, clean_env, free_port

from storage import Storage, open_storage

TOKEN_RE = re.compile(r"\bsyn_[A-Za-z0-9_-]{20,}\b")


async def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "syndicate",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env or clean_env(),
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


class Served:
    def __init__(self, proc: asyncio.subprocess.Process, base: str, output: str) -> None:
        self.proc = proc
        self.base = base
        self.output = output

    async def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), timeout=20)


async def serve(database_url: str, *extra: str) -> Served:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "syndicate",
        "serve",
        "--port",
        str(port),
        "--database",
        database_url,
        *extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=clean_env(),
    )
    assert proc.stdout is not None
    lines: list[str] = []

    async def read_until_listening() -> None:
        assert proc.stdout is not None
        while True:
            line = (await proc.stdout.readline()).decode()
            if not line:
                raise AssertionError("serve exited early:\n" + "".join(lines))
            lines.append(line)
            if "listening on" in line:
                return

    await asyncio.wait_for(read_until_listening(), timeout=30)
    return Served(proc, f"http://127.0.0.1:{port}", "".join(lines))


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


async def test_newcomer_flow_serve_post_read_restart(
    database_url: str, http: aiohttp.ClientSession, seed_article: dict[str, Any]
) -> None:
    served = await serve(database_url)  # on uvloop, the default
    try:
        tokens = TOKEN_RE.findall(served.output)
        assert len(tokens) == 1, served.output
        auth = {"Authorization": f"Bearer {tokens[0]}"}
        async with http.post(f"{served.base}/api/articles", json=seed_article, headers=auth) as r:
            assert r.status == 201, await r.text()
        async with http.get(f"{served.base}/api/articles/liver-calcification", headers=auth) as r:
            body = await r.json()
        assert body["topics"] == ["liver-health"]
    finally:
        assert await served.stop() == 0

    again = await serve(database_url, "--event-loop", "asyncio")
    try:
        assert TOKEN_RE.findall(again.output) == [], "the bootstrap token is printed only once"
        async with http.get(f"{again.base}/api/articles/liver-calcification", headers=auth) as r:
            assert r.status == 200, "data and tokens survive a restart"
            assert (await r.json())["title"] == seed_article["title"]
    finally:
        assert await again.stop() == 0


async def test_token_create_prints_only_the_token(
    database_url: str, http: aiohttp.ClientSession
) -> None:
    code, out, err = await run(
        "token",
        "create",
        "--role",
        "partner",
        "--name",
        "acme",
        "--database",
        database_url,
        "--create",
    )
    assert code == 0, err
    assert TOKEN_RE.fullmatch(out.strip()), out
    store = await open_storage(database_url)
    try:
        from syndicate.web.auth import hash_token

        token = await store.get_token_by_hash(hash_token(out.strip()))
        assert token is not None and (token.name, token.role) == ("acme", "partner")
    finally:
        await store.close()
    code, out, err = await run(
        "token", "create", "--role", "operator", "--name", "acme", "--database", database_url
    )
    assert code == 1 and out == "" and "acme" in err


async def test_import_fixtures_then_again_unchanged(database_url: str, tmp_path: Path) -> None:
    code, out, err = await run(
        "import",
        str(FIXTURES / "articles.json"),
        "--database",
        database_url,
        "--no-progress",
        "--create",
    )
    assert code == 0, err
    assert "imported: 18 created, 0 updated, 0 unchanged, 0 rejected" in out
    code, out, err = await run(
        "import", str(FIXTURES / "articles.json"), "--database", database_url, "--no-progress"
    )
    assert "0 created, 0 updated, 18 unchanged, 0 rejected" in out
    store = await open_storage(database_url)
    try:
        article = await store.get_article("liver-calcification")
        assert article.topics == ("liver-health",)
        assert len(await store.list_events(limit=1000)) == 18
    finally:
        await store.close()


async def test_import_directory_with_ndjson_and_bad_items(
    database_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    lines = [
        json.dumps({"id": "n1", "title": "One", "content": "x", "topics": ["t"]}),
        "{not json",
        json.dumps({"id": "n2", "title": "Two", "content": "x", "topics": ["Bad Topic"]}),
        "",
        json.dumps({"id": "n3", "title": "Three", "content": "x", "topics": ["t"]}),
    ]
    (folder / "a.ndjson").write_text("\n".join(lines))
    (folder / "b.json").write_text(
        json.dumps([{"id": "j1", "title": "J", "content": "x", "topics": ["t"]}])
    )
    (folder / "notes.txt").write_text("ignored")
    code, out, err = await run("import", str(folder), "--database", database_url, "--create")
    assert code == 1
    assert out.splitlines() == [
        "imported: 3 created, 0 updated, 0 unchanged, 2 rejected",
        "rejected a.ndjson:2",
        "    not JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        "rejected a.ndjson:3",
        "    topics: 'Bad Topic' is not a topic slug (lower-case letters, digits and '-', "
        "up to 64, starting with a letter or digit)",
    ], "each rejected article's location once, its errors under it"
    assert re.search(
        r"importing: 100%\|.*\| 5/5 \[\d\d:\d\d<\d\d:\d\d, +[\d.]+ articles/s\]", err
    ), "a progress bar on stderr with the total, elapsed time, time left and rate: " + err
    store = await open_storage(database_url)
    try:
        ids = {a.id for a in await store.list_articles(limit=10)}
    finally:
        await store.close()
    assert ids == {"n1", "n3", "j1"}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SYNDICATE_PORT": "abc"}, "SYNDICATE_PORT='abc' is not a port number"),
        ({"SYNDICATE_DATABASE": "mysql://x"}, "SYNDICATE_DATABASE"),
        ({"SYNDICATE_MAX_BODY_SIZE": "-1"}, "SYNDICATE_MAX_BODY_SIZE='-1' must be at least 1"),
        ({"SYNDICATE_BASE_URL": "ftp://x"}, "SYNDICATE_BASE_URL"),
        ({"SYNDICATE_EVENT_LOOP": "trio"}, "SYNDICATE_EVENT_LOOP='trio' is not one of uvloop"),
    ],
)
async def test_bad_settings_are_explained(env: dict[str, str], message: str) -> None:
    code, _out, err = await run("serve", env=clean_env(**env))
    assert code == 2
    assert message in err


async def test_flags_override_environment(tmp_path: Path) -> None:
    from syndicate.core.settings import load_settings

    settings = load_settings({"port": "9000"}, {"SYNDICATE_PORT": "7000", "SYNDICATE_HOST": "::1"})
    assert (settings.port, settings.host) == (9000, "::1")
    assert settings.base_url == "http://[::1]:9000"


async def test_token_list_and_revoke(
    database_url: str, start_server: ServerFactory, store: Storage
) -> None:
    code, secret, _ = await run(
        "token", "create", "--role", "partner", "--name", "acme", "--database", database_url
    )
    assert code == 0
    client = await start_server()
    async with client.request("GET", "/api/topics", token=secret.strip()) as resp:
        assert resp.status == 200
    code, out, _ = await run("token", "list", "--database", database_url)
    assert code == 0
    assert "acme" in out and "partner" in out and secret.strip() not in out
    assert "syn_" not in out, "never a secret"
    code, out, _ = await run("token", "revoke", "acme", "--database", database_url)
    assert code == 0 and "revoked acme" in out
    async with client.request("GET", "/api/topics", token=secret.strip()) as resp:
        assert resp.status == 401, "revoked tokens are refused at once"
    code, out, err = await run("token", "revoke", "acme", "--database", database_url)
    assert code == 1 and "no live token" in err
    code, out, _ = await run("token", "list", "--database", database_url)
    line = next(line for line in out.splitlines() if line.startswith("acme"))
    assert line.split()[-2:] != ["-", "-"], "the revocation time is shown"


async def test_json_logs_carry_request_ids(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "syndicate",
        "serve",
        "--port",
        str(port),
        "--log-format",
        "json",
        "--database",
        f"sqlite:///{tmp_path / 'db.sqlite'}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=clean_env(),
    )
    assert proc.stderr is not None
    try:
        for _ in range(100):
            try:
                async with http.get(
                    f"http://127.0.0.1:{port}/api/articles/x", headers={"X-Request-Id": "req-42"}
                ) as resp:
                    assert resp.status == 401
                    break
            except aiohttp.ClientConnectorError:
                await asyncio.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), timeout=20)
    entries = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    access = [e for e in entries if e["logger"] == "syndicate.access"]
    assert access, err.decode()[-2000:]
    entry = access[-1]
    assert entry["request_id"] == "req-42" and entry["status"] == 401
    assert entry["route"] == "/api/articles/{id}" and entry["latency_ms"] >= 0
    assert entry["level"] == "info" and entry["time"]


async def test_import_of_nothing_warns_and_fails(database_url: str, tmp_path: Path) -> None:
    """An empty folder (a failed export, a wrong path) is not a quiet success: exit 1."""
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an import file")
    code, out, err = await run("import", str(empty), "--database", database_url, "--create")
    assert (code, out) == (1, "")
    assert err.splitlines()[-1] == (
        f"syndicate: nothing to import: no .json, .ndjson, .jsonl files in {empty}"
    )
    (empty / "none.json").write_text('{"articles": []}')
    code, out, err = await run("import", str(empty), "--database", database_url)
    assert (code, out) == (1, "")
    assert err.splitlines()[-1] == f"syndicate: nothing to import: no articles in {empty}/none.json"


async def test_second_serve_on_a_taken_port_says_so_in_one_line(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'db.sqlite'}"
    served = await serve(database)
    try:
        port = served.base.rsplit(":", 1)[1]
        code, out, err = await run("serve", "--port", port, "--database", database)
    finally:
        assert await served.stop() == 0
    assert code == 1
    assert out == "", "nothing started: no token, no fan-out"
    assert err.splitlines() == [
        f"syndicate: cannot listen on 127.0.0.1:{port}: the address is already in use "
        "(another syndicate serve?); choose another port with --port or SYNDICATE_PORT, "
        "e.g. SYNDICATE_PORT=8081 make serve"
    ]


def _closed_port() -> int:
    return free_port()  # bound and released: nothing listens there


@pytest.mark.parametrize(
    "command", [["serve"], ["token", "list"], ["import", str(FIXTURES / "articles.json")]]
)
async def test_a_database_that_cannot_be_opened_is_one_line(
    tmp_path: Path, command: list[str]
) -> None:
    (tmp_path / "file").write_text("")
    (tmp_path / "folder").mkdir()
    port = _closed_port()
    cases = [
        (
            f"sqlite:///{tmp_path}/file/x.db",
            f"syndicate: cannot use the database {tmp_path}/file/x.db: {tmp_path}/file is a "
            "file, not a folder; choose another path with --database or SYNDICATE_DATABASE",
        ),
        (
            "sqlite:////etc/passwd/deeper/x.db",
            "syndicate: cannot use the database /etc/passwd/deeper/x.db: /etc/passwd is a file, "
            "not a folder; choose another path with --database or SYNDICATE_DATABASE",
        ),
        (
            f"sqlite:///{tmp_path}/folder",
            f"syndicate: cannot use the database {tmp_path}/folder: it is a folder; "
            "name a file in it with --database or SYNDICATE_DATABASE",
        ),
        (
            f"postgresql://postgres@127.0.0.1:{port}/syndicate",
            f"syndicate: cannot open the database postgresql://postgres@127.0.0.1:{port}/"
            f"syndicate: PostgreSQL: [Errno 111] Connection refused; is PostgreSQL running at "
            f"127.0.0.1:{port}? "
            "Set the database with --database or SYNDICATE_DATABASE",
        ),
    ]
    for database, line in cases:
        code, out, err = await run(
            *command,
            "--port" if command == ["serve"] else "--create",
            *([str(free_port())] if command == ["serve"] else []),
            env=clean_env(SYNDICATE_DATABASE=database),
        )
        assert (code, out) == (1, ""), err
        assert err.splitlines() == [line]


async def test_commands_refuse_to_make_a_database_unless_asked(tmp_path: Path) -> None:
    """Run from another folder, ``token list`` used to make and show a new, empty
    data/syndicate.db; now it says where it looked, and only ``--create`` makes one."""
    env = clean_env()
    where = tmp_path / "data" / "syndicate.db"
    for command in (
        ["token", "create", "--role", "operator", "--name", "x"],
        ["deliveries"],
        ["import", str(FIXTURES / "articles.json")],
    ):
        code, out, err = await run_in(tmp_path, *command, env=env)
        assert (code, out) == (1, ""), command
        assert err.splitlines() == [
            f"syndicate: no database at {where}: run this command in the folder `syndicate "
            "serve` runs in, name the database with --database or SYNDICATE_DATABASE, "
            "or add --create to make a new one"
        ]
    assert not (tmp_path / "data").exists()
    code, out, err = await run_in(tmp_path, "token", "list", "--create", env=env)
    assert code == 0 and out.startswith("NAME")
    assert err.splitlines()[-1] == f"syndicate: database {where}"
    code, out, err = await run_in(tmp_path, "token", "list", env=env)
    assert code == 0 and err.splitlines() == [f"syndicate: database {where}"]


async def run_in(folder: Path, *args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "syndicate",
        *args,
        cwd=folder,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_first_run_banner_names_a_command_that_works(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """The banner's "More:" command, pasted in another folder, makes a working token."""
    database = f"sqlite:///{tmp_path / 'db.sqlite'}"
    served = await serve(database)
    try:
        (more,) = [line for line in served.output.splitlines() if "More:" in line]
        command = more.split("More: ", 1)[1]
        venv_bin = Path(sys.executable).parent
        if Path.cwd() in venv_bin.parents:
            assert command.startswith(f"{venv_bin.relative_to(Path.cwd())}/syndicate token create")
        assert command.endswith(f" --database sqlite:///{tmp_path / 'db.sqlite'}")
        pasted = command.replace("operator|partner", "partner").replace("NAME", "pasted")
        if not pasted.startswith("/"):
            pasted = f"{Path.cwd()}/{pasted}"
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        proc = await asyncio.create_subprocess_shell(
            pasted,
            cwd=elsewhere,
            env=clean_env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out_b, err_b = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode == 0, err_b.decode()
        auth = {"Authorization": f"Bearer {out_b.decode().strip()}"}
        async with http.get(f"{served.base}/api/topics", headers=auth) as resp:
            assert resp.status == 200
    finally:
        assert await served.stop() == 0


async def test_a_revoked_tokens_name_can_be_reused_and_revoking_twice_says_so(
    database_url: str, store: Storage
) -> None:
    # ``store`` makes the database: the commands do not unless asked.
    code, first, _ = await run(
        "token", "create", "--role", "partner", "--name", "acme", "--database", database_url
    )
    assert code == 0
    code, out, _ = await run("token", "revoke", "acme", "--database", database_url)
    assert code == 0 and "revoked acme" in out
    code, _, err = await run("token", "revoke", "acme", "--database", database_url)
    assert code == 1 and "already revoked" in err and "no live token" in err
    code, second, err = await run(
        "token", "create", "--role", "partner", "--name", "acme", "--database", database_url
    )
    assert code == 0, err
    assert second.strip() and second.strip() != first.strip()
    code, out, _ = await run("token", "list", "--database", database_url)
    assert sum(line.startswith("acme") for line in out.splitlines()) == 2
    code, out, _ = await run("token", "revoke", "acme", "--database", database_url)
    assert code == 0 and "revoked acme" in out


async def test_a_partner_cannot_take_a_revoked_operators_name(
    database_url: str, http: aiohttp.ClientSession
) -> None:
    """Subscriptions belong to the token name: a partner token under the revoked
    bootstrap operator's name would own every subscription the operator made."""
    served = await serve(database_url, "--allow-private-targets")
    try:
        (secret,) = TOKEN_RE.findall(served.output)
        operator = {"Authorization": f"Bearer {secret}"}
        hook = {"url": f"http://127.0.0.1:{free_port()}/hook", "topics": ["*"]}
        async with http.post(
            f"{served.base}/api/subscriptions", json=hook, headers=operator
        ) as resp:
            assert resp.status == 201, await resp.text()
            subscription = (await resp.json())["id"]
        code, out, _ = await run("token", "revoke", "operator", "--database", database_url)
        assert code == 0 and "revoked operator" in out
        code, out, err = await run(
            "token",
            "create",
            "--role",
            "partner",
            "--name",
            "operator",
            "--database",
            database_url,
        )
        assert (code, out) == (1, ""), err
        assert err.splitlines()[1:] == [
            "syndicate: cannot create the partner token 'operator': the name 'operator' "
            "belonged to an operator token; a reused name keeps its role (the name owns that "
            "token's subscriptions): choose another name"
        ], err
        code, out, _ = await run("token", "list", "--database", database_url)
        assert not any("partner" in line for line in out.splitlines()[1:]), out
        # The same role is a rotation: allowed, and it keeps the subscriptions.
        code, rotated, err = await run(
            "token",
            "create",
            "--role",
            "operator",
            "--name",
            "operator",
            "--database",
            database_url,
        )
        assert code == 0, err
        auth = {"Authorization": f"Bearer {rotated.strip()}"}
        async with http.get(f"{served.base}/api/subscriptions/{subscription}", headers=auth) as r:
            assert r.status == 200, await r.text()
    finally:
        assert await served.stop() == 0


async def test_worker_refuses_to_make_a_database_unless_asked(tmp_path: Path) -> None:
    """``syndicate worker`` started in another folder made and served a new, empty
    data/syndicate.db; now it says where it looked, and only ``--create`` makes one."""
    where = tmp_path / "data" / "syndicate.db"
    code, out, err = await run_in(tmp_path, "worker", env=clean_env())
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        f"syndicate: no database at {where}: run this command in the folder `syndicate "
        "serve` runs in, name the database with --database or SYNDICATE_DATABASE, "
        "or add --create to make a new one"
    ]
    assert not (tmp_path / "data").exists()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "syndicate",
        "worker",
        "--create",
        cwd=tmp_path,
        env=clean_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    try:
        lines = [await asyncio.wait_for(proc.stdout.readline(), timeout=30)]
        while lines[-1] and b"worker ready" not in lines[-1]:
            lines.append(await asyncio.wait_for(proc.stdout.readline(), timeout=30))
        assert b"worker ready" in lines[-1], lines
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.communicate(), timeout=20)
    assert proc.returncode == 0 and where.exists()


async def test_import_of_nothing_makes_no_database(tmp_path: Path) -> None:
    """The input is checked before the database is opened: ``--create`` with an empty
    folder (or a missing file) makes nothing."""
    empty = tmp_path / "empty"
    empty.mkdir()
    database = tmp_path / "db" / "syndicate.db"
    for inputs, line in (
        ([empty], f"syndicate: nothing to import: no .json, .ndjson, .jsonl files in {empty}"),
        ([empty / "missing.json"], f"syndicate: {empty}/missing.json: no such file or directory"),
    ):
        code, out, err = await run(
            "import", *map(str, inputs), "--database", f"sqlite:///{database}", "--create"
        )
        assert (code, out) == (1, "")
        assert err.splitlines() == [line], "no database announced: none was opened"
        assert not database.parent.exists()


EMPTY_NAME = "argument --name: must not be empty"
BAD_NAME = (
    "argument --name: use 1-64 letters, digits, '.', '_', '@' or '-', "
    "starting with a letter or digit"
)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["token", "create", "--role", "partner", "--name", ""], EMPTY_NAME),
        (["token", "create", "--role", "partner", "--name", "  "], EMPTY_NAME),
        (["token", "revoke", ""], "argument name: must not be empty"),
        (["token", "create", "--role", "partner", "--name", "a\nb"], BAD_NAME),
        (["token", "create", "--role", "partner", "--name", "x" * 65], BAD_NAME),
        (["token", "create", "--role", "partner", "--name", ".hidden"], BAD_NAME),
        (["deliveries", "--limit", "-1"], "argument --limit: '-1' must be at least 1"),
        (["deliveries", "--limit", "0"], "argument --limit: '0' must be at least 1"),
        (["deliveries", "--limit", "ten"], "argument --limit: 'ten' is not a whole number"),
    ],
)
async def test_empty_token_names_and_bad_limits_are_usage_errors(
    tmp_path: Path, args: list[str], message: str
) -> None:
    code, out, err = await run_in(tmp_path, *args, "--create", env=clean_env())
    assert (code, out) == (2, "")
    assert err.splitlines()[-1].endswith(f"error: {message}"), err
    assert "Traceback" not in err
    assert not (tmp_path / "data").exists(), "refused before any database"
