"""Faults with real processes: Redis killed and restarted, the subscriber cut off.

The Java side publishes its decisions the moment Redis is back, before and while
our subscriber reconnects, so some PUBLISHes reach nobody: every session must still
end as decided, none waiting for its timeout, none decided twice.

Each test starts its own redis-server and stops it in `finally` (`processes.run_redis`);
each is bounded by conftest's default 60 s.
"""

from __future__ import annotations

import json
import time
from contextlib import AsyncExitStack

import trio

from .helpers import auth, events_of, eventually, rest_of, until_hitl
from .processes import AOF, run_redis

SESSIONS = 200
# Far beyond each test's own bound: a run slowed down by a busy machine fails on
# that bound, never as a session that timed out waiting.
NO_TIMEOUT = 600


def _decision(n: int, request_id: str) -> dict:
    if n % 3 == 0:
        return {
            "type": "rejection",
            "requestId": request_id,
            "status": "rejected",
            "reason": f"no {n}",
            "timestamp": int(time.time()),
        }
    return {
        "type": "approval",
        "requestId": request_id,
        "status": "approved",
        "timestamp": int(time.time()),
    }


async def _waiting_fleet(aura, nursery, outcomes: dict) -> dict[int, dict]:
    waiting: dict[int, dict] = {}

    async def one(n: int) -> None:
        async with aura.stream("merge", headers=auth(f"u{n}")) as stream:
            waiting[n] = await until_hitl(stream)
            frames = await rest_of(stream)
            outcomes[n] = (frames, trio.current_time())

    for n in range(SESSIONS):
        nursery.start_soon(one, n)
    await eventually(lambda: len(waiting) == SESSIONS, within=30, step=0.05)
    return waiting


def _java_decides(raw, waiting: dict) -> int:
    """The Java side, in its own thread: PUBLISH then SET ... EX 300 for each session.

    Returns how many PUBLISHes no subscriber received.
    """
    unheard = 0
    for n, hitl in waiting.items():
        payload = json.dumps(_decision(n, hitl["requestId"]), ensure_ascii=False)
        unheard += raw.publish(f"hitl:channel:{hitl['sessionId']}", payload) == 0
        raw.set(f"hitl:signal:{hitl['sessionId']}", payload, ex=300)
    return unheard


def _check_outcomes(waiting: dict, outcomes: dict) -> None:
    assert len(outcomes) == SESSIONS
    for n, (frames, _) in outcomes.items():
        kinds = events_of(frames)
        if n % 3 == 0:
            assert kinds == ["error"], (n, kinds)
            assert frames[0].json()["errorType"] == "RejectionError"
            assert frames[0].json()["error"] == f"no {n}"
        else:
            assert kinds[-1] == "end" and frames[-2].json()["status"] == "completed", (n, kinds)
            # Decided once: the approved tool ran once, and nothing asked again.
            assert kinds.count("tool_execution") == 1 and "hitl" not in kinds
        assert sum(f.is_done for f in frames) == 1


async def test_redis_killed_and_restarted_while_200_sessions_wait(start_server, tmp_path):
    async with AsyncExitStack() as redis_servers:
        redis = await redis_servers.enter_async_context(run_redis(tmp_path, *AOF))
        aura = await start_server(
            redis_url=redis.url, hitl_timeout_seconds=NO_TIMEOUT, signal_poll_seconds=NO_TIMEOUT
        )
        outcomes: dict = {}
        async with trio.open_nursery() as nursery:
            waiting = await _waiting_fleet(aura, nursery, outcomes)
            redis.kill()
            # Same port, same directory: the AOF brings the stored requests back.
            restarted = await redis_servers.enter_async_context(
                run_redis(tmp_path, *AOF, port=redis.port)
            )
            back_at = trio.current_time()
            raw = restarted.client()
            unheard = await trio.to_thread.run_sync(
                _java_decides, raw, waiting, abandon_on_cancel=True
            )
        _check_outcomes(waiting, outcomes)
        last = max(at for _, at in outcomes.values()) - back_at
        print(
            f"\nRedis restart: {unheard} of {SESSIONS} PUBLISHes reached nobody; the last "
            f"session resumed {last * 1000:.0f} ms after Redis was back"
        )
        assert unheard > 0, "the scenario should lose some PUBLISHes"
        for n, hitl in waiting.items():
            stored = json.loads(raw.get(f"hitl:request:{hitl['requestId']}"))
            assert stored["status"] == ("rejected" if n % 3 == 0 else "approved")


async def test_subscriber_connection_killed_while_200_sessions_wait(start_server, tmp_path):
    async with run_redis(tmp_path) as redis:
        aura = await start_server(
            redis_url=redis.url, hitl_timeout_seconds=NO_TIMEOUT, signal_poll_seconds=NO_TIMEOUT
        )
        raw = redis.client()
        outcomes: dict = {}
        async with trio.open_nursery() as nursery:
            waiting = await _waiting_fleet(aura, nursery, outcomes)
            raw.client_kill_filter(_type="pubsub")
            killed_at = trio.current_time()
            unheard = await trio.to_thread.run_sync(
                _java_decides, raw, waiting, abandon_on_cancel=True
            )
        _check_outcomes(waiting, outcomes)
        last = max(at for _, at in outcomes.values()) - killed_at
        print(
            f"\nCLIENT KILL TYPE pubsub: {unheard} of {SESSIONS} PUBLISHes reached nobody; the "
            f"last session resumed {last * 1000:.0f} ms after the kill"
        )
