"""Metrics and logs, read from a real server.

In-process servers (`start_server`) or child processes (`processes.run_server`,
stopped in `finally`); each test is bounded by conftest's default 60 s.
"""

from __future__ import annotations

from pathlib import Path

import trio
from prometheus_client.parser import text_string_to_metric_families

from aura_trio import client

from .helpers import (
    HOST,
    SECRET,
    auth,
    decide_at,
    eventually,
    rest_of,
    stream_target,
    token,
    until_hitl,
)
from .processes import run_server, stop


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


async def test_metrics_count_sessions_events_and_decisions(start_server):
    aura = await start_server(metrics=True)
    async with aura.stream("merge") as stream:
        assert (await aura.approve((await until_hitl(stream))["requestId"])).status == 200
        await rest_of(stream)
    async with aura.stream("merge") as stream:
        assert (await aura.reject((await until_hitl(stream))["requestId"])).status == 200
        await rest_of(stream)
    async with aura.stream("merge") as stream:
        await until_hitl(stream)
    await eventually(lambda: len(aura.state.registry) == 0)

    response = await client.request(HOST, aura.port, "GET", "/metrics")  # no token needed
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/plain")
    values = _samples(response.body.decode())
    assert values[("aura_open_sessions", ())] == 0
    assert values[("aura_sessions_total", (("ending", "completed"),))] == 1
    assert values[("aura_sessions_total", (("ending", "rejected"),))] == 1
    assert values[("aura_sessions_total", (("ending", "disconnected"),))] == 1
    for kind in ("approved", "rejected", "cancelled"):
        assert values[("aura_hitl_decisions_total", (("kind", kind),))] == 1, kind
    assert values[("aura_hitl_wait_seconds_count", ())] == 3
    assert values[("aura_events_total", (("type", "start"),))] == 3
    assert values[("aura_events_total", (("type", "hitl"),))] == 3
    assert values[("aura_events_total", (("type", "end"),))] == 1
    assert values[("aura_redis_subscriptions_total", ())] >= 1
    assert values[("aura_subscriber_lag_seconds_count", ())] >= 2  # the two decisions' signals


async def test_metrics_are_off_by_default(aura):
    response = await client.request(HOST, aura.port, "GET", "/metrics")
    assert response.status == 404


async def test_logs_are_json_lines_with_ids_and_never_a_secret(tmp_path, redis_server, raw_redis):
    bad_token = token(secret="a-different-secret-that-is-32-bytes-long")
    async with run_server(
        tmp_path, env={"REDIS_URL": redis_server.url, "AURA_LOG_LEVEL": "DEBUG"}
    ) as server:
        headers = auth()
        async with client.open_sse(
            HOST, server.port, stream_target("merge"), headers=headers
        ) as stream:
            hitl = await until_hitl(stream)
            await decide_at(server.port, hitl["requestId"], headers)
            await rest_of(stream)
        refused = await client.request(
            HOST,
            server.port,
            "GET",
            stream_target("x"),
            headers={"Authorization": f"Bearer {bad_token}"},
        )
        assert refused.status == 401
        assert await stop(server) == 0
    text = await trio.Path(server.log_path).read_text()
    entries = server.logs()
    assert entries and all("raw" not in e for e in entries), [e for e in entries if "raw" in e]
    assert all({"ts", "level", "logger", "msg"} <= e.keys() for e in entries)
    ended = [e for e in entries if e["msg"].startswith("session ended")]
    assert ended and ended[0]["sessionId"] == hitl["sessionId"] and ended[0]["tenantId"] == "t1"
    asked = [e for e in entries if e["msg"] == "HITL request asked"]
    assert asked[0]["requestId"] == hitl["requestId"]
    for secret in (SECRET, headers["Authorization"].split()[1], bad_token):
        assert secret not in text


async def test_log_level_comes_from_the_environment(tmp_path, redis_server, raw_redis):
    env = {"REDIS_URL": redis_server.url, "AURA_LOG_LEVEL": "WARNING"}
    # No `listening on` line at WARNING: the harness finds the port in /proc.
    async with run_server(tmp_path, env=env, name="quiet") as server:
        async with client.open_sse(
            HOST, server.port, stream_target("hi"), headers=auth()
        ) as stream:
            await rest_of(stream)
        assert await stop(server) == 0
    assert not [e for e in server.logs() if e.get("level") in ("INFO", "DEBUG")]


async def test_a_session_logs_one_line_at_info_with_its_outcome(tmp_path, redis_server, raw_redis):
    """At INFO a round trip costs one log line (a record, JSON, a write), not three;
    the asking and the decision are DEBUG lines (and in the audit stream)."""
    env = {"REDIS_URL": redis_server.url, "AURA_LOG_LEVEL": "INFO"}
    async with run_server(tmp_path, env=env, name="info") as server:
        headers = auth()
        async with client.open_sse(
            HOST, server.port, stream_target("merge"), headers=headers
        ) as stream:
            hitl = await until_hitl(stream)
            await decide_at(server.port, hitl["requestId"], headers)
            await rest_of(stream)
        assert server.stop() == 0
    lines = [e for e in server.logs() if e.get("sessionId") == hitl["sessionId"]]
    assert len(lines) == 1, lines
    assert lines[0]["msg"].startswith("session ended: completed after ")
    assert lines[0]["msg"].endswith(" s; HITL request approved")
    assert lines[0]["requestId"] == hitl["requestId"] and lines[0]["level"] == "INFO"


def _os_threads(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Threads:")).split()[1])


async def test_a_server_under_load_runs_no_thread_for_redis(tmp_path, redis_server):
    """Every Redis call is a Trio task on the process's own connections: the server
    process stays at one thread while 50 sessions wait and are decided."""
    env = {"REDIS_URL": redis_server.url, "AURA_METRICS": "1"}
    async with run_server(tmp_path, env=env) as server:
        waiting: list[dict] = []

        async def one(n: int) -> None:
            headers = auth(f"user{n}")
            async with client.open_sse(
                HOST, server.port, stream_target("merge"), headers=headers
            ) as stream:
                waiting.append(await until_hitl(stream))
                await rest_of(stream)

        async with trio.open_nursery() as nursery:
            for n in range(50):
                nursery.start_soon(one, n)
            await eventually(lambda: len(waiting) == 50, within=20)
            metrics = await client.request(HOST, server.port, "GET", "/metrics")
            assert _samples(metrics.body.decode())[("aura_threads", ())] == 1
            assert _os_threads(server.process.pid) == 1
            for n, hitl in enumerate(waiting):
                response = await decide_at(server.port, hitl["requestId"], auth(f"user{n}"))
                assert response.status == 200
        metrics = await client.request(HOST, server.port, "GET", "/metrics")
        assert _samples(metrics.body.decode())[("aura_threads", ())] == 1
