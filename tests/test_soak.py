"""Soak: many sessions through every ending, then nothing leaked and nothing left pending.

The server runs in its own process, measured through its `/metrics` (Trio tasks,
threads, open descriptors, RSS), so the test's own bookkeeping does not count.
Size with AURA_SOAK_SESSIONS (default 2,000 so the suite stays quick; the issue's
figure is 20,000: `AURA_SOAK_SESSIONS=20000 pytest -m slow -s tests/test_soak.py`).
Marked `slow` (~25 s at the default size), bounded by its `time_limit` (an hour, for
the full size) instead of conftest's default 60 s.
"""

from __future__ import annotations

import json
import os

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from aura_trio import client

from .helpers import (
    HOST,
    auth,
    decide_at,
    events_of,
    eventually,
    rest_of,
    stream_target,
    until_hitl,
)
from .processes import run_server, stop

SESSIONS = int(os.environ.get("AURA_SOAK_SESSIONS", "2000"))
CONCURRENCY = 100
KINDS = ("approve", "reject", "timeout", "disconnect")
EXPECTED = {
    "approve": "approved",
    "reject": "rejected",
    "timeout": "timeout",
    "disconnect": "cancelled",
}
GAUGES = {
    "aura_trio_tasks": "tasks",
    "aura_threads": "threads",
    "process_open_fds": "fds",
    "process_resident_memory_bytes": "rss",
    "aura_open_sessions": "open",
}


async def _server_state(port: int) -> dict[str, float]:
    page = await client.request(HOST, port, "GET", "/metrics")
    values = {}
    for family in text_string_to_metric_families(page.body.decode()):
        for sample in family.samples:
            if sample.name in GAUGES:
                values[GAUGES[sample.name]] = sample.value
    return values


@pytest.mark.slow
@pytest.mark.time_limit(3600)
async def test_soak_mixed_endings_leave_nothing_behind(tmp_path, redis_server, raw_redis):
    env = {
        "REDIS_URL": redis_server.url,
        "AURA_METRICS": "1",
        "AURA_HITL_TIMEOUT_SECONDS": "1",
        "AURA_MAX_STREAMS_PER_USER": "100000",
        "AURA_LOG_LEVEL": "WARNING",
    }
    users = [auth(f"user{n}") for n in range(CONCURRENCY)]
    outcomes: dict[str, str] = {}
    late: list[str] = []

    async def one(port: int, n: int) -> None:
        kind, headers = KINDS[n % len(KINDS)], users[n % CONCURRENCY]
        async with client.open_sse(HOST, port, stream_target("merge"), headers=headers) as stream:
            request_id = (await until_hitl(stream))["requestId"]
            outcomes[request_id] = kind
            if kind == "disconnect":
                return
            if kind in ("approve", "reject"):
                response = await decide_at(port, request_id, headers, kind)
                if response.status == 409:  # the deadline won the race: a timeout, consistently
                    assert "timeout" in response.json()["message"]
                    outcomes[request_id] = kind = "timeout"
                    late.append(request_id)
                else:
                    assert response.status == 200
            last = events_of(await rest_of(stream))[-1]
            assert last == ("error" if kind == "reject" else "end"), (kind, last)

    async def run(port: int, first: int, count: int) -> dict[str, float]:
        limiter = trio.CapacityLimiter(CONCURRENCY)

        async def limited(n: int) -> None:
            async with limiter:
                await one(port, n)

        async with trio.open_nursery() as nursery:
            for n in range(first, first + count):
                nursery.start_soon(limited, n)

        async def settled() -> dict[str, float] | None:
            state = await _server_state(port)
            return None if state["open"] or state["tasks"] > quiet_tasks else state

        # The last cleanups, and idle threads' exit.
        state: dict[str, float] = await eventually(settled, within=15, step=0.2)
        return state

    async with run_server(tmp_path, env=env) as server:
        quiet_tasks = (await _server_state(server.port))["tasks"]
        warm_up = max(1000, SESSIONS // 10)
        baseline = await run(server.port, 0, warm_up)
        after = await run(server.port, warm_up, SESSIONS)
        redis_clients = len(raw_redis.client_list()) - 1
        assert await stop(server) == 0
    print(f"\nsoak of {SESSIONS} sessions after {warm_up} to warm up:")
    print(f"  server after warm-up {baseline}\n  server at the end    {after}")
    print(
        f"  Redis connections {redis_clients}; decisions that lost to the 1 s timeout: {len(late)}"
    )
    # Back to what the idle server ran before any session (the loop in run() waited for it).
    assert after["tasks"] <= quiet_tasks and baseline["tasks"] <= quiet_tasks
    assert after["threads"] <= max(baseline["threads"], 16 + 2)  # Redis limiter + subscriber
    assert after["fds"] <= baseline["fds"] + 16  # at most the Redis pool's connections
    assert redis_clients <= 16 + 1
    assert after["rss"] <= baseline["rss"] * 1.10

    assert len(outcomes) == warm_up + SESSIONS
    for key in raw_redis.scan_iter("hitl:request:*", count=1000):
        request_id = key.decode().removeprefix("hitl:request:")
        status = json.loads(raw_redis.get(key))["status"]
        assert status == EXPECTED[outcomes[request_id]], (request_id, outcomes[request_id], status)
