"""One session = one nursery (docs/contract.md#one-session-one-nursery): a client that leaves tears everything down.

A session's tasks are found through Trio's public task tree, not by their names: an
agent records its own task's nursery, which holds the session's three tasks (the
agent, the heartbeat and the signal waiter: the tree in ARCHITECTURE.md).
In-process servers; each test is bounded by conftest's default 60 s.
"""

from __future__ import annotations

import trio

from aura_trio.agents import AgentContext, BuiltinAgent
from aura_trio.metrics import live_tasks
from aura_trio.sessions import events

from .helpers import (
    eventually,
    open_stream_and_stop_reading,
    stored_request,
    until_hitl,
    until_stalled,
)


def all_tasks() -> list[trio.lowlevel.Task]:
    return list(live_tasks())


class SessionTasks:
    """The tasks of the sessions whose agents called :meth:`record`."""

    def __init__(self) -> None:
        self.tasks: set[trio.lowlevel.Task] = set()

    def record(self) -> None:
        """Called from an agent: its task, and the tasks of the session's nursery (the
        agent runs in the nursery's own task)."""
        task = trio.lowlevel.current_task()
        (nursery,) = task.child_nurseries
        self.tasks |= {task, *nursery.child_tasks}

    def alive(self) -> set[trio.lowlevel.Task]:
        return self.tasks & set(all_tasks())


class Recorded:
    """The built-in agent, recording its session's tasks first."""

    def __init__(self, tasks: SessionTasks) -> None:
        self.tasks = tasks
        self.agent = BuiltinAgent(delay=0.0)

    async def run(self, ctx: AgentContext) -> None:
        self.tasks.record()
        await self.agent.run(ctx)


async def test_disconnect_while_waiting_tears_the_session_down(start_server, raw_redis):
    session = SessionTasks()
    aura = await start_server(agent=Recorded(session))
    baseline = len(all_tasks())
    async with aura.stream("merge please") as stream:
        hitl = await until_hitl(stream)
        assert len(aura.state.registry) == 1
        assert aura.state.bus.subscription_count == 1
        # The agent (waiting for the decision), the heartbeat and the signal waiter.
        assert len(session.tasks) == 3 and session.alive() == session.tasks
    # The client is gone: within a second, nothing of the session is left.
    await eventually(
        lambda: (
            not session.alive()
            and aura.state.bus.subscription_count == 0
            and len(aura.state.registry) == 0
            and stored_request(raw_redis, hitl["requestId"])["status"] == "cancelled"
        ),
        within=1.0,
    )
    await eventually(lambda: len(all_tasks()) == baseline, within=1.0)
    late = await aura.approve(hitl["requestId"])
    assert late.status == 409
    assert "cancelled" in late.json()["message"]


async def test_disconnect_while_streaming_runs_cleanup_once(start_server):
    emitted = 0
    cleanups = []

    session = SessionTasks()

    class Chatty:
        async def run(self, ctx: AgentContext) -> None:
            nonlocal emitted
            session.record()
            try:
                while True:
                    await ctx.emit(events.content("x" * 100, chunk=True))
                    emitted += 1
                    await trio.sleep(0.001)  # the agent's pace: an event every millisecond
            finally:
                cleanups.append(emitted)

    aura = await start_server(agent=Chatty())
    async with aura.stream("go") as stream:
        async for frame in stream:
            if frame.id and frame.id > 20:
                break
    await eventually(lambda: not session.alive() and len(aura.state.registry) == 0, within=1.0)
    assert len(cleanups) == 1
    count = emitted
    # Not synchronisation: a window in which a live agent would have emitted ~100 more.
    await trio.sleep(0.1)
    assert emitted == count  # the agent is really gone, not merely unobserved


async def test_client_that_stops_reading_is_backpressured_not_buffered(start_server):
    produced = 0

    class Firehose:
        async def run(self, ctx: AgentContext) -> None:
            nonlocal produced
            while True:
                await ctx.emit(events.content("y" * 4096, chunk=True))
                produced += 1

    aura = await start_server(agent=Firehose(), send_timeout_seconds=30.0)
    sock = await open_stream_and_stop_reading(aura.port)
    # Read nothing more: the producer must stall once socket buffers and the outbox are full.
    await until_stalled(lambda: produced, quiet=0.5, within=20)
    assert produced < 5000, (
        f"{produced} x 4 KiB events were buffered for a client that reads nothing"
    )
    assert len(aura.state.registry) == 1
    sock.close()
    await eventually(lambda: len(aura.state.registry) == 0, within=2.0)


async def test_client_that_accepts_no_bytes_is_dropped_after_send_timeout(start_server):
    session = SessionTasks()

    class Firehose:
        async def run(self, ctx: AgentContext) -> None:
            session.record()
            while True:
                await ctx.emit(events.content("z" * 4096, chunk=True))

    aura = await start_server(agent=Firehose(), send_timeout_seconds=0.5)
    sock = await open_stream_and_stop_reading(aura.port)
    await eventually(lambda: len(aura.state.registry) == 1, within=2.0)
    await eventually(lambda: len(aura.state.registry) == 0 and not session.alive(), within=5.0)
    sock.close()


async def test_a_stuck_client_cannot_hold_shutdown_past_the_grace(start_server):
    produced = 0

    class Firehose:
        async def run(self, ctx: AgentContext) -> None:
            nonlocal produced
            while True:
                await ctx.emit(events.content("s" * 4096, chunk=True))
                produced += 1

    aura = await start_server(
        agent=Firehose(), send_timeout_seconds=60.0, shutdown_grace_seconds=2.0
    )
    sock = await open_stream_and_stop_reading(aura.port)
    await eventually(lambda: len(aura.state.registry) == 1, within=2.0)
    # The buffers are full once the agent stalls: the server is blocked writing to us.
    await until_stalled(lambda: produced, quiet=0.5, within=20)
    aura.stop.set()
    # Bounded by the grace (2 s) plus the connection close reserve, not by the 60 s send timeout.
    with trio.fail_after(5):
        await aura.stopped.wait()
    assert len(aura.state.registry) == 0
    sock.close()
