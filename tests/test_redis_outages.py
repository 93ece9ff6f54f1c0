"""Redis going away and coming back, with real redis-server processes.

Each test starts its own redis-server and stops it in `finally` (`processes.run_redis`);
each is bounded by conftest's default 60 s.
"""

from __future__ import annotations

import json
from functools import partial

import trio

from aura_trio import client
from aura_trio.agents import AgentContext
from aura_trio.sessions import events
from bench.harness import pick_port

from .helpers import (
    HOST,
    events_of,
    eventually,
    rest_of,
    stored_request,
    stream_target,
    until_hitl,
)
from .processes import run_redis


async def _readiness_is(status: int, port: int) -> bool:
    return (await client.request(HOST, port, "GET", "/health/ready")).status == status


async def test_redis_down_at_start_then_back_without_a_restart(start_server, tmp_path):
    # Redis starts later on this port, so it is chosen now: outside the ephemeral
    # range, where no other program is handed it meanwhile (bench/harness.py).
    redis_port = pick_port()
    aura = await start_server(redis_url=f"redis://127.0.0.1:{redis_port}/0")

    live = await client.request(HOST, aura.port, "GET", "/health")
    assert live.status == 200
    ready = await client.request(HOST, aura.port, "GET", "/health/ready")
    assert ready.status == 503
    assert ready.json()["errorCode"] == "REDIS_UNAVAILABLE" and "Redis" in ready.json()["message"]
    with trio.fail_after(2):  # a fast answer, never a hang
        refused = await aura.request("GET", stream_target("merge"))
    assert refused.status == 503 and refused.headers["retry-after"].isdigit()
    assert refused.json()["status"] == "ERROR"

    async with run_redis(tmp_path, port=redis_port) as redis:
        await eventually(partial(_readiness_is, 200, aura.port), within=10, step=0.1)
        async with aura.stream("merge") as stream:
            hitl = await until_hitl(stream)
            assert (await aura.approve(hitl["requestId"])).status == 200
            assert events_of(await rest_of(stream))[-1] == "end"
        redis.kill()
    await eventually(partial(_readiness_is, 503, aura.port), within=10, step=0.1)


async def test_redis_stopping_while_a_session_stores_its_request_ends_it(start_server, tmp_path):
    go = trio.Event()

    class WaitsThenAsks:
        async def run(self, ctx: AgentContext) -> None:
            await ctx.emit(events.thought("analysis", "about to ask"))
            await go.wait()
            await ctx.request_approval("git_merge", {}, "ok?", {})

    async with run_redis(tmp_path) as redis:
        aura = await start_server(agent=WaitsThenAsks(), redis_url=redis.url)
        async with aura.stream("merge") as stream:
            await stream.events_until("thought")
            redis.kill()
            go.set()
            with trio.fail_after(10):  # bounded by the Redis timeout, never a hang
                frames = await rest_of(stream)
    assert events_of(frames) == ["error"]
    assert frames[0].json()["errorType"] == "InternalError"
    assert frames[-1].is_done
    await eventually(lambda: len(aura.state.registry) == 0)


async def test_a_decision_that_cannot_be_stored_at_once_is_stored_once_redis_answers(
    start_server, tmp_path
):
    """The decision a session follows is also the stored one: a settle that times out
    (Redis paused for writes just after delivering the Java side's signal) is tried
    again once Redis answers, not given up, so the request does not stay `pending`."""
    async with run_redis(tmp_path) as redis:
        aura = await start_server(redis_url=redis.url, redis_timeout_seconds=0.25)
        raw = redis.client()
        async with aura.stream("merge") as stream:
            hitl = await until_hitl(stream)
            signal = json.dumps({"type": "approval", "requestId": hitl["requestId"],
                                 "status": "approved", "userId": "java-approver"})  # fmt: skip
            # One pipeline, run by Redis before any other client's command: the signal
            # reaches the session, and the session's settle (a script) waits 0.8 s.
            pipe = raw.pipeline(transaction=False)
            pipe.set(f"hitl:signal:{hitl['sessionId']}", signal, ex=300)
            pipe.publish(f"hitl:channel:{hitl['sessionId']}", signal)
            pipe.execute_command("CLIENT", "PAUSE", 800, "WRITE")
            pipe.execute()
            assert events_of(await rest_of(stream))[-1] == "end"
        stored = stored_request(raw, hitl["requestId"])
        assert stored is not None
        assert stored["status"] == "approved" and stored["decidedBy"] == "java-approver"
        pending = await aura.request("GET", "/aura/hitl/pending")
        assert pending.json()["data"]["items"] == []
