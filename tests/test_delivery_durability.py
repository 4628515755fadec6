"""Nothing is lost when a dispatcher dies, and two dispatchers never double-send."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections import Counter
from pathlib import Path

import aiohttp
import pytest
from conftest import clean_env, free_port
from receiver import Received, Receiver, hang
from test_storage_contract import draft

from storage import Storage, open_storage
from syndicate.core.settings import Settings
from syndicate.delivery.service import DeliveryService
from syndicate.web.auth import create_token


async def add_subscriptions(store: Storage, url: str, count: int) -> None:
    """``count`` subscriptions of one partner to ``url?n=N``: a request's path tells
    which subscription it is for (every subscriber of an event gets the same webhook-id)."""
    for n in range(count):
        await store.create_subscription(
            id=f"sub_{n:04d}",
            kind="webhook",
            url=f"{url}?n={n}",
            topics=["*"],
            events=[],
            secret="whsec_" + "A" * 43 + "=",
            owner="partner",
        )


async def start(*args: str, database_url: str, **env_extra: str) -> asyncio.subprocess.Process:
    env = clean_env(
        SYNDICATE_DATABASE=database_url,
        SYNDICATE_ALLOW_PRIVATE_TARGETS="1",
        SYNDICATE_DELIVERY_TIMEOUT="1",
        SYNDICATE_LOG_LEVEL="warning",
    )
    env.update(env_extra)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "syndicate",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    assert proc.stdout is not None
    while True:
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
        assert line, "the process exited before it was ready"
        if b"listening on" in line or b"worker ready" in line:
            break
    # Keep reading, or a full pipe would block the process on its next log line.
    OUTPUT[proc.pid] = []
    drain = asyncio.create_task(_drain(proc.stdout, OUTPUT[proc.pid]))
    _DRAINS.add(drain)
    drain.add_done_callback(_DRAINS.discard)
    return proc


def sent(request: Received) -> tuple[str, str]:
    """What a receiver drops duplicates by: the subscription (its URL) and webhook-id."""
    return (request.path, request.message_id)


OUTPUT: dict[int, list[bytes]] = {}
_DRAINS: set[asyncio.Task[None]] = set()


async def _drain(stream: asyncio.StreamReader, into: list[bytes]) -> None:
    while line := await stream.readline():
        into.append(line)


async def _kill_mid_fan_out(
    database_url: str, receiver: Receiver, count: int, *, arrived: int, **env: str
) -> asyncio.subprocess.Process:
    """``count`` subscriptions on one slow partner; ``serve`` fans an article out to
    them and is SIGKILLed once ``arrived`` deliveries have arrived. Returns it, dead."""
    receiver.behaviours["/hook"] = hang(0.05)
    store = await open_storage(database_url)
    try:
        token, _ = await create_token(store, name="ops", role="operator")
        await add_subscriptions(store, receiver.url("/hook"), count)
    finally:
        await store.close()
    port = free_port()
    server = await start("serve", "--port", str(port), database_url=database_url, **env)
    try:
        async with aiohttp.ClientSession() as http:
            article = {"id": "a1", "title": "T", "content": "c", "topics": ["liver-health"]}
            async with http.post(
                f"http://127.0.0.1:{port}/api/articles",
                json=article,
                headers={"Authorization": f"Bearer {token}"},
            ) as resp:
                assert resp.status == 201
        await receiver.wait_for(lambda: len(receiver.at("/hook")) >= arrived, timeout=20)
    finally:
        server.send_signal(signal.SIGKILL)
        await server.wait()
    return server


async def test_a_killed_server_loses_no_delivery(
    database_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    await _kill_mid_fan_out(database_url, receiver, 200, arrived=20)
    before_restart = {sent(r) for r in receiver.at("/hook")}
    assert len(before_restart) < 200, "the kill came mid-fan-out"

    worker = await start("worker", database_url=database_url)
    store = await open_storage(database_url)
    try:
        await receiver.wait_for(
            lambda: len({sent(r) for r in receiver.at("/hook")}) == 200, timeout=40
        )
        # Sends the killed process had in flight are re-sent once their lease
        # runs out (receivers drop the duplicates by webhook-id); then the
        # log says delivered for all.
        for _ in range(200):
            stats = await store.delivery_stats()
            if stats.pending == 0:
                break
            await asyncio.sleep(0.1)
        statuses: Counter[str] = Counter()
        for n in range(200):
            statuses.update(d.status for d in await store.list_deliveries(f"sub_{n:04d}"))
    finally:
        await store.close()
        worker.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(worker.wait(), timeout=20) == 0
    assert statuses == {"delivered": 200}
    assert len({sent(r) for r in receiver.at("/hook")}) == 200

    cli = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "syndicate",
        "deliveries",
        "--database",
        database_url,
        "--limit",
        "500",
        stdout=asyncio.subprocess.PIPE,
        env=clean_env(),
    )
    out, _ = await asyncio.wait_for(cli.communicate(), timeout=30)
    assert cli.returncode == 0
    lines = out.decode().splitlines()
    assert lines[0].split()[:3] == ["ID", "STATUS", "TRIES"]
    assert lines[-1].startswith("0 pending  200 delivered  0 failed  0 dead")


@pytest.mark.parametrize("backend", ["postgres"])
async def test_two_dispatchers_share_one_database_without_duplicates(
    database_url: str, receiver: Receiver
) -> None:
    settings = Settings(
        database=database_url, allow_private_targets=True, max_per_host=32, delivery_timeout=5
    )
    first, second = await open_storage(database_url), await open_storage(database_url)
    services = [DeliveryService(first, settings), DeliveryService(second, settings)]
    try:
        await add_subscriptions(first, receiver.url("/hook"), 100)
        for service in services:
            await service.start()
        await first.put_articles([draft(f"a{n}") for n in range(10)])
        for service in services:
            service.notify()
        await receiver.wait_for(lambda: len(receiver.at("/hook")) >= 1000, timeout=60)
        await asyncio.sleep(0.5)
        ids = Counter(sent(r) for r in receiver.at("/hook"))
        assert len(ids) == 1000, "none missing"
        assert max(ids.values()) == 1, "none sent twice"
        assert all(s.dispatcher._held == 0 for s in services)
    finally:
        for service in services:
            await service.stop()
        await first.close()
        await second.close()


async def test_sigterm_finishes_in_flight_and_hands_back_the_rest(
    database_url: str, receiver: Receiver
) -> None:
    receiver.behaviours["/hook"] = hang(0.5)
    store = await open_storage(database_url)
    try:
        token, _ = await create_token(store, name="ops", role="operator")
        await add_subscriptions(store, receiver.url("/hook"), 20)
    finally:
        await store.close()
    port = free_port()
    env_timeout = {"SYNDICATE_DELIVERY_TIMEOUT": "3"}
    server = await start("serve", "--port", str(port), database_url=database_url, **env_timeout)
    async with aiohttp.ClientSession() as http:
        article = {"id": "a1", "title": "T", "content": "c", "topics": ["t"]}
        async with http.post(
            f"http://127.0.0.1:{port}/api/articles",
            json=article,
            headers={"Authorization": f"Bearer {token}"},
        ) as resp:
            assert resp.status == 201
    await receiver.wait_for(lambda: len(receiver.at("/hook")) >= 1, timeout=10)
    server.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(server.wait(), timeout=15) == 0, "a clean exit"
    store = await open_storage(database_url)
    try:
        logs = [d for n in range(20) for d in await store.list_deliveries(f"sub_{n:04d}")]
        delivered = {d.id for d in logs if d.status == "delivered"}
        assert len(delivered) >= 8, "requests on the wire were finished and recorded"
        assert all(d.claimed_by is None for d in logs), "no lease is left behind"
    finally:
        await store.close()
    loop = asyncio.get_running_loop()
    restarted = loop.time()
    worker = await start("worker", database_url=database_url, **env_timeout)
    try:
        await receiver.wait_for(
            lambda: len({sent(r) for r in receiver.at("/hook")}) == 20, timeout=15
        )
        assert loop.time() - restarted < 10, "handed-back deliveries go out without a lease wait"
    finally:
        worker.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(worker.wait(), timeout=20) == 0


async def test_a_killed_server_keeps_every_acknowledged_article(database_url: str) -> None:
    store = await open_storage(database_url)
    try:
        token, _ = await create_token(store, name="ops", role="operator")
    finally:
        await store.close()
    port = free_port()
    server = await start("serve", "--port", str(port), database_url=database_url)
    acknowledged: set[str] = set()
    headers = {"Authorization": f"Bearer {token}"}

    async def import_forever(http: aiohttp.ClientSession) -> None:
        for batch in range(1000):
            articles = [
                {
                    "id": f"b{batch}-{n}",
                    "title": f"Article {batch} {n}",
                    "content": "<p>x</p>",
                    "topics": ["bulk"],
                }
                for n in range(50)
            ]
            async with http.post(
                f"http://127.0.0.1:{port}/api/articles/batch",
                json={"articles": articles},
                headers=headers,
            ) as resp:
                assert resp.status == 200
                body = await resp.json()
            acknowledged.update(r["id"] for r in body["results"] if r["status"] == "created")

    async with aiohttp.ClientSession() as http:
        importer = asyncio.create_task(import_forever(http))
        while len(acknowledged) < 500:
            await asyncio.sleep(0.01)
            assert not importer.done(), importer
        server.send_signal(signal.SIGKILL)
        await server.wait()
        with pytest.raises(aiohttp.ClientError):
            await importer
    store = await open_storage(database_url)
    try:
        stored = {a.id for a in await store.list_articles(topic="bulk", limit=100_000)}
        events = await store.list_events(limit=100_000)
    finally:
        await store.close()
    assert acknowledged <= stored, "every article answered 2xx survived the kill"
    assert {e.article_id for e in events} == stored, "and each has its event"


async def test_stop_is_prompt_when_woken_as_it_stops(database_url: str) -> None:
    """A write wakes the delivery loops in the very moment the service stops (a
    request's last write during shutdown): the stop still ends at once. On Python
    3.11 ``asyncio.wait_for`` swallowed that cancellation and shutdown hung."""
    store = await open_storage(database_url)
    try:
        for _ in range(3):
            service = DeliveryService(store, Settings(database=database_url))
            await service.start()
            await asyncio.sleep(0.2)  # both loops idle, waiting to be woken
            service.notify()
            service.dispatcher.wake()
            try:
                async with asyncio.timeout(5):
                    await service.stop()
            except TimeoutError:
                pytest.fail("the delivery service did not stop within 5 s")
    finally:
        await store.close()


#: Deliveries in the recovery tests (bench/isolation.py measures the issue's 500).
RECOVERY_COUNT = 250


async def _fan_out_and_kill(
    database_url: str, receiver: Receiver, count: int, **env: str
) -> tuple[asyncio.subprocess.Process, set[tuple[str, str]]]:
    """``count`` subscriptions on one slow partner; ``serve`` (with the default delivery
    timeout, so a 92.5 s lease) fans an article out to them and is SIGKILLed midway.
    Returns the killed process and what it had in flight (sent, not recorded)."""
    env = {"SYNDICATE_DELIVERY_TIMEOUT": "15", **env}
    server = await _kill_mid_fan_out(database_url, receiver, count, arrived=50, **env)
    before = {sent(r) for r in receiver.at("/hook")}
    assert len(before) < count, "the kill came mid-fan-out"
    # In flight at the kill: sent (it arrived) but its outcome not yet recorded.
    store = await open_storage(database_url)
    try:
        recorded = {
            n
            for n in range(count)
            for d in await store.list_deliveries(f"sub_{n:04d}")
            if d.status == "delivered"
        }
    finally:
        await store.close()
    in_flight = {key for key in before if int(key[0].rpartition("=")[2]) not in recorded}
    return server, in_flight


async def test_a_restarted_server_sends_its_killed_predecessors_deliveries_at_once(
    database_url: str, receiver: Receiver
) -> None:
    """Finding 3: after a SIGKILL the remaining deliveries waited for the lease
    (92.5 s). A restarted process releases its dead predecessor's claims at start."""
    _, in_flight = await _fan_out_and_kill(database_url, receiver, RECOVERY_COUNT)
    loop = asyncio.get_running_loop()
    restarted = loop.time()
    server = await start(
        "serve",
        "--port",
        str(free_port()),
        database_url=database_url,
        SYNDICATE_DELIVERY_TIMEOUT="15",
    )
    try:
        await receiver.wait_for(
            lambda: len({sent(r) for r in receiver.at("/hook")}) == RECOVERY_COUNT, timeout=15
        )
        assert loop.time() - restarted < 15
    finally:
        server.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(server.wait(), timeout=20) == 0
    arrivals = Counter(sent(r) for r in receiver.at("/hook"))
    assert {key for key, n in arrivals.items() if n > 1} <= in_flight, "duplicates: in flight only"


async def test_a_live_worker_takes_over_a_killed_servers_deliveries_within_seconds(
    database_url: str, receiver: Receiver
) -> None:
    """The same with a second live process and no restart: the dead one's heartbeat
    goes stale and the worker releases and sends what it held (here after 3 s, to keep
    the suite short; bench/isolation.py measures the default 8 s). ``syndicate
    workers`` shows the live processes."""
    liveness = {"SYNDICATE_HEARTBEAT_INTERVAL": "1", "SYNDICATE_WORKER_STALE_AFTER": "3"}
    worker = await start(
        "worker",
        "--create",
        database_url=database_url,
        SYNDICATE_DELIVERY_TIMEOUT="15",
        **liveness,
    )
    try:
        listing = await _workers(database_url)
        assert "1 process" in listing[-1]
        _, in_flight = await _fan_out_and_kill(database_url, receiver, RECOVERY_COUNT, **liveness)
        loop = asyncio.get_running_loop()
        killed_at = loop.time()
        await receiver.wait_for(
            lambda: len({sent(r) for r in receiver.at("/hook")}) == RECOVERY_COUNT, timeout=10
        )
        assert loop.time() - killed_at < 10
        listing = await _workers(database_url)
        assert listing[-1] == "1 process", listing
        assert f" {worker.pid} " in listing[1] and "worker" in listing[1], listing
    finally:
        worker.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(worker.wait(), timeout=20) == 0
    arrivals = Counter(sent(r) for r in receiver.at("/hook"))
    assert {key for key, n in arrivals.items() if n > 1} <= in_flight, "duplicates: in flight only"


async def _workers(database_url: str) -> list[str]:
    cli = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "syndicate",
        "workers",
        "--database",
        database_url,
        stdout=asyncio.subprocess.PIPE,
        env=clean_env(),
    )
    out, _ = await asyncio.wait_for(cli.communicate(), timeout=30)
    assert cli.returncode == 0
    lines = out.decode().splitlines()
    assert lines[0].split()[:2] == ["WORKER", "KIND"]
    return lines
