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


def freeze_start_up_objects() -> None:
    """Move what is alive by now (modules, the app) out of every later collection."""
    gc.collect()
    gc.freeze()


async def keep_collections_short(
    every: float, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Collect the young and freeze the survivors every `every` seconds, until cancelled."""
    task_status.started()
    while True:
        await trio.sleep(every)
        gc.collect(1)
        gc.freeze()
