"""The garbage collector with many long-lived sessions: no full-collection stalls.

A full collection walks every tracked object (~90 ns each here). A waiting session
holds ~290 of them (tasks, coroutines, scopes, channels), so 9,000 waiting sessions
froze every stream of the process for ~2 s in each full collection. Here, every
`every` seconds, the young generations are collected (their cyclic garbage is
freed before it can age) and whatever survived is frozen: moved out of every later
collection. Full collections then walk only what is younger than a second.

Frozen objects are still freed by reference counting the moment nothing refers to
them, which is how every finished session goes (tests/test_collector.py checks that
a finished session leaves no reference cycle behind). Cyclic garbage made of frozen
objects would never be collected: that is the price, kept at zero by that test.
"""

from __future__ import annotations

import gc

import trio

# A young collection when tracked objects have grown by 20,000 since the last, not
# CPython's 700. Under load the objects of the requests in flight cross 700 every
# few requests, and each collection walks all of them still alive: 0.09 ms of a
# round trip's 1.5 ms in the bench (bench/ANALYSIS.md), 0.008 ms with 20,000. The
# longest young collection seen there went from 3 to 6 ms.
YOUNG_THRESHOLD = 20_000


def freeze_start_up_objects() -> None:
    """Move what is alive by now (modules, the app) out of every later collection,
    and collect the young generation once tracked objects have grown by
    `YOUNG_THRESHOLD`."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)


async def keep_collections_short(
    every: float, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Collect the young and freeze the survivors every `every` seconds, until cancelled."""
    task_status.started()
    while True:
        await trio.sleep(every)
        gc.collect(1)
        gc.freeze()
