"""Faults with real processes: Redis killed and restarted, the subscriber cut off.

The Java side publishes its decisions the moment Redis is back, before and while
our subscriber reconnects, so some PUBLISHes reach nobody: every session must still
end as decided, none waiting for its timeout, none decided twice.

Each test starts its own redis-server and stops it in `finally` (`processes.run_redis`);
each is bounded by conftest's default 60 s.
"""

from __future__ import annotations

import json
from contextlib import AsyncExitStack

import trio

from .fleet import (
    NO_TIMEOUT,
    SESSIONS,
    check_outcomes,
    java_decides,
    java_stores_only,
    waiting_fleet,
)
from .processes import AOF, run_redis


async def test_redis_killed_and_restarted_while_200_sessions_wait(start_server, tmp_path):
    async with AsyncExitStack() as redis_servers:
        redis = await redis_servers.enter_async_context(run_redis(tmp_path, *AOF))
        aura = await start_server(
            redis_url=redis.url, hitl_timeout_seconds=NO_TIMEOUT, signal_poll_seconds=NO_TIMEOUT
        )
        outcomes: dict = {}
        async with trio.open_nursery() as nursery:
            waiting = await waiting_fleet(aura, nursery, outcomes)
            # Decisions whose PUBLISH was lost just before the crash: stored only (and
            # kept by the AOF), so only the re-read after re-subscribing can find them.
            lost = {n: hitl for n, hitl in waiting.items() if n % 5 == 0}
            await trio.to_thread.run_sync(java_stores_only, redis.client(), lost)
            redis.kill()
            # Same port, same directory: the AOF brings the stored requests back.
            restarted = await redis_servers.enter_async_context(
                run_redis(tmp_path, *AOF, port=redis.port)
            )
            back_at = trio.current_time()
            raw = restarted.client()
            rest = {n: hitl for n, hitl in waiting.items() if n not in lost}
            unheard = await trio.to_thread.run_sync(java_decides, raw, rest, abandon_on_cancel=True)
        check_outcomes(waiting, outcomes)
        last = max(at for _, at in outcomes.values()) - back_at
        print(
            f"\nRedis restart: {len(lost)} decisions stored without a PUBLISH before it, and "
            f"{unheard} of {len(rest)} PUBLISHes after it reached nobody (the subscriber "
            f"was not back yet); the last session resumed {last * 1000:.0f} ms after Redis "
            "was back"
        )
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
            waiting = await waiting_fleet(aura, nursery, outcomes)
            raw.client_kill_filter(_type="pubsub")
            killed_at = trio.current_time()
            unheard = await trio.to_thread.run_sync(
                java_decides, raw, waiting, abandon_on_cancel=True
            )
        check_outcomes(waiting, outcomes)
        last = max(at for _, at in outcomes.values()) - killed_at
        print(
            f"\nCLIENT KILL TYPE pubsub: {unheard} of {SESSIONS} PUBLISHes reached nobody; the "
            f"last session resumed {last * 1000:.0f} ms after the kill"
        )
