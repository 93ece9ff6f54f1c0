"""Sleeps that wake together: one timer for every heartbeat of a process.

A heartbeat sleeping with `trio.sleep_until` holds a cancel scope and a deadline in
trio's heap, and is woken by a Cancelled raised and caught: per session, per beat.
Here a sleep is rounded up to the clock's grain and parked on that grain's
ParkingLot; one task unparks each lot when its time comes. A parked sleeper holds
a lot entry, and wakes without an exception.

A lot is woken `WAKE_AT_ONCE` sleepers per scheduler pass: trio runs a whole pass
before it looks at the sockets again, so 500 heartbeats woken at once held every
approval arriving meanwhile for ~20 ms (4 workers, 30,000 sessions).
"""

from __future__ import annotations

import math

import trio

WAKE_AT_ONCE = 64


class GrainClock:
    """Sleeps rounded up to `grain` seconds, those due together woken together,
    `WAKE_AT_ONCE` per scheduler pass.

    Until :meth:`run` runs (and after it stops) a sleep is a plain
    `trio.sleep_until` of the rounded time.
    """

    def __init__(self, grain: float) -> None:
        if not grain > 0:
            raise ValueError("a grain is a positive number of seconds")
        self.grain = grain
        self._lots: dict[int, trio.lowlevel.ParkingLot] = {}
        self._running = False
        self._next_tick: float = math.inf  # the tick the timer waits for
        self._sooner = trio.Event()

    async def sleep_until(self, when: float) -> None:
        """Sleep until `when` (trio time) rounded up to the grain."""
        tick = math.ceil(when / self.grain)
        if not self._running:
            await trio.sleep_until(tick * self.grain)
            return
        if tick * self.grain <= trio.current_time():
            await trio.lowlevel.checkpoint()
            return
        lot = self._lots.get(tick)
        if lot is None:
            lot = self._lots[tick] = trio.lowlevel.ParkingLot()
            if tick < self._next_tick:
                self._sooner.set()
        await lot.park()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Wake the sleepers when their grain comes, until cancelled."""
        self._running = True
        task_status.started()
        try:
            while True:
                self._sooner = trio.Event()
                self._next_tick = min(self._lots, default=math.inf)
                with trio.move_on_at(self._next_tick * self.grain):
                    await self._sooner.wait()  # a sleeper due sooner came
                now = trio.current_time()
                for tick in [t for t in self._lots if t * self.grain <= now]:
                    lot = self._lots[tick]  # no sleeper joins a due lot
                    while lot.unpark(count=WAKE_AT_ONCE) and lot:
                        await trio.lowlevel.checkpoint()
                    del self._lots[tick]
        finally:
            self._running = False
            # Those parked wake early rather than never (a heartbeat checks the time).
            for lot in self._lots.values():
                lot.unpark_all()
            self._lots.clear()

    def __len__(self) -> int:
        """How many sleepers are parked."""
        return sum(len(lot) for lot in self._lots.values())
