"""Shared helpers for the benchmarks: processes, wrk, nginx, databases, tables.

Everything listens on 127.0.0.1 and every loop is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
SYNDICATE = str(VENV_BIN / "syndicate")
# Raw results: one Markdown file per recorded run (`make bench RECORD=1`). A benchmark
# appends its section to the file named by BENCH_RECORD, which `bench.run_all --record`
# sets for the benchmarks it starts; without it a benchmark only prints.
RESULTS_DIR = ROOT / "bench" / "results"
RECORD_ENV = "BENCH_RECORD"
FIXTURES = ROOT / "tests" / "fixtures" / "articles.json"
PG_ADMIN = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
TOKEN_RE = re.compile(r"syn_[A-Za-z0-9_-]{20,}")
HOST = "127.0.0.1"


# -- machine ----------------------------------------------------------------------


def cores() -> int:
    return os.cpu_count() or 1


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "?"


def machine() -> str:
    return f"{cores()} cores ({cpu_model()})"


def machine_tag() -> str:
    """A short name for the machine in result file names: BENCH_MACHINE, else the CPU's
    family from its model name ("AMD EPYC 7B13" -> "epyc", "Intel(R) Xeon(R)" -> "xeon")."""
    tag = os.environ.get("BENCH_MACHINE", "")
    if not tag:
        words = re.sub(r"\((r|tm)\)", " ", cpu_model().lower()).split()
        vendor = {"amd", "intel", "genuine", "cpu", "processor"}
        tag = next((w for w in words if w not in vendor), "")
    return re.sub(r"[^a-z0-9]+", "-", tag.lower()).strip("-") or "unknown"


def result_path(now: dt.datetime | None = None) -> Path:
    """bench/results/2026-12-04T1213-epyc.md: the file one recorded run writes (UTC)."""
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H%M")
    return RESULTS_DIR / f"{stamp}-{machine_tag()}.md"


def record(text: str) -> None:
    """Append to this run's result file, when the run is recorded."""
    target = os.environ.get(RECORD_ENV)
    if target:
        with open(target, "a") as f:
            f.write(text)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def percentile(values: Sequence[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


# -- seed content -------------------------------------------------------------------


def seed_article() -> dict[str, Any]:
    articles = json.loads(FIXTURES.read_text())["articles"]
    return next(a for a in articles if a["id"] == "liver-calcification")


def html_of_size(size: int) -> str:
    """Real seed HTML, cut (at a paragraph end) or repeated to about ``size`` bytes."""
    content = seed_article()["content"]
    paragraphs = [p + "</p>" for p in content.split("</p>") if p.strip()]
    out = ""
    i = 0
    while len(out) < size:
        out += paragraphs[i % len(paragraphs)]
        i += 1
    return out


def article(
    n: int,
    *,
    prefix: str = "a",
    topic: str = "liver-health",
    size: int = 2000,
    content: str | None = None,
) -> dict[str, Any]:
    published = dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=n)
    return {
        "id": f"{prefix}-{n}",
        "title": f"Liver calcification, question {n}",
        "content": content if content is not None else html_of_size(size),
        "content_type": "html",
        "topics": [topic],
        "published_at": published.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "author": "Bench",
    }


# -- databases -----------------------------------------------------------------------


@dataclass
class Database:
    url: str
    kind: str
    _cleanup: Any = None

    def drop(self) -> None:
        if self._cleanup:
            self._cleanup()


def pg_available() -> bool:
    try:
        import asyncpg

        async def probe() -> None:
            conn = await asyncpg.connect(PG_ADMIN, timeout=3)
            await conn.close()

        asyncio.run(probe())
        return True
    except Exception:
        return False


def new_database(kind: str, tmp: Path, name: str) -> Database:
    if kind == "sqlite":
        path = tmp / f"{name}.db"
        return Database(f"sqlite:///{path}", kind)
    import asyncpg

    dbname = f"bench_{name}_{os.getpid()}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f"DROP DATABASE IF EXISTS {dbname}"))
    asyncio.run(admin(f"CREATE DATABASE {dbname}"))
    base = PG_ADMIN.rsplit("/", 1)[0]

    def drop() -> None:
        with contextlib.suppress(Exception):
            asyncio.run(admin(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)"))

    return Database(f"{base}/{dbname}", kind, drop)


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="syndicate-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# -- processes -----------------------------------------------------------------------


def bench_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNDICATE_")}
    env["SYNDICATE_LOG_LEVEL"] = "warning"
    env.update(extra)
    return env


def create_token(db: str, role: str = "operator", name: str = "bench") -> str:
    out = subprocess.run(
        [
            SYNDICATE,
            "token",
            "create",
            "--role",
            role,
            "--name",
            name,
            "--database",
            db,
            "--create",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
        env=bench_env(),
    )
    match = TOKEN_RE.search(out.stdout)
    assert match, out.stdout + out.stderr
    return match.group(0)


@dataclass
class Service:
    """``syndicate serve`` on 127.0.0.1 (optionally ``--workers N``)."""

    db: str
    workers: int = 1
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, tmp: Path) -> Service:
        self.port = self.port or free_port()
        self.log = tmp / f"serve-{self.port}.log"
        cmd = [
            SYNDICATE,
            "serve",
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--database",
            self.db,
            "--workers",
            str(self.workers),
        ]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=bench_env(**self.env),
                start_new_session=True,
            )
        wait_http(f"{self.base}/healthz", self.proc, self.log)
        if self.workers > 1:
            deadline = time.monotonic() + 20
            while len(self.pids()) < self.workers and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(1.0)  # the children bind after their storage opens
        return self

    def pids(self) -> list[int]:
        assert self.proc is not None
        return [self.proc.pid, *children_of(self.proc.pid)]

    def rss_mb(self) -> float:
        return sum(rss_mb(pid) for pid in self.pids())

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def children_of(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def wait_http(
    url: str, proc: subprocess.Popen[bytes] | None, log: Path | None, timeout: float = 30.0
) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            detail = log.read_text()[-2000:] if log else ""
            raise RuntimeError(f"process exited ({proc.returncode}) before {url}:\n{detail}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status < 500:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return
            time.sleep(0.1)
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s")


@dataclass
class Helper:
    """A Python helper process from bench/ (e.g. the webhook receiver)."""

    module: str
    args: list[str]
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    def start(self, tmp: Path) -> Helper:
        self.port = self.port or free_port()
        log = tmp / f"{self.module}-{self.port}.log"
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module, "--port", str(self.port), *self.args],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                # A session of its own, like the service's: with the kernel's autogroup
                # scheduling each session gets one share of the CPU, and a baseline in
                # the bench's session (with wrk) got about twice the service's.
                start_new_session=True,
            )
        wait_http(f"http://{HOST}:{self.port}/stats", self.proc, log)
        return self

    def stop(self) -> None:
        """SIGTERM to its whole session (a helper may start siblings), SIGKILL after 20 s."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


# -- HTTP helpers ---------------------------------------------------------------------


async def post_json(
    session: aiohttp.ClientSession,
    url: str,
    token: str,
    payload: Any,
    expect: tuple[int, ...] = (200, 201),
) -> Any:
    async with session.post(url, json=payload, headers={"Authorization": f"Bearer {token}"}) as r:
        body = await r.read()
        if r.status not in expect:
            raise RuntimeError(f"POST {url}: {r.status} {body[:300]!r}")
        return json.loads(body) if body else None


async def load_articles(
    base: str, token: str, articles: list[dict[str, Any]], batch: int = 500
) -> None:
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for i in range(0, len(articles), batch):
            await post_json(
                session, f"{base}/api/articles/batch", token, {"articles": articles[i : i + batch]}
            )


# -- wrk ------------------------------------------------------------------------------


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


@dataclass(frozen=True)
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    non_2xx_3xx: int


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        return float("nan")
    return float(match.group(1)) * _UNIT_MS[match.group(2)]


def wrk(
    url: str,
    *,
    threads: int = 2,
    connections: int = 64,
    duration: int = 10,
    headers: Sequence[str] = (),
    script: Path | None = None,
) -> WrkResult:
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration}s",
        "--latency",
        "--timeout",
        "5s",
    ]
    for header in headers:
        cmd += ["-H", header]
    if script is not None:
        cmd += ["-s", str(script)]
    cmd.append(url)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"\s50%\s+(\S+)", out)
    p99 = re.search(r"\s99%\s+(\S+)", out)
    errors = 0
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    if socket_errors:
        errors = sum(int(x) for x in socket_errors.groups())
    non = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return WrkResult(
        rps=rps,
        p50_ms=_ms(p50.group(1)) if p50 else float("nan"),
        p99_ms=_ms(p99.group(1)) if p99 else float("nan"),
        requests=requests,
        errors=errors,
        non_2xx_3xx=int(non.group(1)) if non else 0,
    )


def median_wrk(results: Sequence[WrkResult]) -> WrkResult:
    return WrkResult(
        rps=median([r.rps for r in results]),
        p50_ms=median([r.p50_ms for r in results]),
        p99_ms=median([r.p99_ms for r in results]),
        requests=int(median([r.requests for r in results])),
        errors=sum(r.errors for r in results),
        non_2xx_3xx=sum(r.non_2xx_3xx for r in results),
    )


# -- nginx ----------------------------------------------------------------------------

NGINX_CONF = """\
{user}
worker_processes {workers};
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    types {{ application/rss+xml rss; }}
    client_body_temp_path {prefix}/tmp;
    proxy_temp_path {prefix}/tmp;
    fastcgi_temp_path {prefix}/tmp;
    uwsgi_temp_path {prefix}/tmp;
    scgi_temp_path {prefix}/tmp;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        etag on;
    }}
}}
"""


@dataclass
class Nginx:
    root: Path
    workers: int
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    def start(self, tmp: Path) -> Nginx:
        self.port = free_port()
        prefix = tmp / "nginx"
        (prefix / "tmp").mkdir(parents=True, exist_ok=True)
        user = "user root;" if os.geteuid() == 0 else ""
        conf = prefix / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(
                user=user, workers=self.workers, prefix=prefix, port=self.port, root=self.root
            )
        )
        self.proc = subprocess.Popen(
            ["nginx", "-c", str(conf), "-p", str(prefix)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # one CPU share of its own, as the service has
        )
        wait_http(f"http://{HOST}:{self.port}/", None, None, timeout=10)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


# -- reporting ------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers], *[[_fmt(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != value:
            return "n/a"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    return str(value)


def verdict(ratio: float, target: float, *, at_most: bool = False) -> str:
    if ratio != ratio:
        return "n/a"
    ok = ratio <= target if at_most else ratio >= target
    return "met" if ok else "MISSED"


def report(
    title: str,
    command: str,
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    notes: Sequence[str] = (),
    rounds: int = ROUNDS,
) -> str:
    """Print the table (and record it, when the run is recorded)."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = [
        f"### {title} — {stamp}",
        "",
        f"Command: `{command}` · machine: {machine()} · medians of {rounds} rounds",
        "",
        table(headers, rows),
    ]
    if notes:
        text += ["", *[f"- {n}" for n in notes]]
    block = "\n".join(text) + "\n"
    print("\n" + block, flush=True)
    record("\n" + block)
    return block


def skip(title: str, reason: str) -> None:
    message = f"SKIPPED {title}: {reason}"
    print(message, flush=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    record(f"\n### {title} — {stamp}\n\n{message}\n")
