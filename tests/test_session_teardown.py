"""One session = one nursery (docs/contract.md#one-session-one-nursery): a client that leaves tears everything down."""

from __future__ import annotations

import socket

import trio

from aura_trio.agents import AgentContext
from aura_trio.metrics import live_tasks
from aura_trio.sessions import events

from .helpers import HOST, auth, eventually, stored_request, stream_target, until_hitl


def all_tasks() -> list[trio.lowlevel.Task]:
    return list(live_tasks())


def session_tasks() -> list[str]:
    return [
        t.name
        for t in all_tasks()
        if "aura_trio.sessions.session" in t.name or "aura_trio.hitl.waiter" in t.name
    ]


async def open_stream_and_stop_reading(port: int) -> trio.socket.SocketType:
    """Open a stream on a socket with a tiny receive buffer, and never read from it."""
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect((HOST, port))
    headers = "".join(f"{k}: {v}\r\n" for k, v in auth().items())
    await sock.send(f"GET {stream_target('go')} HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
    return sock


async def test_disconnect_while_waiting_tears_the_session_down(aura, raw_redis):
    baseline = len(all_tasks())
    async with aura.stream("merge please") as stream:
        hitl = await until_hitl(stream)
        assert len(aura.state.registry) == 1
        assert aura.state.bus.subscription_count == 1
        names = session_tasks()
        for part in ("_run_agent", "_heartbeat", "SignalWaiter.run"):
            assert any(part in name for name in names), (part, names)
    # The client is gone: within a second, nothing of the session is left.
    await eventually(
        lambda: (
            not session_tasks()
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

    class Chatty:
        async def run(self, ctx: AgentContext) -> None:
            nonlocal emitted
            try:
                while True:
                    await ctx.emit(events.content("x" * 100, chunk=True))
                    emitted += 1
                    await trio.sleep(0.001)
            finally:
                cleanups.append(emitted)

    aura = await start_server(agent=Chatty())
    async with aura.stream("go") as stream:
        async for frame in stream:
            if frame.id and frame.id > 20:
                break
    await eventually(lambda: not session_tasks() and len(aura.state.registry) == 0, within=1.0)
    assert len(cleanups) == 1
    count = emitted
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
    previous = -1
    with trio.fail_after(20):
        while produced != previous:
            previous = produced
            await trio.sleep(0.5)
    assert produced < 5000, (
        f"{produced} x 4 KiB events were buffered for a client that reads nothing"
    )
    assert len(aura.state.registry) == 1
    sock.close()
    await eventually(lambda: len(aura.state.registry) == 0, within=2.0)


async def test_client_that_accepts_no_bytes_is_dropped_after_send_timeout(start_server):
    class Firehose:
        async def run(self, ctx: AgentContext) -> None:
            while True:
                await ctx.emit(events.content("z" * 4096, chunk=True))

    aura = await start_server(agent=Firehose(), send_timeout_seconds=0.5)
    sock = await open_stream_and_stop_reading(aura.port)
    await eventually(lambda: len(aura.state.registry) == 1, within=2.0)
    await eventually(lambda: len(aura.state.registry) == 0 and not session_tasks(), within=5.0)
    sock.close()


async def test_a_stuck_client_cannot_hold_shutdown_past_the_grace(start_server):
    class Firehose:
        async def run(self, ctx: AgentContext) -> None:
            while True:
                await ctx.emit(events.content("s" * 4096, chunk=True))

    aura = await start_server(
        agent=Firehose(), send_timeout_seconds=60.0, shutdown_grace_seconds=2.0
    )
    sock = await open_stream_and_stop_reading(aura.port)
    await eventually(lambda: len(aura.state.registry) == 1, within=2.0)
    await trio.sleep(0.5)  # let the buffers fill: the server is now blocked writing to us
    aura.stop.set()
    # Bounded by the grace (2 s) plus the connection close reserve, not by the 60 s send timeout.
    with trio.fail_after(5):
        await aura.stopped.wait()
    assert len(aura.state.registry) == 0
    sock.close()
