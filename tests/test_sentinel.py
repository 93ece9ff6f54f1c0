"""Redis failover behind Sentinel, with real processes: a primary, its replica(s)
and three sentinels (`sentinel_servers.py`), the primary SIGKILLed while sessions
wait for approval.

No decision lost, none applied twice, none waiting for its timeout: the transport
asks the sentinels for the new primary, the subscriber follows it and re-reads
every waiting session's stored signal, and what a person saw (with
`AURA_REDIS_MIN_REPLICAS=1`) is still on the new primary.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
import trio

from aura_trio import Settings, client
from aura_trio.settings import ConfigError
from bench.harness import HOST, pick_port

from .fleet import NO_TIMEOUT, SESSIONS, check_outcomes, java_decides, waiting_fleet
from .helpers import auth, events_of, eventually, rest_of, until_hitl
from .processes import run_server
from .sentinel_servers import MASTER, requires_sentinel, sentinel_deployment


async def _ready_status(aura: Any) -> tuple[int, dict]:
    response = await aura.request("GET", "/health/ready")
    return response.status, response.json()


def test_sentinel_settings_go_together_and_are_checked() -> None:
    both = Settings.from_env(
        {"REDIS_SENTINELS": "10.0.0.1:26379, [::1]:26380,sentinel-3", "REDIS_SENTINEL_MASTER": "m"}
    )
    assert both.sentinel_mode and both.redis_url is None
    assert both.redis_sentinels == (("10.0.0.1", 26379), ("::1", 26380), ("sentinel-3", 26379))
    assert Settings.from_env({"AURA_REDIS_MIN_REPLICAS": "2"}).redis_min_replicas == 2
    for env, message in [
        ({"REDIS_SENTINELS": "h:1"}, "REDIS_SENTINEL_MASTER is not"),
        ({"REDIS_SENTINEL_MASTER": "m"}, "REDIS_SENTINELS is not"),
        ({"REDIS_SENTINELS": "h:x", "REDIS_SENTINEL_MASTER": "m"}, "is not host:port"),
        ({"REDIS_SENTINELS": ",", "REDIS_SENTINEL_MASTER": "m"}, "names no sentinel"),
        (
            {"REDIS_SENTINELS": "h:1", "REDIS_SENTINEL_MASTER": "m", "REDIS_URL": "unix:///s"},
            "unix socket",
        ),
        ({"AURA_REDIS_MIN_REPLICAS": "-1"}, "must be at least 0"),
    ]:
        with pytest.raises(ConfigError, match=message):
            Settings.from_env(env)


async def test_sentinel_mode_starts_no_embedded_redis_and_is_not_ready_without_sentinels(
    tmp_path,
):
    dead = [pick_port() for _ in range(3)]
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env |= {
        "REDIS_URL": "",
        "REDIS_SENTINELS": ",".join(f"{HOST}:{port}" for port in dead),
        "REDIS_SENTINEL_MASTER": MASTER,
    }
    async with run_server(tmp_path, env=env) as server:
        children = await trio.run_process(
            ["ps", "-o", "pid=,args=", "--ppid", str(server.pid)], capture_stdout=True, check=False
        )
        assert "aura-redis-" not in children.stdout.decode()
        ready = await client.request(HOST, server.port, "GET", "/health/ready", headers={})
        assert ready.status == 503
        assert f"no sentinel names a primary '{MASTER}'" in ready.json()["message"]
    assert not any("embedded" in line.get("msg", "") for line in server.logs())


@requires_sentinel
@pytest.mark.slow
@pytest.mark.time_limit(90)
async def test_all_sentinels_down_is_a_clear_503_and_recovers_by_itself(start_server, tmp_path):
    ports = [pick_port() for _ in range(3)]
    aura = await start_server(
        redis_url=None,
        redis_sentinels=tuple((HOST, p) for p in ports),
        redis_sentinel_master=MASTER,
    )
    status, body = await _ready_status(aura)
    assert status == 503 and body["errorCode"] == "REDIS_UNAVAILABLE"
    assert f"no sentinel names a primary '{MASTER}'" in body["message"]
    assert all(f"{HOST}:{port}" in body["message"] for port in ports)  # each one's failure
    async with sentinel_deployment(tmp_path, sentinel_ports=list(ports)):

        async def ready() -> bool:
            return (await _ready_status(aura))[0] == 200

        await eventually(ready, within=20, step=0.1)
        async with aura.stream("merge") as stream:
            hitl = await until_hitl(stream)
            assert (await aura.approve(hitl["requestId"])).status == 200
            kinds = events_of(await rest_of(stream))
        assert kinds[-1] == "end" and kinds.count("tool_execution") == 1


@requires_sentinel
@pytest.mark.slow
@pytest.mark.time_limit(120)
async def test_primary_killed_while_200_sessions_wait_every_one_follows_the_promotion(
    start_server, tmp_path
):
    async with sentinel_deployment(tmp_path) as deployment:
        primary, _ = deployment.servers
        aura = await start_server(
            **deployment.settings(hitl_timeout_seconds=NO_TIMEOUT, signal_poll_seconds=NO_TIMEOUT)
        )
        outcomes: dict = {}
        async with trio.open_nursery() as nursery:
            waiting = await waiting_fleet(aura, nursery, outcomes)
            # With min-replicas 0 a write not yet replicated dies with its primary:
            # the test's own write and WAIT make sure every request reached the replica.
            raw = primary.client()
            raw.set("caught-up", 1)
            assert raw.execute_command("WAIT", 1, 5000) == 1
            primary.kill()
            killed_at = trio.current_time()

            async def not_ready() -> dict | None:
                status, body = await _ready_status(aura)
                return body if status == 503 else None

            # Until the promotion: the sentinels still name the dead primary.
            body = await eventually(not_ready, within=10, step=0.02)
            assert str(primary.port) in body["message"], body
            new = await deployment.promoted(primary.port)
            promoted_at = trio.current_time()
            unheard = await trio.to_thread.run_sync(
                java_decides, new.client(), waiting, abandon_on_cancel=True
            )
        check_outcomes(waiting, outcomes)
        last = max(at for _, at in outcomes.values())
        print(
            f"\nSentinel failover: promoted {(promoted_at - killed_at) * 1000:.0f} ms after the "
            f"kill; {unheard} of {SESSIONS} PUBLISHes reached nobody; the last session resumed "
            f"{(last - killed_at) * 1000:.0f} ms after the kill "
            f"({(last - promoted_at) * 1000:.0f} ms after the promotion)"
        )
        for n, hitl in waiting.items():
            stored = json.loads(new.client().get(f"hitl:request:{hitl['requestId']}"))
            assert stored["status"] == ("rejected" if n % 3 == 0 else "approved")
        assert (await _ready_status(aura))[0] == 200


@requires_sentinel
@pytest.mark.slow
@pytest.mark.time_limit(120)
async def test_with_min_replicas_what_a_person_saw_survives_and_approvals_count_once(
    start_server, tmp_path
):
    waiting_count = 40
    async with sentinel_deployment(tmp_path, replicas=2) as deployment:
        primary = deployment.servers[0]
        aura = await start_server(
            **deployment.settings(
                redis_min_replicas=1, hitl_timeout_seconds=NO_TIMEOUT, signal_poll_seconds=1.0
            )
        )
        seen: set[str] = set()  # every request whose `hitl` event a client saw
        waiting: dict[int, dict] = {}
        outcomes: dict[int, list] = {}
        answers: dict[int, list[int]] = {}
        seen_after_promotion = 0
        promoted = trio.Event()

        async def waits(n: int) -> None:
            async with aura.stream("merge", headers=auth(f"u{n}")) as stream:
                waiting[n] = await until_hitl(stream)
                seen.add(waiting[n]["requestId"])
                outcomes[n] = await rest_of(stream)

        async def keeps_opening(k: int) -> None:
            nonlocal seen_after_promotion
            while True:
                async with aura.stream("merge", headers=auth(f"o{k}")) as stream:
                    async for frame in stream:
                        if frame.event == "hitl":
                            seen.add(frame.json()["data"]["requestId"])
                            seen_after_promotion += promoted.is_set()
                            break

        async def approves(n: int) -> None:
            statuses = answers.setdefault(n, [])
            while not statuses or statuses[-1] == 503:
                response = await aura.approve(waiting[n]["requestId"], headers=auth(f"u{n}"))
                statuses.append(response.status)
                if response.status == 503:
                    assert response.json()["errorCode"] == "REDIS_UNAVAILABLE"
                    await trio.sleep(0.2)  # a client's pace of retrying, as Retry-After asks

        async with trio.open_nursery() as nursery:
            for n in range(waiting_count):
                nursery.start_soon(waits, n)
            await eventually(lambda: len(waiting) == waiting_count, within=20, step=0.05)
            async with trio.open_nursery() as openers:
                for k in range(4):
                    openers.start_soon(keeps_opening, k)
                await eventually(lambda: len(seen) > waiting_count + 8, within=10, step=0.01)
                primary.kill()
                killed_at = trio.current_time()
                for n in range(waiting_count):
                    nursery.start_soon(approves, n)
                new = await deployment.promoted(primary.port)
                promoted.set()
                await eventually(lambda: seen_after_promotion >= 8, within=30, step=0.05)
                openers.cancel_scope.cancel()
        resumed_in = trio.current_time() - killed_at
        for n, statuses in answers.items():
            # Once: a 200, or 503s then 409 (the unconfirmed attempt had landed after all).
            assert statuses.count(200) + statuses.count(409) == 1, statuses
            assert set(statuses[:-1]) <= {503}, statuses
            kinds = events_of(outcomes[n])
            assert kinds[-1] == "end" and kinds.count("tool_execution") == 1, (n, kinds)
        raw = new.client()
        lost = [rid for rid in seen if raw.get(f"hitl:request:{rid}") is None]
        assert not lost, f"{len(lost)} of {len(seen)} announced requests lost on promotion"
        retried = sum(len(s) > 1 for s in answers.values())
        print(
            f"\nmin-replicas=1 failover: {len(seen)} announced requests all on the new primary; "
            f"{retried} of {waiting_count} approvals answered 503 first; all resumed within "
            f"{resumed_in * 1000:.0f} ms of the kill"
        )
