"""One authority for identity (issue 20, finding 7): the public base URL is stored in
the database on first start, and every process (serve, worker, import) mints GUIDs and
links with it; a different one given explicitly is refused, unless changed with
``syndicate base-url set``. Real processes, both backends."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
from test_cli import TOKEN_RE, run, serve

from storage import open_storage

SITE = "https://health.example.org"


def article_file(tmp_path: Path, article_id: str) -> Path:
    path = tmp_path / f"{article_id}.json"
    article = {
        "id": article_id,
        "title": f"Imported {article_id}",
        "content": "<p>From a file.</p>",
        "topics": ["liver-health"],
    }
    path.write_text(json.dumps([article]), encoding="utf-8")
    return path


async def import_first(database_url: str, tmp_path: Path) -> None:
    """Import one article into a new database with ``--base-url SITE``: stores it."""
    code, _, err = await run(
        "import",
        str(article_file(tmp_path, "first")),
        "--database",
        database_url,
        "--base-url",
        SITE,
        "--no-progress",
        "--create",
    )
    assert code == 0, err


async def read_article(base: str, token: str, article_id: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{base}/api/articles/{article_id}", headers={"Authorization": f"Bearer {token}"}
        ) as resp,
    ):
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
    return body


async def test_import_without_base_url_uses_the_one_serve_stored(
    database_url: str, tmp_path: Path
) -> None:
    served = await serve(database_url, "--base-url", SITE)
    try:
        token = TOKEN_RE.findall(served.output)[0]
    finally:
        assert await served.stop() == 0

    code, _, err = await run(
        "import", str(article_file(tmp_path, "a1")), "--database", database_url, "--no-progress"
    )
    assert code == 0, err
    store = await open_storage(database_url)
    try:
        imported = await store.get_article("a1")
    finally:
        await store.close()
    assert imported.guid.startswith("tag:health.example.org,"), imported.guid

    # A later serve without --base-url links with the stored one as well.
    again = await serve(database_url)
    try:
        assert f"public base URL {SITE}" in again.output
        body = await read_article(again.base, token, "a1")
        assert body["guid"] == imported.guid
        assert body["url"].startswith(f"{SITE}/"), body["url"]
    finally:
        assert await again.stop() == 0


async def test_a_conflicting_base_url_is_refused_until_changed_explicitly(
    database_url: str, tmp_path: Path
) -> None:
    await import_first(database_url, tmp_path)

    other = "https://other.example.net"
    code, out, err = await run(
        "import",
        str(article_file(tmp_path, "second")),
        "--database",
        database_url,
        "--base-url",
        other,
        "--no-progress",
    )
    assert code == 2, (out, err)
    assert other in err and SITE in err and "base-url set" in err
    assert len(err.strip().splitlines()) == 2, err  # the database line, then the refusal
    env_code, _, env_err = await run(
        "worker", "--database", database_url, env=_env(SYNDICATE_BASE_URL=other)
    )
    assert env_code == 2 and other in env_err and SITE in env_err

    code, out, err = await run("base-url", "set", other, "--database", database_url)
    assert code == 0, err
    assert other in out and SITE in out
    code, out, err = await run("base-url", "show", "--database", database_url)
    assert (code, out.strip()) == (0, other)
    code, _, err = await run(
        "import", str(article_file(tmp_path, "second")), "--database", database_url, "--no-progress"
    )
    assert code == 0, err
    store = await open_storage(database_url)
    try:
        first, second = await store.get_article("first"), await store.get_article("second")
    finally:
        await store.close()
    assert first.guid.startswith("tag:health.example.org,"), "a GUID never changes"
    assert second.guid.startswith("tag:other.example.net,")


def _env(**extra: str) -> dict[str, str]:
    from conftest import clean_env

    return clean_env(**extra)


async def test_base_url_set_refuses_what_cannot_start_a_link(
    database_url: str, tmp_path: Path
) -> None:
    """It starts every link, GUID and Link header: markup, spaces, a second port, a
    query, credentials, a bad IP literal or nothing at all are refused in one line
    (an outside reviewer stored each; '[:]' printed a traceback)."""
    await import_first(database_url, tmp_path)
    for bad in (
        'http://x/"><script>alert(1)</script>',
        "http://h/ a",
        "http://127.0.0.1:46389:80",
        "http://h/path/?q=1#f",
        "http://user:pw@h",
        "http://[:]",
        "",
    ):
        code, out, err = await run("base-url", "set", bad, "--database", database_url)
        assert code == 2, (bad, out, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, (bad, err)
    code, out, _ = await run("base-url", "show", "--database", database_url)
    assert code == 0 and SITE in out
