"""Where one task waits until another wakes it, in a slot of the waited-on object.

A `trio.Event` or `ParkingLot` per waiting session is ~600 B; a channel's receiver
and a session's awaited decision each have at most one task waiting, so a slot for
that task is enough. A subclass keeps its own `__slots__` next to this one.
"""

from __future__ import annotations

from collections.abc import Awaitable

import trio


class OneTaskSlot:
    __slots__ = ("_parked",)

    def __init__(self) -> None:
        self._parked: trio.lowlevel.Task | None = None

    @property
    def task_waiting(self) -> bool:
        return self._parked is not None

    def _park(self) -> Awaitable[object]:
        """What to await to wait until `_wake` (cancellable); `trio.BusyResourceError`
        if a task already waits here. Trio's own wait is returned, not awaited in a
        coroutine of this method: a waiting task holds one frame less (~250 B)."""
        if self._parked is not None:
            raise trio.BusyResourceError("another task is already waiting here")
        self._parked = trio.lowlevel.current_task()
        return trio.lowlevel.wait_task_rescheduled(self._leave)  # noqa: ASYNC105

    def _wake(self) -> bool:
        """Wake the waiting task, if there is one; whether there was."""
        task, self._parked = self._parked, None
        if task is None:
            return False
        trio.lowlevel.reschedule(task)
        return True

    def _leave(self, _: object) -> trio.lowlevel.Abort:
        self._parked = None
        return trio.lowlevel.Abort.SUCCEEDED
