"""Replicas, without Sentinel: a connection that lands on a replica, and `WAIT`.

Real redis-server processes of the test's own (a primary, and a replica started
with `--replicaof`), stopped in `finally`; bounded by conftest's 60 s.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from aura_trio.bus.address import RedisAddress, parse_redis_url
from aura_trio.bus.client import Script, open_redis_client
from aura_trio.bus.dial import dial
from aura_trio.bus.errors import ReadOnlyError, TransportError
from aura_trio.bus.replicated import NotReplicatedError, Replicated
from bench.harness import HOST, RedisServer

from .helpers import events_of, eventually, rest_of, until_hitl
from .processes import run_redis
from .sentinel_servers import PRIMARY

_WRITE = Script("return redis.call('SET', KEYS[1], ARGV[1])")


@asynccontextmanager
async def primary_and_replica(directory: Path) -> AsyncIterator[tuple[RedisServer, RedisServer]]:
    async with (
        run_redis(directory / "primary", *PRIMARY) as primary,
        run_redis(directory / "replica", "--replicaof", HOST, str(primary.port)) as replica,
    ):
        raw = replica.client()
        await eventually(
            lambda: raw.info("replication")["master_link_status"] == "up", within=15, step=0.05
        )
        yield primary, replica


def _pending(event: dict) -> bool:
    return event["data"]["status"] == "pending"


def _replicas_of(primary: RedisServer) -> int:
    return int(primary.client().info("replication")["connected_slaves"])


async def test_an_address_that_must_be_a_primary_refuses_a_replica(tmp_path: Path) -> None:
    async with primary_and_replica(tmp_path) as (primary, replica):
        template = parse_redis_url("redis://127.0.0.1/0")
        with pytest.raises(TransportError, match="is a replica, not the primary"):
            await dial(template.primary_at(HOST, replica.port))
        stream, _ = await dial(template.primary_at(HOST, primary.port))
        await stream.aclose()


async def test_readonly_closes_the_connections_and_they_reconnect_to_the_primary(
    tmp_path: Path,
) -> None:
    async with primary_and_replica(tmp_path) as (primary, replica):
        # A locator still naming the replica for the first connections (a primary
        # demoted under them), then the primary.
        asked: list[int] = []

        async def locate() -> RedisAddress:
            asked.append(1)
            port = replica.port if len(asked) <= 2 else primary.port
            return RedisAddress(host=HOST, port=port)

        async with open_redis_client(locate, timeout=3.0) as client:
            with pytest.raises(ReadOnlyError):
                await client.execute("SET", "k", "v")
            await eventually(lambda: client.connected, within=5)
            # Every connection was closed and reopened on the locator's new answer.
            assert len(asked) >= 4
            assert await client.execute("SET", "k", "v") == b"OK"
            assert await client.run_script(_WRITE, keys=["k2"], args=["v"]) == b"OK"
        assert primary.client().get("k") == b"v"


@pytest.mark.parametrize("write", ["transaction", "script", "durable"])
async def test_readonly_in_a_transaction_or_a_script_counts_too(tmp_path: Path, write: str) -> None:
    async with (
        primary_and_replica(tmp_path) as (_, replica),
        open_redis_client(replica.url, timeout=3.0, connections=1) as client,
    ):
        await eventually(lambda: client.connected, within=5)
        durable = Replicated(client, replicas=1, wait_timeout=0.5)
        calls = {
            "transaction": lambda: client.transaction([("SET", "k", "v")]),
            "script": lambda: client.run_script(_WRITE, keys=["k"], args=["v"]),
            "durable": lambda: durable.transaction([("SET", "k", "v")]),  # on a lent one
        }
        with pytest.raises(ReadOnlyError):
            await calls[write]()
        # Closed (it is on a replica) and opened again, on the replica again here.
        await eventually(lambda: client.stats.connects == 2, within=5)


async def test_wait_confirms_a_write_and_times_out_clearly_without_stalling_others(
    tmp_path: Path,
) -> None:
    async with (
        primary_and_replica(tmp_path) as (primary, replica),
        open_redis_client(primary.url, timeout=3.0) as client,
    ):
        durable = Replicated(client, replicas=1, wait_timeout=1.0)
        assert await durable.transaction([("SET", "a", 1), ("INCR", "a")]) == [b"OK", 2]
        assert await durable.run_script(_WRITE, keys=["b"], args=["x"]) == b"OK"
        assert replica.client().get("b") == b"x"

        replica.kill()
        await eventually(lambda: _replicas_of(primary) == 0, within=5)
        pings: list[float] = []

        async def ping_meanwhile() -> None:
            while True:
                started = trio.current_time()
                await client.execute("PING")
                pings.append(trio.current_time() - started)
                await trio.sleep(0.01)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ping_meanwhile)
            started = trio.current_time()
            with pytest.raises(NotReplicatedError, match="reached 0 of 1 replicas"):
                await durable.transaction([("SET", "c", 1)])
            waited = trio.current_time() - started
            nursery.cancel_scope.cancel()
        assert 0.9 < waited < 2.5
        # The other callers' commands went on while the WAIT blocked its own connection.
        assert len(pings) > 10 and max(pings) < 0.5
        assert primary.client().get("c") == b"1"  # on the primary only


async def test_wait_timing_out_ends_the_session_before_anything_is_announced(
    start_server, tmp_path: Path
) -> None:
    async with run_redis(tmp_path) as lonely:  # no replica at all
        aura = await start_server(
            redis_url=lonely.url, redis_min_replicas=1, redis_timeout_seconds=1.0
        )
        async with aura.stream("merge") as stream:
            frames = await rest_of(stream)
        kinds = events_of(frames)
        pending = [f for f in frames if f.event == "tool_execution" and _pending(f.json())]
        assert not pending and "hitl" not in kinds, kinds
        [error] = [f.json() for f in frames if f.event == "error"]
        assert kinds[-1] == "error" and error["errorType"] == "InternalError"
        ready = await aura.request("GET", "/health/ready")
        assert ready.status == 200  # Redis is up; only its replicas are missing


async def test_a_decision_not_confirmed_answers_503_and_is_never_applied_twice(
    start_server, tmp_path: Path
) -> None:
    async with primary_and_replica(tmp_path) as (primary, replica):
        aura = await start_server(
            redis_url=primary.url,
            redis_min_replicas=1,
            # WAIT gets half of it: room for a replica's ack on a busy machine (0.5 s
            # was too short on CI once: the request was never announced).
            redis_timeout_seconds=4.0,
            signal_poll_seconds=0.5,
        )
        async with aura.stream("merge") as stream:
            hitl = await until_hitl(stream)  # announced: it is on the replica
            assert replica.client().get(f"hitl:request:{hitl['requestId']}") is not None
            replica.kill()
            await eventually(lambda: _replicas_of(primary) == 0, within=5)
            first = await aura.approve(hitl["requestId"])
            assert first.status == 503, first.body
            body = first.json()
            assert body["success"] is False and body["errorCode"] == "REDIS_UNAVAILABLE"
            assert "not confirmed" in body["message"]
            # It did take effect on the primary: a retry is told so, not applied again.
            again = await aura.approve(hitl["requestId"])
            assert again.status == 409
            frames = await rest_of(stream)  # found at the next re-read of stored signals
        kinds = events_of(frames)
        assert kinds.count("tool_execution") == 1 and kinds[-1] == "end", kinds
        stored = json.loads(primary.client().get(f"hitl:request:{hitl['requestId']}"))
        assert stored["status"] == "approved"
