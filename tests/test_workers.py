"""`serve --workers N`: several processes on one port and one Redis, supervised.

The servers are child processes (`processes.run_server`), stopped in `finally`; the
Redis is the session's. Each test is bounded by conftest's default 60 s.
"""

from __future__ import annotations

import json
import os
import signal
import time

import h11
import trio
from prometheus_client.parser import text_string_to_metric_families

from aura_trio import client
from aura_trio.hitl.liveness import requests_key

from .helpers import (
    HOST,
    auth,
    decide_at,
    events_of,
    eventually,
    rest_of,
    stored_request,
    stream_target,
    until_hitl,
)
from .processes import run_server, stop

STREAMS = 16


async def worker_pids(supervisor_pid: int) -> list[int]:
    listed = await trio.run_process(
        ["ps", "-o", "pid=", "--ppid", str(supervisor_pid)], capture_stdout=True, check=False
    )
    return [int(pid) for pid in listed.stdout.split()]


async def worker_index(pid: int) -> int:
    """The `--worker-index` the supervisor gave this worker (it tags its log lines)."""
    args = (await trio.Path(f"/proc/{pid}/cmdline").read_bytes()).split(b"\0")
    return int(args[args.index(b"--worker-index") + 1])


async def _open_waiting_streams(
    port: int, count: int, nursery: trio.Nursery, results: list
) -> list:
    """Open `count` streams (distinct users) and return their hitl data once all wait."""
    waiting: list[dict] = []

    async def one(n: int) -> None:
        headers = auth(f"user{n}")
        async with client.open_sse(HOST, port, stream_target("merge"), headers=headers) as stream:
            hitl = await until_hitl(stream)
            waiting.append({**hitl, "headers": headers})
            results.append(await rest_of(stream))

    for n in range(count):
        nursery.start_soon(one, n)
    await eventually(lambda: len(waiting) == count, within=20, step=0.02)
    return waiting


async def test_workers_share_one_port_and_approve_each_others_sessions(
    tmp_path, redis_server, raw_redis
):
    env = {"REDIS_URL": redis_server.url, "AURA_METRICS": "1"}
    async with run_server(tmp_path, "--workers", "2", env=env) as server:
        assert len(await worker_pids(server.pid)) == 2
        results: list = []
        async with trio.open_nursery() as nursery:
            waiting = await _open_waiting_streams(server.port, STREAMS, nursery, results)
            for hitl in waiting:
                response = await decide_at(server.port, hitl["requestId"], hitl["headers"])
                assert response.status == 200
        assert [events_of(frames)[-1] for frames in results] == ["end"] * STREAMS
        # Any worker's /metrics answers for both.
        for _ in range(4):
            page = await client.request(HOST, server.port, "GET", "/metrics")
            completed = [
                s.value
                for family in text_string_to_metric_families(page.body.decode())
                for s in family.samples
                if s.name == "aura_sessions_total" and s.labels == {"ending": "completed"}
            ]
            assert completed == [STREAMS]
        assert await stop(server) == 0
    ended_on = {
        e.get("worker") for e in server.logs() if e.get("msg", "").startswith("session ended")
    }
    assert ended_on == {0, 1}, "both workers should have served sessions"


async def test_sigterm_drains_every_worker_and_exits_zero(tmp_path, redis_server, raw_redis):
    env = {"REDIS_URL": redis_server.url, "AURA_SHUTDOWN_GRACE_SECONDS": "4"}
    async with run_server(tmp_path, "--workers", "2", env=env) as server:
        results: list = []
        async with trio.open_nursery() as nursery:
            waiting = await _open_waiting_streams(server.port, STREAMS, nursery, results)
            signalled = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
        assert await stop(server, within=15) == 0
        took = time.monotonic() - signalled
    for frames in results:
        assert events_of(frames) == ["error"]
        assert frames[0].json()["errorType"] == "ServerShutdown"
        assert frames[-1].is_done
    for hitl in waiting:
        assert (
            json.loads(raw_redis.get(f"hitl:request:{hitl['requestId']}"))["status"] == "cancelled"
        )
    assert took < 4 + 3, f"shutdown took {took:.1f} s"


async def test_a_killed_worker_is_replaced_and_the_other_keeps_serving(
    tmp_path, redis_server, raw_redis
):
    async with run_server(
        tmp_path, "--workers", "2", env={"REDIS_URL": redis_server.url}
    ) as server:
        first, second = await worker_pids(server.pid)
        os.kill(first, signal.SIGKILL)

        async def reaped() -> bool:  # by the supervisor: every thread gone, its socket closed
            return first not in await worker_pids(server.pid)

        async def replaced() -> bool:
            pids = await worker_pids(server.pid)
            return first not in pids and len(pids) >= 2

        await eventually(reaped, within=5)
        for _ in range(6):  # until its replacement is up, the other worker serves alone
            async with client.open_sse(
                HOST, server.port, stream_target("hi"), headers=auth()
            ) as stream:
                assert events_of(await rest_of(stream))[-1] == "end"
        await eventually(replaced, within=10, step=0.1)
        assert second in await worker_pids(server.pid)
        assert await stop(server) == 0


async def test_requests_of_a_killed_worker_are_cancelled_not_left_pending(
    tmp_path, redis_server, raw_redis
):
    # DEBUG: each worker logs the requests it asks ("HITL request asked").
    env = {"REDIS_URL": redis_server.url, "AURA_WORKER_TTL_SECONDS": "1", "AURA_LOG_LEVEL": "DEBUG"}
    waiting: list[dict] = []
    broken: list[dict] = []
    finished: list[dict] = []

    async def one(n: int) -> None:
        headers = auth(f"user{n}")
        async with client.open_sse(
            HOST, server.port, stream_target("merge"), headers=headers
        ) as stream:
            hitl = {**await until_hitl(stream), "headers": headers}
            waiting.append(hitl)
            try:
                frames = await rest_of(stream)
            except (trio.BrokenResourceError, h11.RemoteProtocolError):
                broken.append(hitl)
            else:
                assert events_of(frames)[-1] == "end"
                finished.append(hitl)

    def status(hitl: dict) -> str:
        return json.loads(raw_redis.get(f"hitl:request:{hitl['requestId']}"))["status"]

    def asked_on(worker: int) -> set[str]:
        """The requests worker `worker` opened, from its log lines."""
        return {
            e["requestId"]
            for e in server.logs()
            if e.get("msg") == "HITL request asked" and e.get("worker") == worker
        }

    async with run_server(tmp_path, "--workers", "2", env=env) as server:
        victim = (await worker_pids(server.pid))[0]
        async with trio.open_nursery() as nursery:
            for n in range(STREAMS):
                nursery.start_soon(one, n)
            await eventually(lambda: len(waiting) == STREAMS, within=20, step=0.02)
            await eventually(lambda: len(asked_on(0) | asked_on(1)) == STREAMS)
            victims_requests = asked_on(await worker_index(victim))
            os.kill(victim, signal.SIGKILL)
            # Every stream of the victim has broken, and only those.
            await eventually(
                lambda: {h["requestId"] for h in broken} == victims_requests, within=10, step=0.05
            )
            assert 0 < len(broken) < STREAMS, "sessions should have been spread over both workers"
            # Swept once the victim's heartbeat (1 s) has expired.
            await eventually(
                lambda: all(status(h) == "cancelled" for h in broken), within=10, step=0.1
            )
            survivors = [h for h in waiting if h not in broken]
            assert all(status(h) == "pending" for h in survivors)
            for hitl in waiting:
                response = await decide_at(server.port, hitl["requestId"], hitl["headers"])
                assert response.status == (409 if hitl in broken else 200)
        assert len(finished) == len(survivors)


async def test_a_workers_set_lists_its_waiting_requests_and_drops_settled_ones(
    start_server, raw_redis
):
    aura = await start_server(worker_ttl_seconds=1)  # a heartbeat every 1/3 s
    owned = requests_key(aura.state.liveness.worker_id)
    requests = []
    for verb in ("approve", "disconnect"):
        async with aura.stream("merge") as stream:
            request_id = (await until_hitl(stream))["requestId"]
            requests.append(request_id)
            assert raw_redis.sismember(owned, request_id)  # what the sweep of a dead worker reads
            if verb == "approve":
                assert (await aura.approve(request_id)).status == 200
                assert events_of(await rest_of(stream))[-1] == "end"
    await eventually(lambda: not any(raw_redis.smismember(owned, requests)), within=3)
    assert [stored_request(raw_redis, r)["status"] for r in requests] == ["approved", "cancelled"]
