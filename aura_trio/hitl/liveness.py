"""No request stays pending after the process that waits for it dies.

Every server process (worker) keeps a heartbeat key alive in Redis and lists the
requests its sessions opened in a set of its own (settled ones leave it with the
next heartbeat). Every process also sweeps: a worker whose heartbeat has expired
is dead, so each request in its set that is still pending is moved to
`cancelled`, and its set is dropped. A decision that arrives afterwards gets a
409, as for any session that is gone.
"""

from __future__ import annotations

import logging
import secrets

import trio

from ..bus.redis_bus import RedisBus
from ..errors import StoreUnavailable
from . import records as hitl
from .store import HitlStore

log = logging.getLogger(__name__)

WORKERS_KEY = "aura:workers"


def new_worker_id() -> str:
    return secrets.token_hex(8)


def heartbeat_key(worker_id: str) -> str:
    return f"aura:worker:{worker_id}"


def requests_key(worker_id: str) -> str:
    return f"aura:worker:{worker_id}:requests"


class Liveness:
    """This worker's heartbeat, and the sweep of dead workers' pending requests.

    Args:
        ttl: seconds a heartbeat lives; it is renewed every `ttl / 3`, and a worker
            is declared dead (and swept) once its heartbeat has expired.
    """

    def __init__(self, bus: RedisBus, store: HitlStore, worker_id: str, ttl: int) -> None:
        self._bus = bus
        self._store = store
        self.worker_id = worker_id
        self._ttl = ttl

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Beat, and sweep, every `ttl / 3` seconds until cancelled."""
        task_status.started()
        while True:
            try:
                await self._beat()
                await self.sweep()
            except StoreUnavailable as error:
                log.warning("worker heartbeat or sweep failed: %s", error)
            await trio.sleep(self._ttl / 3)

    async def say_goodbye(self) -> None:
        """On a clean stop: drop this worker's heartbeat, so others sweep what is left."""
        try:
            await self._bus.commands.execute("DEL", heartbeat_key(self.worker_id))
        except StoreUnavailable as error:
            log.warning("could not remove the worker heartbeat: %s", error)

    async def _beat(self) -> None:
        await self._bus.commands.transaction(
            [
                ("SET", heartbeat_key(self.worker_id), b"alive", "EX", self._ttl),
                ("SADD", WORKERS_KEY, self.worker_id),
            ]
        )
        await self._store.flush_disowned()

    async def sweep(self) -> int:
        """Cancel the pending requests of every dead worker; returns how many."""
        commands = self._bus.commands
        swept = 0
        for raw_worker in await commands.execute("SMEMBERS", WORKERS_KEY):
            worker = raw_worker.decode("utf-8", "replace")
            if worker == self.worker_id or await commands.execute("EXISTS", heartbeat_key(worker)):
                continue
            owned = requests_key(worker)
            cancelled = 0
            for raw_id in await commands.execute("SMEMBERS", owned):
                settled = await self._store.settle(
                    raw_id.decode("utf-8", "replace"), hitl.CANCELLED, via="worker_lost"
                )
                if settled is not None and settled.status == hitl.CANCELLED:
                    cancelled += 1
            await commands.transaction([("DEL", owned), ("SREM", WORKERS_KEY, worker)])
            if cancelled:
                log.warning(
                    "cancelled %d pending HITL requests of dead worker %s", cancelled, worker
                )
            swept += cancelled
        return swept
