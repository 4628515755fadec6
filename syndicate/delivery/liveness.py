"""Worker liveness: each process that claims deliveries heartbeats in the database.

A process whose heartbeat is older than ``worker_stale_after`` is taken as dead by
any live process, which releases the deliveries it held (claimable at once, not at
lease expiry) and forgets it. At start a process also releases those of any earlier
process on the same machine whose pid is gone: a restart picks up its predecessor's
work at once (the only case on SQLite, whose processes share one machine).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from datetime import timedelta

from storage import Storage, StorageError
from syndicate.core.settings import Settings

logger = logging.getLogger("syndicate.liveness")  # the name logs have always had


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, someone else's
        return True
    return True


class Liveness:
    """Registers ``worker_id``, heartbeats every ``heartbeat_interval`` and releases
    the dead's claims; ``on_released`` is called when any were released."""

    def __init__(
        self,
        storage: Storage,
        settings: Settings,
        worker_id: str,
        *,
        kind: str,
        on_released: Callable[[], None],
    ) -> None:
        self.storage = storage
        self.settings = settings
        self.worker_id = worker_id
        self.kind = kind
        self.on_released = on_released
        self.hostname = socket.gethostname()
        #: Since when every heartbeat got through (None: the last one failed).
        self._healthy_since: float | None = None

    async def register(self) -> None:
        await self.storage.register_worker(
            self.worker_id, hostname=self.hostname, pid=os.getpid(), kind=self.kind
        )

    async def start(self) -> None:
        """Register and release what this machine's dead processes hold; failures are
        logged (the database may be down at start: the heartbeat loop tries again)."""
        try:
            await self.register()
            self._healthy_since = time.monotonic()
            await self.release_dead(local=True)
        except StorageError as exc:
            logger.warning("worker registration failed; retrying", extra={"error": str(exc)})

    async def release_dead(self, *, local: bool = False) -> int:
        """Release the claims of processes on this machine that no longer run
        (``local``, at start), or else of processes whose heartbeat is stale, once
        this one has heartbeated for a whole staleness window itself: after an
        outage of the database nobody's heartbeat got through, and the first process
        back must not take the others for dead. Returns how many deliveries."""
        dead: list[str] = []
        if local:
            for worker in await self.storage.list_workers():
                if (
                    worker.id != self.worker_id
                    and worker.hostname == self.hostname
                    and not pid_alive(worker.pid)
                ):
                    dead.append(worker.id)
            if not dead:
                return 0
            stale_after = timedelta(days=3650)  # at start: only the dead pids
        else:
            window = self.settings.worker_stale_after
            if self._healthy_since is None or time.monotonic() - self._healthy_since < window:
                return 0
            stale_after = timedelta(seconds=window)
        released = await self.storage.release_workers(
            stale_after=stale_after, dead=dead, keep=self.worker_id
        )
        total = sum(released.values())
        for worker_id, count in released.items():
            logger.warning(
                "released the deliveries of a dead process",
                extra={"worker": worker_id, "deliveries": count},
            )
        if total:
            self.on_released()
        return total

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval)
            try:
                if not await self.storage.heartbeat_worker(self.worker_id):
                    # Taken for dead (a stall or an outage longer than the staleness
                    # window): its claims were released; register again.
                    logger.warning("this process was taken for dead; registering again")
                    await self.register()
                if self._healthy_since is None:
                    self._healthy_since = time.monotonic()
                await self.release_dead()
            except StorageError as exc:
                self._healthy_since = None
                logger.warning("heartbeat failed", extra={"error": str(exc)})
            except Exception:
                logger.exception("heartbeat failed unexpectedly")

    async def stop(self) -> None:
        with contextlib.suppress(StorageError):
            await self.storage.unregister_worker(self.worker_id)
