"""The heartbeats' clock: sleeps rounded up to a grain, those due together woken
together by one timer. On trio's autojump clock: virtual time, no waiting."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from aura_trio.sessions.grain_clock import WAKE_AT_ONCE, GrainClock


@pytest.fixture
def autojump() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def _sleep(clock: GrainClock, until: float, woke: dict[float, float]) -> None:
    await clock.sleep_until(until)
    woke[until] = trio.current_time()


@asynccontextmanager
async def _running(grain: float) -> AsyncIterator[tuple[GrainClock, trio.Nursery, float]]:
    """A clock with its timer running, a nursery for sleepers, and a whole second
    ahead as the base time; the sleepers are cancelled at the end."""
    clock = GrainClock(grain)
    async with trio.open_nursery() as nursery:
        await nursery.start(clock.run)
        yield clock, nursery, math.ceil(trio.current_time()) + 10
        nursery.cancel_scope.cancel()


async def test_sleepers_due_within_a_grain_wake_together_at_its_end(autojump):
    woke: dict[float, float] = {}
    async with _running(1.0) as (clock, nursery, base):
        for due in (base + 0.1, base + 0.5, base + 0.9, base + 1.5):
            nursery.start_soon(_sleep, clock, due, woke)
        await trio.sleep_until(base + 0.95)
        assert len(clock) == 4 and not woke  # all parked, on two grains
        await trio.sleep_until(base + 1.0)
        await trio.testing.wait_all_tasks_blocked()
        assert len(clock) == 1  # one grain's lot unparked at once
        await trio.sleep_until(base + 3)
    assert woke == {
        base + 0.1: base + 1,
        base + 0.5: base + 1,
        base + 0.9: base + 1,
        base + 1.5: base + 2,
    }


async def test_a_big_lot_wakes_a_few_per_pass_so_other_tasks_run_between(autojump):
    # Trio runs a whole scheduler pass before it polls the sockets again: a task
    # made runnable while a lot of 1,000 wakes (as an approval's handler would be)
    # must run before the last of them, not after all.
    count = 1_000
    woken: list[int] = []
    first_woke = trio.Event()
    seen_by_other: list[int] = []

    async def sleeper() -> None:
        await clock.sleep_until(base + 0.5)
        woken.append(1)
        first_woke.set()

    async def other() -> None:
        await first_woke.wait()
        seen_by_other.append(len(woken))

    async with _running(1.0) as (clock, nursery, base):
        nursery.start_soon(other)
        for _ in range(count):
            nursery.start_soon(sleeper)
        await trio.sleep_until(base + 2)
    assert len(woken) == count
    assert seen_by_other[0] <= 2 * WAKE_AT_ONCE < count, seen_by_other


async def test_a_sleeper_due_sooner_than_the_timer_waits_for_wakes_on_time(autojump):
    woke: dict[float, float] = {}
    async with _running(0.5) as (clock, nursery, base):
        nursery.start_soon(_sleep, clock, base + 30, woke)
        await trio.sleep_until(base)  # the timer now waits for base + 30
        nursery.start_soon(_sleep, clock, base + 0.2, woke)
        await trio.sleep_until(base + 31)
    assert woke == {base + 0.2: base + 0.5, base + 30: base + 30}


async def test_a_cancelled_sleeper_leaves_its_lot_and_the_others_sleep_on(autojump):
    woke: dict[float, float] = {}
    async with _running(1.0) as (clock, nursery, base):
        doomed = trio.CancelScope()

        async def cancelled_sleeper() -> None:
            with doomed:
                await _sleep(clock, base + 0.5, woke)

        nursery.start_soon(cancelled_sleeper)
        nursery.start_soon(_sleep, clock, base + 0.5, woke)
        await trio.sleep_until(base)
        assert len(clock) == 2
        doomed.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert len(clock) == 1
        await trio.sleep_until(base + 2)
    assert woke == {base + 0.5: base + 1}


async def test_without_its_timer_a_sleep_is_a_plain_one_and_stopping_it_wakes_the_parked(
    autojump,
):
    clock = GrainClock(1.0)
    base = math.ceil(trio.current_time()) + 10
    await clock.sleep_until(base + 0.25)  # not running: trio's own sleep, rounded up
    assert trio.current_time() == base + 1
    woke: dict[float, float] = {}
    async with trio.open_nursery() as nursery:
        timer = trio.CancelScope()

        async def run_timer(task_status: trio.TaskStatus[None]) -> None:
            with timer:
                await clock.run(task_status=task_status)

        await nursery.start(run_timer)
        nursery.start_soon(_sleep, clock, base + 40, woke)
        await trio.sleep_until(base + 5)
        timer.cancel()  # the process stops: the parked wake early, not never
    assert woke == {base + 40: base + 5}
    with pytest.raises(ValueError, match="positive"):
        GrainClock(0)
