"""The benchmark machinery end to end with tiny numbers, so it cannot rot.

`python -m bench run --preset smoke` runs as a child process, as anyone would run
it: it starts its own redis-server and servers on free loopback ports, drives
every scenario (the WebSocket ones against aura only), and writes `results.json`
and `REPORT.md`. Nothing here asserts on speed; only that every scenario ran,
without errors, and was reported.

The peer half needs FastAPI and uvicorn (in the test extra as well as the
bench one) and is skipped without them. The two full runs are `slow` (~10 s each),
bounded by `subprocess.run(timeout=240)`; the async test by conftest's default 60 s.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aura_trio import client
from bench.scenarios import ONLY_ON, PRESETS

from .helpers import HOST

REPO = Path(__file__).resolve().parent.parent
SCENARIOS = {"idle", "approval", "roundtrip", "teardown", "streaming"}
WEBSOCKET = {"ws_roundtrip", "ws_streaming"}  # aura only: the peer has no WebSocket


def run_bench(results: Path, target: str) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench", "run", "--target", target, "--preset", "smoke",
               "--results", str(results)]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]
    data: dict[str, Any] = json.loads((results / "results.json").read_text())
    return data


def check_runs(data: dict[str, Any], target: str) -> None:
    runs = [run for run in data["runs"] if run["target"] == target]
    expected = {name for name in PRESETS["smoke"] if target in ONLY_ON.get(name, (target,))}
    assert SCENARIOS <= expected and (target != "aura" or WEBSOCKET <= expected)
    assert {run["scenario"] for run in runs} == expected
    for run in runs:
        result = run["result"]
        assert "failed" not in result, (run["label"], result)
        assert result["errors"] == 0, (run["label"], result.get("error_kinds"))
    by_name = {run["scenario"]: run["result"] for run in runs}
    assert by_name["idle"]["points"][-1]["sessions"] == 10
    assert by_name["approval"]["latency"]["n"] == 10
    assert by_name["roundtrip"]["completed"] > 0
    assert by_name["teardown"]["not_cancelled"] == 0
    assert by_name["streaming"]["events"] > 0
    if target == "aura":
        assert by_name["ws_roundtrip"]["completed"] > 0
        assert by_name["ws_streaming"]["events"] > 0


@pytest.mark.slow
def test_bench_smoke_against_aura(tmp_path):
    data = run_bench(tmp_path, "aura")
    check_runs(data, "aura")
    report = (tmp_path / "REPORT.md").read_text()
    assert "## Targets (issue 3) vs reached" in report
    assert "Redis connections bounded" in report
    assert "## aura over SSE vs over the WebSocket" in report
    assert "3w. Round-trip throughput over the WebSocket" in report


@pytest.mark.slow
def test_bench_smoke_against_the_peer(tmp_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    data = run_bench(tmp_path, "peer")
    check_runs(data, "peer")


async def test_the_peer_sends_the_events_aura_sends(tmp_path):
    """The baseline is faithful: same events, same JSON, same framing, same endings."""
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from bench import load, procs

    async def frames_of(port: int) -> list[bytes]:
        target = load.Target("x", HOST, port)
        headers = {"Authorization": f"Bearer {target.tokens[0]}", "X-Tenant-ID": load.TENANT}
        async with client.open_sse(HOST, port, "/aura/test/stream?message=merge%20it",
                                   headers=headers) as stream:  # fmt: skip
            frames = await stream.events_until("hitl")
            request_id = frames[-1].json()["data"]["requestId"]
            approved = await client.request(
                HOST, port, "POST", f"/aura/hitl/approve/{request_id}", headers=headers
            )
            assert approved.status == 200
            frames += [frame async for frame in stream]
        return [normalized(frame.raw) for frame in frames]

    seen = {}
    with procs.run_redis(tmp_path / "redis") as redis_server:
        env = procs.server_env(redis_server.url, load.SECRET)
        for name in procs.TARGETS:
            with procs.run_server(name, env, tmp_path / f"{name}.log") as server:
                seen[name] = await frames_of(server.port)
    assert seen["peer"] == seen["aura"]
    assert seen["aura"][-1] == b"data: [DONE]\n\n"


def normalized(raw: bytes) -> bytes:
    """A frame with what differs from run to run (ids of sessions/requests, clocks) masked."""
    raw = re.sub(rb"(sess|req)_[0-9a-f]{32}", rb"\1_X", raw)
    return re.sub(rb'"(timestamp|expiresAt)":\d+', rb'"\1":0', raw)


@pytest.mark.slow
def test_fleet_holds_sessions_on_several_workers_and_approves_through_any(tmp_path):
    """`python -m bench.fleet`, tiny: 2 workers, 2 load processes, every session
    waiting at once, every approval followed by its session's next event."""
    command = [sys.executable, "-m", "bench.fleet", "--target", "aura", "--sessions", "40",
               "--workers", "2", "--clients", "2", "--approvals", "10", "--rate", "20",
               "--idle-seconds", "0.3", "--quiet-seconds", "0.1", "--results", str(tmp_path)]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]
    [run] = json.loads((tmp_path / "fleet.json").read_text())["runs"]
    assert run["waiting"] == 40 and run["open_errors"] == 0 and run["ended_early"] == 0
    assert run["approvals"]["n"] == 10 and run["approvals"]["missing"] == 0
    assert run["processes"] == 3  # the supervisor and its two workers
    assert 0 < run["redis_clients"] <= 2 * 4  # each worker's fixed few, whatever the sessions
    assert "| sessions waiting at once | 40 |" in done.stdout
