"""The WebSocket transport's session (docs/websocket.md): framing and ids, every ending,
and decisions over the socket, over HTTP and through a Java-style signal.

Rules: a real server on a loopback port the OS picked (port 0) and a real Redis,
reached over TCP with the trio-websocket client; every test bounded by a
`trio.fail_after` (conftest).
"""

from __future__ import annotations

import json
import re

import trio

from aura_trio.agents import AgentContext, StreamRequest
from aura_trio.sessions import events

from .helpers import auth, java_signal, rest_of, stored_request
from .helpers import until_hitl as sse_until_hitl
from .ws_helpers import close_code, events_of, kinds_of, raw_upgrade, until_hitl


def masked(data: object) -> str:
    """An event's data with what differs from run to run (ids, clocks) masked."""
    text = re.sub(r"(sess|req)_[0-9a-f]{32}", r"\1_X", json.dumps(data, ensure_ascii=False))
    return re.sub(r'"(timestamp|expiresAt)": \d+', r'"\1": 0', text)


async def test_the_socket_carries_the_streams_events_then_one_done_and_1000(aura):
    async with aura.ws() as ws:
        await ws.start("merge please")
        before = await ws.ws.get_message(), await ws.ws.get_message()
        assert all(isinstance(m, str) for m in before)  # text messages
        first = [json.loads(m) for m in before] + await ws.until("hitl")
        request_id = first[-1]["data"]["data"]["requestId"]
        await ws.decide("approve", request_id)
        messages = first + await ws.rest()
        assert close_code(ws) == 1000
    async with aura.stream("merge please") as stream:
        frames = await stream.events_until("hitl")
        assert (await aura.approve(frames[-1].json()["data"]["requestId"])).status == 200
        frames += await rest_of(stream)
    sse_events = [(f.id, f.event, masked(f.json())) for f in frames if f.event]
    ws_events = [(m["id"], m["event"], masked(m["data"])) for m in messages if m["type"] == "event"]
    assert ws_events == sse_events
    assert [m["id"] for m in messages if m["type"] == "event"] == list(range(1, 14))
    assert kinds_of(messages)[-2:] == ["event:end", "done"]
    assert kinds_of(messages).count("done") == 1
    assert {"type": "ack", "action": "approve", "requestId": request_id, "status": "approved"} in (
        messages
    )


async def test_last_event_id_continues_the_numbering(aura):
    async with aura.ws() as ws:
        await ws.start("hello", lastEventId=41)
        messages = await ws.rest()
    ids = [m["id"] for m in messages if m["type"] == "event"]
    assert ids[0] == 42 and ids == list(range(42, 42 + len(ids)))


async def test_start_is_validated_as_a_stream_request_and_nothing_else_comes_first(start_server):
    seen: list[StreamRequest] = []

    class Capture:
        async def run(self, ctx: AgentContext) -> None:
            seen.append(ctx.request)

    aura = await start_server(agent=Capture())
    headers = {**auth(), "X-DWP-Source": "portal", "X-DWP-Caller-Type": "user"}
    async with aura.ws(headers=headers) as ws:
        for bad in (
            {"type": "approve", "requestId": "req_1"},
            {"type": "cancel"},
            {"type": "start"},
            {"type": "start", "prompt": ""},
            {"type": "start", "prompt": "x" * 16001},
            {"type": "start", "prompt": 5},
            {"type": "start", "prompt": "hi", "context": ["not", "an", "object"]},
            {"type": "start", "prompt": "hi", "thread_id": 7},
        ):
            await ws.ws.send_message(json.dumps(bad))
            error = await ws.receive()
            assert error["type"] == "error", bad
            assert (error["status"], error["errorCode"]) == (400, "VALIDATION_ERROR"), bad
        assert not seen and len(aura.state.registry) == 1
        await ws.start("x" * 16000, context={"url": "/a"}, thread_id="t-1")
        messages = await ws.rest()
    assert events_of(messages) == ["start", "end"] and close_code(ws) == 1000
    assert seen == [
        StreamRequest(
            prompt="x" * 16000,
            context={"url": "/a", "source": "portal", "caller_type": "user"},
            thread_id="t-1",
        )
    ]


async def test_refused_messages_get_an_error_and_change_nothing(aura, raw_redis):
    async with aura.ws() as ws:
        await ws.start("merge please")
        hitl = await until_hitl(ws)
        for raw in (
            "not json",
            "[1]",
            '{"type":"stop"}',
            '{"type":"start","prompt":"again"}',
            '{"type":"approve","requestId":"bad id"}',
            '{"type":"reject","requestId":"' + hitl["requestId"] + '","reason":5}',
        ):
            await ws.ws.send_message(raw)
            error = await ws.receive()
            assert (error["type"], error["status"], error["errorCode"]) == (
                "error", 400, "VALIDATION_ERROR"
            ), raw  # fmt: skip
        # An edit the agent does not allow is refused too, and decides nothing.
        await ws.decide("approve", hitl["requestId"], args={"edited": True})
        error = await ws.receive()
        assert (error["type"], error["status"], error["errorCode"]) == (
            "error", 400, "VALIDATION_ERROR"
        )  # fmt: skip
        assert stored_request(raw_redis, hitl["requestId"])["status"] == "pending"
        edited = {"requestedBy": "alice", "step": 1, "strategy": "rebase"}
        await ws.decide("approve", hitl["requestId"], args=edited)
        messages = await ws.rest()
    # The ack may follow events the approval already resumed (it can reach the session
    # through Redis before the deciding call returns); it is there, once.
    assert kinds_of(messages).count("ack") == 1 and events_of(messages)[-1] == "end"
    ran = [m["data"]["data"] for m in messages if m.get("event") == "tool_execution"]
    assert ran[0]["toolArgs"] == edited


async def test_reject_over_the_socket_ends_with_its_reason(aura, raw_redis):
    async with aura.ws() as ws:
        await ws.start("merge please")
        hitl = await until_hitl(ws)
        await ws.decide("reject", hitl["requestId"], reason="not today")
        messages = await ws.rest()
        assert close_code(ws) == 1000
    # A rejection ends the session: its ack still comes before the last events.
    assert kinds_of(messages) == ["ack", "event:error", "done"]
    assert messages[0] == {
        "type": "ack", "action": "reject", "requestId": hitl["requestId"], "status": "rejected"
    }  # fmt: skip
    error = messages[1]["data"]
    assert (error["errorType"], error["error"]) == ("RejectionError", "not today")
    assert stored_request(raw_redis, hitl["requestId"])["status"] == "rejected"


async def test_approve_over_http_resumes_the_socket(aura):
    async with aura.ws() as ws:
        await ws.start("merge please")
        hitl = await until_hitl(ws)
        assert (await aura.approve(hitl["requestId"])).status == 200
        messages = await ws.rest()
    assert "ack" not in kinds_of(messages)
    assert events_of(messages)[0] == "tool_execution" and events_of(messages)[-1] == "end"
    assert messages[0]["data"]["data"]["result"] == {"approved": True}


async def test_a_java_style_signal_resumes_the_socket(aura, raw_redis):
    async with aura.ws() as ws:
        await ws.start("deploy it")
        hitl = await until_hitl(ws)
        signal = {"type": "approval", "requestId": hitl["requestId"], "status": "approved"}
        java_signal(raw_redis, hitl["sessionId"], signal)
        messages = await ws.rest()
    assert events_of(messages)[-1] == "end" and messages[-1] == {"type": "done"}
    assert stored_request(raw_redis, hitl["requestId"])["status"] == "approved"


async def test_a_second_decision_is_409_over_the_socket_and_over_http(aura, raw_redis):
    async with aura.ws() as ws:
        await ws.start("merge then deploy")  # asks twice
        first = await until_hitl(ws)
        await ws.decide("approve", first["requestId"])
        second = await until_hitl(ws)
        await ws.decide("reject", first["requestId"])
        refusal = await ws.receive()
        assert refusal["type"] == "error" and refusal["requestId"] == first["requestId"]
        assert (refusal["status"], refusal["errorCode"]) == (409, "HITL_NOT_PENDING")
        over_http = await aura.reject(first["requestId"])
        assert over_http.status == 409 and over_http.json()["errorCode"] == "HITL_NOT_PENDING"
        await ws.decide("approve", second["requestId"])
        messages = await ws.rest()
    # The ack may follow events the approval already resumed (it can reach the session
    # through Redis before the deciding call returns); it is there, once.
    assert kinds_of(messages).count("ack") == 1 and events_of(messages)[-1] == "end"
    assert stored_request(raw_redis, first["requestId"])["status"] == "approved"


async def test_another_tenants_request_is_404_over_the_socket_as_over_http(aura, raw_redis):
    mallory = auth("mallory", "t2")
    async with aura.stream("merge", headers=mallory) as theirs, aura.ws() as ws:
        hitl = await sse_until_hitl(theirs)
        await ws.start("merge please")
        own = await until_hitl(ws)
        for verb in ("approve", "reject"):
            await ws.decide(verb, hitl["requestId"])
            refusal = await ws.receive()
            assert (refusal["status"], refusal["errorCode"]) == (404, "HITL_NOT_FOUND")
            over_http = await aura.request("POST", f"/aura/hitl/{verb}/{hitl['requestId']}")
            assert over_http.status == 404 and over_http.json()["message"] == refusal["message"]
        assert stored_request(raw_redis, hitl["requestId"])["status"] == "pending"
        await ws.decide("approve", own["requestId"], userId="mallory")
        forbidden = await ws.receive()
        assert (forbidden["status"], forbidden["errorCode"]) == (403, "FORBIDDEN")
        assert stored_request(raw_redis, own["requestId"])["status"] == "pending"


async def test_a_decision_on_the_socket_reaches_any_request_of_the_tenant(aura, raw_redis):
    """As the HTTP routes do (docs/websocket.md#client-messages), not only this session's."""
    async with aura.stream("merge") as other, aura.ws() as ws:
        hitl = await sse_until_hitl(other)
        await ws.start("merge please")
        await until_hitl(ws)
        await ws.decide("approve", hitl["requestId"])
        assert (await ws.receive())["type"] == "ack"
        frames = await rest_of(other)
    assert [f.event for f in frames if f.event][-1] == "end"


async def test_timeout_ending(start_server, raw_redis):
    aura = await start_server(hitl_timeout_seconds=0.3)
    async with aura.ws() as ws:
        await ws.start("merge please")
        hitl = await until_hitl(ws)
        messages = await ws.rest()
        assert close_code(ws) == 1000
    assert kinds_of(messages) == ["event:failed", "event:error", "event:end", "done"]
    assert messages[1]["data"]["errorType"] == "TimeoutError"
    assert stored_request(raw_redis, hitl["requestId"])["status"] == "timeout"


async def test_internal_ending(start_server):
    class Broken:
        async def run(self, ctx: AgentContext) -> None:
            await ctx.emit(events.thought("analysis", "thinking"))
            raise RuntimeError("boom")

    aura = await start_server(agent=Broken())
    async with aura.ws() as ws:
        await ws.start("hi")
        messages = await ws.rest()
        assert close_code(ws) == 1000
    assert kinds_of(messages) == ["event:start", "event:thought", "event:error", "done"]
    assert messages[2]["data"]["errorType"] == "InternalError"
    assert "boom" not in json.dumps(messages)


async def test_cancel_ends_the_session_and_cancels_its_request(aura, raw_redis):
    async with aura.ws() as ws:
        await ws.start("merge please")
        hitl = await until_hitl(ws)
        await ws.send("cancel")
        messages = await ws.rest()
        assert close_code(ws) == 1000
    assert kinds_of(messages) == ["event:error", "done"]
    assert messages[0]["id"] == 8
    assert messages[0]["data"] == {
        "type": "error", "error": "cancelled by the client", "errorType": "Cancelled",
        "message": "사용자가 취소했습니다",
    }  # fmt: skip
    assert stored_request(raw_redis, hitl["requestId"])["status"] == "cancelled"
    late = await aura.approve(hitl["requestId"])
    assert late.status == 409 and late.json()["errorCode"] == "HITL_NOT_PENDING"
    assert len(aura.state.registry) == 0


async def test_heartbeat_when_idle(start_server):
    aura = await start_server(heartbeat_seconds=0.2)
    async with aura.ws() as ws:
        await ws.start("merge please")
        hitl = await until_hitl(ws)
        with trio.fail_after(2):
            assert await ws.receive() == {"type": "heartbeat"}
        await ws.decide("approve", hitl["requestId"])
        messages = await ws.rest()
    assert messages[-1] == {"type": "done"}


async def test_a_compressed_socket_gets_every_message_intact(start_server):
    """Browsers offer permessage-deflate: messages written together (one socket write for
    what queued up) must still inflate in order."""

    class Burst:
        async def run(self, ctx: AgentContext) -> None:
            for n in range(500):
                await ctx.emit(events.content(f"chunk {n} " + "가나다" * (n % 7), chunk=True))

    aura = await start_server(agent=Burst())
    raw = await raw_upgrade(aura.port, auth(), deflate=True)
    assert b"permessage-deflate" in raw.response_head.lower()
    await raw.send_json(type="start", prompt="go")
    messages, code = await raw.until(None)
    assert code == 1000
    contents = [m["data"]["data"]["content"] for m in messages if m.get("event") == "content"]
    assert contents == [f"chunk {n} " + "가나다" * (n % 7) for n in range(500)]
    assert kinds_of(messages)[-2:] == ["event:end", "done"]
    await raw.drop()
