"""Many clients at once: a reconnect storm, and a crowd of clients that stop reading.

In-process servers; both tests are `slow` (~12 s each), bounded by conftest's default
60 s (the storm also by its own `fail_after(60)`).
"""

from __future__ import annotations

import resource

import pytest
import trio

from aura_trio import client
from aura_trio.agents import AgentContext
from aura_trio.sessions import events
from aura_trio.sessions.session import OUTBOX_FRAMES

from .helpers import (
    HOST,
    auth,
    events_of,
    eventually,
    listen_overflows,
    open_stream_and_stop_reading,
    rest_of,
    stream_target,
    until_hitl,
    until_stalled,
)


@pytest.mark.slow
async def test_reconnect_storm_of_1000_streams_is_served(start_server):
    """A Gateway restart: 1,000 streams opened at once, all waiting, then all approved."""
    aura = await start_server()
    overflows = listen_overflows()
    tokens = {n: auth(f"user{n}") for n in range(1000)}
    waiting: dict[int, str] = {}
    ended: list[str] = []

    async def one(n: int) -> None:
        async with client.open_sse(
            HOST, aura.port, stream_target("merge"), headers=tokens[n]
        ) as stream:
            assert stream.status == 200
            waiting[n] = (await until_hitl(stream))["requestId"]
            ended.extend(events_of(await rest_of(stream))[-1:])

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for n in range(1000):
                nursery.start_soon(one, n)
            await eventually(lambda: len(waiting) == 1000, within=60, step=0.05)
            assert len(aura.state.registry) == 1000
            for n, request_id in waiting.items():
                nursery.start_soon(aura.approve, request_id, tokens[n])
    assert ended == ["end"] * 1000
    if overflows is not None:
        assert listen_overflows() == overflows, "connections were dropped from the accept queue"


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


@pytest.mark.slow
async def test_500_clients_that_stop_reading_hold_bounded_memory_then_are_dropped(start_server):
    produced = 0

    class Firehose:
        async def run(self, ctx: AgentContext) -> None:
            nonlocal produced
            while True:
                await ctx.emit(events.content("m" * 1024, chunk=True))
                produced += 1

    aura = await start_server(agent=Firehose(), send_timeout_seconds=8.0, max_streams_per_user=1000)
    sockets = [await open_stream_and_stop_reading(aura.port) for _ in range(500)]
    await eventually(lambda: len(aura.state.registry) == 500, within=20)
    # Every producer stalls: socket buffers and the bounded outboxes are full.
    await until_stalled(lambda: produced, quiet=0.5, within=20)
    stalled_rss = _rss_bytes()
    # Not synchronisation: the stall goes on for a second, and memory must not grow.
    await trio.sleep(1)
    # What the server holds per client is its bounded outbox, however long they stall.
    outboxes = [len(session.frames) for session in aura.state.registry]
    assert outboxes and max(outboxes) <= OUTBOX_FRAMES
    assert _rss_bytes() - stalled_rss < 16 * 2**20
    # And after the send timeout, every one of them is dropped and torn down.
    await eventually(lambda: len(aura.state.registry) == 0, within=20)
    for sock in sockets:
        sock.close()
