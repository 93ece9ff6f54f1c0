"""Keep-alive timers of a server's connections, kept by one task.

Hypercorn's trio worker times each idle period of each connection with a task of
its own: every response restarts it (`nursery.start`, which opens a nursery of its
own, plus a lock, a cancel scope with a deadline and an event wait) and every
request cancels it. A round trip paid for three of them. Here a connection that
goes idle is an entry in an ordered dict, and one task closes the connections idle
past the timeout: going idle and busy again costs a dict update.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

log = logging.getLogger(__name__)


class Closable(Protocol):
    def _initiate_server_close(self) -> Awaitable[None]: ...


class KeepAliveTimers:
    """When each idle connection went idle; one task closes those idle too long.

    The dict is in the order connections went idle (a connection going idle again
    moves to the end), so the first entry is always the next to expire.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.idle: dict[Closable, float] = {}
        self.closing = False
        self._changed = trio.Event()

    def went_idle(self, connection: Closable) -> None:
        idle = self.idle
        idle.pop(connection, None)
        idle[connection] = trio.current_time()
        if self.closing:
            self._changed.set()  # close it now

    def went_busy(self, connection: Closable) -> None:
        self.idle.pop(connection, None)

    def close_all(self) -> None:
        """Shutting down: close every idle connection now, and any that goes idle later."""
        self.closing = True
        self._changed.set()

    async def watch(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Close connections idle past the timeout (all idle ones once closing), until
        cancelled."""
        task_status.started()
        while True:
            first = next(iter(self.idle.values()), None)
            if self.closing and first is not None:
                deadline = -math.inf
            elif first is None:
                # Nothing idle: look again in a timeout, which is no later than any
                # connection going idle meanwhile expires, so going idle wakes no one.
                deadline = trio.current_time() + self.timeout
            else:
                deadline = first + self.timeout
            with trio.move_on_at(deadline):
                await self._changed.wait()
            self._changed = trio.Event()
            now = trio.current_time()
            overdue = []
            for connection, since in self.idle.items():
                if not self.closing and since + self.timeout > now:
                    break
                overdue.append(connection)
            for connection in overdue:
                del self.idle[connection]
            for connection in overdue:
                await _close(connection._initiate_server_close)


async def _close(close: Callable[[], Awaitable[None]]) -> None:
    # As Hypercorn's own idle task does it: shielded; but here a failure must not end
    # the one task that times every connection.
    with trio.CancelScope(shield=True):
        try:
            await close()
        except Exception:
            log.exception("closing an idle connection failed")


class IdleTimer:
    """Stands in for Hypercorn's per-connection `TrioSingleTask` idle timer."""

    __slots__ = ("_connection", "_timers")

    def __init__(self, timers: KeepAliveTimers, connection: Closable) -> None:
        self._timers = timers
        self._connection = connection

    async def restart(self, task_group: object, action: object) -> None:
        self._timers.went_idle(self._connection)

    async def stop(self) -> None:
        self._timers.went_busy(self._connection)
