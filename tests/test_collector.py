"""A finished session leaves no reference cycle behind.

The server freezes what survives each second (aura_trio/collector.py), so full
collections never walk the long-lived sessions. That is only safe if a session,
once finished, is freed by reference counting alone: cyclic garbage made of frozen
objects is never collected. This runs every kind of ending against a real server
process (`python -m bench.aura_server`: the same app, plus a read-only stats
route) and asks the server's own collector what only a cycle keeps alive.

Loopback only, a real Redis, a server process on port 0, stopped in `finally`;
bounded by conftest's default 60 s.
"""

from __future__ import annotations

import gc
import sys
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

import trio

from aura_trio import client
from aura_trio.collector import freeze_start_up_objects
from bench import harness

from .helpers import HOST, SECRET, auth, eventually, stream_target

ROOT = Path(__file__).resolve().parent.parent
# Types that, left as cyclic garbage, would say a session or its connection leaks.
_OURS = ("aura_trio.", "hypercorn.", "h11.", "quart", "werkzeug.", "trio", "wsproto.")


async def _stats(port: int, query: str) -> dict[str, Any]:
    response = await client.request(HOST, port, "GET", f"/bench/stats?{query}", headers=auth())
    assert response.status == 200
    data: dict[str, Any] = response.json()
    return data


async def _one_of_each(port: int, n: int) -> None:
    headers = auth(f"user{n}")
    # completed, approved, rejected, timed out, disconnected, over SSE
    async with client.open_sse(HOST, port, stream_target("hello"), headers=headers) as stream:
        await stream.read_body()
    for verb in ("approve", "reject", None):
        async with client.open_sse(HOST, port, stream_target("merge"), headers=headers) as stream:
            request_id = (await stream.events_until("hitl"))[-1].json()["data"]["requestId"]
            if verb is not None:
                await client.request(
                    HOST, port, "POST", f"/aura/hitl/{verb}/{request_id}", headers=headers
                )
            await stream.read_body()  # with no decision: the 1 s timeout ends it
    async with client.open_sse(HOST, port, stream_target("merge"), headers=headers) as stream:
        await stream.events_until("hitl")  # then the client goes away
    # approved on the socket, and cancelled on the socket
    for last in ("approve", "cancel"):
        async with client.open_ws(HOST, port, headers=headers) as ws:
            await ws.start("merge")
            request_id = (await ws.until("hitl"))[-1]["data"]["data"]["requestId"]
            if last == "approve":
                await ws.decide("approve", request_id)
            else:
                await ws.send("cancel")
            await ws.rest()


async def test_a_finished_session_leaves_no_reference_cycle(tmp_path: Path, redis_server):
    env = {
        "SECRET_KEY": SECRET,
        "REDIS_URL": redis_server.url,
        "AURA_EVENT_DELAY_SECONDS": "0",
        "AURA_HITL_TIMEOUT_SECONDS": "1",
        "AURA_GC_FREEZE_SECONDS": "0.05",  # freeze while the sessions wait
        # A cycle the server's own collections find is kept, not freed, for the census:
        # else whether one is seen depends on which collection came first.
        "BENCH_GC_SAVEALL": "1",
        "AURA_LOG_LEVEL": "WARNING",
        "PATH": "/usr/bin:/bin",
    }
    start = partial(
        harness.start_server,
        [sys.executable, "-m", "bench.aura_server", "--host", HOST, "--port", "0"],
        env=env,
        log_path=tmp_path / "server.log",
        cwd=ROOT,
    )
    server = await trio.to_thread.run_sync(start)
    try:
        port = server.port
        await _one_of_each(port, 0)  # warm-up: first-use caches are not garbage
        await _stats(port, "garbage=1")  # and the warm-up's garbage is not counted

        async def settled() -> bool:
            return (await _stats(port, ""))["sessions"] == 0

        frozen = []
        garbage: Counter[str] = Counter()
        for _ in range(5):
            async with trio.open_nursery() as nursery:
                for n in range(1, 11):
                    nursery.start_soon(_one_of_each, port, n)
            await eventually(settled, within=10, step=0.05)
            after = await _stats(port, "garbage=1")
            garbage.update(after["garbage"])
            frozen.append(after["frozen"])

    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(harness.stop_process, server.process)
    sessions = 5 * 10 * 7
    garbage.pop("per-request cycles", None)  # werkzeug's route matcher's, not a session's
    leaking = {name: count for name, count in garbage.items() if name.startswith(_OURS)}
    assert leaking == {}, f"cyclic garbage after {sessions} sessions: {garbage}"
    assert sum(garbage.values()) < sessions, garbage  # not even one object per session
    # What was frozen while the sessions waited was freed with them: batch after batch
    # the frozen count (what is alive: the census frees the cyclic garbage it saw and
    # freezes again) stays level, wobbling with caches and timing by ~2,000; a leak of
    # even a tenth of a session's ~290 objects would add ~6,000 here.
    assert min(frozen[-2:]) - min(frozen[:2]) < 2_500, frozen


def test_young_collections_wait_for_twenty_thousand_new_objects():
    """Start-up's collector policy (what `aura-trio serve` runs before serving): 5,000
    new objects run no young collection, where CPython's default runs several."""
    threshold = gc.get_threshold()
    started: list[int] = []

    def note(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started.append(info["generation"])

    try:
        freeze_start_up_objects()
        gc.callbacks.append(note)
        with_policy = [[] for _ in range(5_000)]
        assert started == [], started
        gc.set_threshold(*threshold)
        by_default = [[] for _ in range(5_000)]
        assert started, "CPython's default ran no collection either"
    finally:
        if note in gc.callbacks:
            gc.callbacks.remove(note)
        gc.set_threshold(*threshold)
        gc.unfreeze()
    assert len(with_policy) == len(by_default) == 5_000
