"""How a WebSocket session ends when the client misbehaves or leaves, and on shutdown
(docs/websocket.md#endings, #close-codes): torn down as an SSE disconnect, or closed
with the protocol's code.

Rules: a real server on a loopback port the OS picked (port 0) and a real Redis,
reached over TCP (trio-websocket, or wsproto on a raw socket for a client that drops
the connection or never reads); every test bounded by a `trio.fail_after` (conftest).
"""

from __future__ import annotations

import json

import trio
from wsproto.events import TextMessage

from aura_trio.agents import AgentContext
from aura_trio.metrics import live_tasks
from aura_trio.sessions import events
from aura_trio.sessions.ws_protocol import MAX_MESSAGE_BYTES

from .helpers import auth, eventually, stored_request
from .ws_helpers import close_code, kinds_of, raw_upgrade, until_hitl

_SESSION_TASKS = ("aura_trio.sessions.session.", "aura_trio.hitl.waiter.", "ws_socket")


def session_tasks() -> list[str]:
    return [t.name for t in live_tasks() if any(part in t.name for part in _SESSION_TASKS)]


def all_gone(aura, raw_redis, request_id: str):
    return lambda: (
        not session_tasks()
        and len(aura.state.registry) == 0
        and aura.state.bus.subscription_count == 0
        and stored_request(raw_redis, request_id)["status"] == "cancelled"
    )


async def test_a_client_that_closes_tears_the_session_down_within_a_second(aura, raw_redis):
    async with aura.ws() as ws:
        await ws.start("merge please")
        hitl = await until_hitl(ws)
        assert any("_read" in name for name in session_tasks())
    await eventually(all_gone(aura, raw_redis, hitl["requestId"]), within=1.0)
    late = await aura.approve(hitl["requestId"])
    assert late.status == 409 and late.json()["errorCode"] == "HITL_NOT_PENDING"


async def test_a_client_that_drops_tcp_tears_the_session_down_within_a_second(aura, raw_redis):
    raw = await raw_upgrade(aura.port, auth())
    await raw.send_json(type="start", prompt="merge please")
    request_id = (await raw.until("hitl"))[0][-1]["data"]["data"]["requestId"]
    await raw.drop()
    await eventually(all_gone(aura, raw_redis, request_id), within=1.0)
    late = await aura.approve(request_id)
    assert late.status == 409


class Firehose:
    async def run(self, ctx: AgentContext) -> None:
        while True:
            await ctx.emit(events.content("z" * 4096, chunk=True))


async def test_a_client_that_stops_reading_is_dropped_after_the_send_timeout(start_server):
    aura = await start_server(agent=Firehose(), send_timeout_seconds=0.5)
    raw = await raw_upgrade(aura.port, auth(), receive_buffer=4096)
    await raw.send_json(type="start", prompt="go")
    # Reads nothing more: the server's writes block, and it gives up on the client.
    await eventually(lambda: len(aura.state.registry) == 1, within=2.0)
    await eventually(lambda: len(aura.state.registry) == 0 and not session_tasks(), within=5.0)
    await raw.drop()


async def test_a_binary_message_closes_with_1003(aura, raw_redis):
    async with aura.ws() as ws:
        await ws.start("merge please")
        hitl = await until_hitl(ws)
        await ws.ws.send_message(b'{"type":"cancel"}')
        messages = await ws.rest()
        assert close_code(ws) == 1003
    assert "done" not in kinds_of(messages)
    await eventually(all_gone(aura, raw_redis, hitl["requestId"]), within=1.0)


async def test_a_message_over_64_kib_closes_with_1009(aura, raw_redis):
    ascii_big = json.dumps({"type": "cancel", "pad": "x" * MAX_MESSAGE_BYTES})
    wide = json.dumps({"type": "cancel", "pad": "가" * 30000}, ensure_ascii=False)
    assert len(wide) < MAX_MESSAGE_BYTES < len(wide.encode())  # over in bytes only
    for big in (ascii_big, wide):
        async with aura.ws() as ws:
            await ws.start("merge please")
            hitl = await until_hitl(ws)
            await ws.ws.send_message(big)
            messages = await ws.rest()
            assert close_code(ws) == 1009
        assert "done" not in kinds_of(messages)
        await eventually(all_gone(aura, raw_redis, hitl["requestId"]), within=1.0)


async def test_a_flood_closes_with_1008_and_leaves_nothing_behind(aura):
    await trio.sleep(0.1)  # the app's background tasks are all up
    baseline = len(list(live_tasks()))
    raw = await raw_upgrade(aura.port, auth())
    await raw.send_json(type="start", prompt="merge please")
    await raw.until("hitl")
    # 3,000 messages in one write: far more than the server's queues hold.
    noop = TextMessage(data='{"type":"noop"}')
    await raw.stream.send_all(b"".join(raw.connection.send(noop) for _ in range(3000)))
    messages, code = await raw.until(None)
    assert code == 1008
    errors = [m for m in messages if m["type"] == "error"]
    assert 50 <= len(errors) <= 300 and "done" not in kinds_of(messages)
    await eventually(lambda: len(aura.state.registry) == 0 and not session_tasks(), within=1.0)
    # Nothing of the connection is left waiting: what the client sent after the
    # close was taken and dropped, so Hypercorn's reader and the close went through.
    await raw.drop()
    await eventually(lambda: len(list(live_tasks())) <= baseline, within=3.0)


async def test_a_burst_within_the_rate_is_answered(aura):
    async with aura.ws() as ws:
        for _ in range(80):
            await ws.ws.send_message('{"type":"noop"}')
        for _ in range(80):
            assert (await ws.receive())["errorCode"] == "VALIDATION_ERROR"
        await ws.start("hi")
        assert (await ws.rest())[-1] == {"type": "done"} and close_code(ws) == 1000


async def test_no_start_in_time_closes_with_1008(start_server):
    aura = await start_server(send_timeout_seconds=0.5)
    async with aura.ws() as ws:
        started = trio.current_time()
        assert await ws.rest() == []
        assert close_code(ws) == 1008
        assert 0.4 < trio.current_time() - started < 3
    await eventually(lambda: len(aura.state.registry) == 0, within=1.0)


async def test_shutdown_ends_open_sockets_with_server_shutdown_done_and_1001(
    start_server, raw_redis
):
    aura = await start_server()
    async with aura.ws() as waiting, aura.ws() as not_started:
        await waiting.start("merge please")
        hitl = await until_hitl(waiting)
        aura.stop.set()
        results = [await waiting.rest(), await not_started.rest()]
        assert close_code(waiting) == close_code(not_started) == 1001
    for messages in results:
        assert kinds_of(messages) == ["event:error", "done"]
        assert messages[0]["data"]["errorType"] == "ServerShutdown"
    assert results[0][0]["id"] == 8 and results[1][0]["id"] == 1
    assert stored_request(raw_redis, hitl["requestId"])["status"] == "cancelled"
    with trio.fail_after(5):
        await aura.stopped.wait()


async def test_a_stuck_socket_cannot_hold_shutdown_past_the_grace(start_server):
    aura = await start_server(
        agent=Firehose(), send_timeout_seconds=60.0, shutdown_grace_seconds=2.0
    )
    raw = await raw_upgrade(aura.port, auth(), receive_buffer=4096)
    await raw.send_json(type="start", prompt="go")
    await eventually(lambda: len(aura.state.registry) == 1, within=2.0)
    await trio.sleep(0.5)  # the buffers fill: the server is now blocked writing to us
    aura.stop.set()
    # Bounded by the grace (2 s) plus the connection close reserve, not by the 60 s send timeout.
    with trio.fail_after(5):
        await aura.stopped.wait()
    assert len(aura.state.registry) == 0
    await raw.drop()
