"""SSE framing on the wire (docs/contract.md#the-stream), read from a real server over TCP.

In-process servers on the session's Redis; each test is bounded by conftest's default 60 s.
"""

from __future__ import annotations

import json
import re

import trio
import trio.testing

from aura_trio import client
from aura_trio.agents import AgentContext
from aura_trio.sessions import sse

from .helpers import HOST, auth, events_of, rest_of, until_hitl

EVENT_FRAME = re.compile(rb"id: (\d+)\nevent: ([a-z_]+)\ndata: ([^\n]*)\n\n")


def _check_frames(body: bytes) -> list[tuple[int, str, dict]]:
    """Split a whole response body into frames, asserting each one's exact shape."""
    assert body.startswith(b": connected\n\n"), body[:40]
    assert body.endswith(b"data: [DONE]\n\n")
    assert body.count(b"data: [DONE]") == 1
    rest = body[len(b": connected\n\n") : -len(b"data: [DONE]\n\n")]
    events = []
    position = 0
    while position < len(rest):
        if rest.startswith(b": heartbeat\n\n", position):
            position += len(b": heartbeat\n\n")
            continue
        match = EVENT_FRAME.match(rest, position)
        assert match, rest[position : position + 200]
        data = json.loads(match.group(3).decode("utf-8"))
        assert data["type"] == match.group(2).decode()
        events.append((int(match.group(1)), match.group(2).decode(), data))
        position = match.end()
    return events


async def test_completed_stream_is_framed_exactly(aura):
    async with aura.stream("안녕하세요 world") as stream:
        assert stream.status == 200
        assert stream.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert stream.headers["cache-control"] == "no-cache"
        assert stream.headers["x-accel-buffering"] == "no"
        assert re.fullmatch(r"sess_[0-9a-f]{32}", stream.headers["x-aura-session-id"])
        body = await stream.read_body()
    events = _check_frames(body)
    ids = [event_id for event_id, _, _ in events]
    assert ids == list(range(1, len(ids) + 1))
    types = [kind for _, kind, _ in events]
    assert types[0] == "start" and types[-1] == "end"
    assert {"thought", "plan_step", "tool_execution", "content"} <= set(types)
    assert events[0][2]["sessionId"] == stream.headers["x-aura-session-id"]
    assert events[-1][2]["status"] == "completed"
    assert isinstance(events[-1][2]["timestamp"], int)
    # Korean goes out as UTF-8, not as \\u escapes.
    assert "안녕하세요".encode() in body and b"\\u" not in body


async def test_last_event_id_continues_the_numbering(aura):
    headers = {**auth(), "Last-Event-ID": "41"}
    async with aura.stream("hi", headers=headers) as stream:
        events = _check_frames(await stream.read_body())
    assert [i for i, _, _ in events] == list(range(42, 42 + len(events)))


async def test_non_integer_last_event_id_is_ignored(aura):
    headers = {**auth(), "Last-Event-ID": "abc"}
    async with aura.stream("hi", headers=headers) as stream:
        events = _check_frames(await stream.read_body())
    assert events[0][0] == 1


async def test_post_stream_takes_prompt_context_and_headers(start_server):
    seen = {}

    class Recorder:
        async def run(self, ctx: AgentContext) -> None:
            seen.update(
                prompt=ctx.request.prompt, context=ctx.request.context, thread=ctx.request.thread_id
            )

    aura = await start_server(agent=Recorder())
    headers = {**auth(), "X-DWP-Source": "web", "X-DWP-Caller-Type": "user"}
    body = {"prompt": "배포 준비", "context": {"url": "/x", "itemId": 7}, "thread_id": "th-1"}
    async with client.open_sse(
        HOST, aura.port, "/aura/test/stream", method="POST", headers=headers, body=body
    ) as stream:
        events = _check_frames(await stream.read_body())
    assert [kind for _, kind, _ in events] == ["start", "end"]
    assert seen == {
        "prompt": "배포 준비",
        "context": {"url": "/x", "itemId": 7, "source": "web", "caller_type": "user"},
        "thread": "th-1",
    }


async def test_heartbeat_comments_when_idle(start_server):
    aura = await start_server(heartbeat_seconds=0.2)
    async with aura.stream("please merge") as stream:
        await until_hitl(stream)
        with trio.fail_after(2):
            async for frame in stream:
                if frame.comments == ["heartbeat"]:
                    assert frame.raw == sse.HEARTBEAT
                    break
                raise AssertionError(f"unexpected frame while idle: {frame.raw!r}")


async def test_a_waiting_session_beats_from_its_own_task_and_the_body_stays_exact(start_server):
    aura = await start_server(heartbeat_seconds=0.05)
    async with aura.stream("please merge") as stream:
        hitl = await until_hitl(stream)
        [session] = list(aura.state.registry)
        through = session._write_through
        assert through is not None, "the response body gave the session its writer"
        written: list[bytes] = []

        async def counted(frame: bytes) -> None:
            written.append(frame)
            await through(frame)

        session._write_through = counted
        beats = 0
        with trio.fail_after(5):
            async for frame in stream:
                assert frame.comments == ["heartbeat"], frame.raw
                beats += 1
                if beats == 5:
                    break
        # Written without waking the body's task; the approval's events after them.
        assert written == [sse.HEARTBEAT] * len(written) and len(written) >= 5
        assert (await aura.approve(hitl["requestId"])).status == 200
        await rest_of(stream)
    events = _check_frames(stream.body)
    assert [kind for _, kind, _ in events][-2:] == ["content", "end"]
    assert [event_id for event_id, _, _ in events] == list(range(1, len(events) + 1))


async def test_agent_failure_ends_with_internal_error(start_server):
    class Broken:
        async def run(self, ctx: AgentContext) -> None:
            await ctx.emit(
                (
                    "thought",
                    {"type": "thought", "data": {"thoughtType": "analysis", "content": "x"}},
                )
            )
            raise RuntimeError("secret-detail-that-must-not-leak")

    aura = await start_server(agent=Broken())
    async with aura.stream("x") as stream:
        body = await stream.read_body()
    events = _check_frames(body)
    assert [kind for _, kind, _ in events] == ["start", "thought", "error"]
    assert events[-1][2]["errorType"] == "InternalError"
    assert b"secret-detail" not in body and b"Traceback" not in body


async def test_rejection_ends_with_rejection_error_then_done(aura):
    async with aura.stream("merge it") as stream:
        hitl = await until_hitl(stream)
        response = await aura.reject(hitl["requestId"], reason="아니요")
        assert response.status == 200
        frames = await rest_of(stream)
    assert events_of(frames) == ["error"]
    error = frames[0].json()
    assert error["errorType"] == "RejectionError" and error["error"] == "아니요"
    assert frames[-1].is_done and sum(f.is_done for f in frames) == 1
    assert stream.body.endswith(b"data: [DONE]\n\n")


async def test_timeout_ends_failed_error_end(start_server, raw_redis):
    aura = await start_server(hitl_timeout_seconds=0.5)
    async with aura.stream("send an email") as stream:
        hitl = await until_hitl(stream)
        frames = await rest_of(stream)
    assert events_of(frames) == ["failed", "error", "end"]
    failed, error, end = (f.json() for f in frames if f.event)
    assert failed["errorType"] == "TimeoutError" and failed["requestId"] == hitl["requestId"]
    assert failed["sessionId"] == hitl["sessionId"]
    assert error["errorType"] == "TimeoutError"
    assert end["status"] == "failed"
    assert frames[-1].is_done and sum(f.is_done for f in frames) == 1
    assert json.loads(raw_redis.get(f"hitl:request:{hitl['requestId']}"))["status"] == "timeout"


async def test_shutdown_ends_open_streams_with_server_shutdown(start_server, raw_redis):
    aura = await start_server()
    async with aura.stream("merge please") as stream:
        hitl = await until_hitl(stream)
        aura.stop.set()
        frames = await rest_of(stream)
    assert events_of(frames) == ["error"]
    assert frames[0].json()["errorType"] == "ServerShutdown"
    assert frames[-1].is_done and sum(f.is_done for f in frames) == 1
    assert json.loads(raw_redis.get(f"hitl:request:{hitl['requestId']}"))["status"] == "cancelled"


async def test_a_waiting_stream_holds_no_exception_and_no_frame_more_than_its_waits(aura):
    """What each of thousands of waiting streams holds, all their life: the body's
    task parked in its channel (no coroutine frame between the channel and trio's
    wait), and no exception kept by a wait inside an `except` (a `WouldBlock` and its
    traceback: ~0.5 KB a session, as once)."""
    import gc

    from aura_trio.metrics import live_tasks

    async with aura.stream("please merge PR 42") as stream:
        await until_hitl(stream)
        await trio.testing.wait_all_tasks_blocked()
        chains = [
            [frame for frame, _ in task.iter_await_frames()]
            for task in live_tasks()
            if any(f.f_code.co_name == "__anext__" for f, _ in task.iter_await_frames())
        ]
        bodies = [c for c in chains if any("event_stream" in f.f_code.co_filename for f in c)]
        assert len(bodies) == 1, [[f.f_code.co_name for f in c] for c in chains]
        names = [f.f_code.co_name for f in bodies[0]]
        assert names[-3:] == ["receive", "wait_task_rescheduled", "_real_async_yield"], names
        task = next(t for t in live_tasks() if [f for f, _ in t.iter_await_frames()] == bodies[0])
        held = [
            r
            for c in _coroutines(task)
            for r in gc.get_referents(c)
            if isinstance(r, BaseException)
        ]
        assert held == [], held


def _coroutines(task: trio.lowlevel.Task) -> list[object]:
    """The task's chain of suspended coroutines (what `iter_await_frames` walks)."""
    chain: list[object] = []
    coro: object = task.coro
    while coro is not None:
        chain.append(coro)
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return chain
