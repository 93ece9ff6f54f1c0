"""The Trio-native Redis client (aura_trio.bus) against real redis-server processes.

Rules: loopback only; servers on free ports the OS handed out (the session's
`redis_server`, or one of the test's own in `tmp_path`); never fakeredis, never
mocks; every async test bounded by `trio.fail_after` (the conftest hook, or a
tighter `time_limit`). Keys carry the test's name, so the shared server needs no
flush. Faults (kills, restarts, silent servers) are in test_redis_transport_faults.py,
TLS and unix sockets in test_redis_transport_endpoints.py, the subscriber in
test_redis_subscriber.py.
"""

from __future__ import annotations

import random
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from aura_trio.bus.address import RedisAddress, parse_redis_url
from aura_trio.bus.client import RedisClient, Script, open_redis_client
from aura_trio.bus.errors import ReadOnlyError, ReplyError, TransportError
from aura_trio.bus.subscriber import serve_subscriber
from aura_trio.errors import StoreUnavailable
from bench.harness import RedisServer, start_redis

from .helpers import eventually

# Holds the whole server for ARGV[1] microseconds (DEBUG SLEEP is off by default).
BUSY = Script(
    """
    local t = redis.call('TIME')
    local start = t[1] * 1000000 + t[2]
    repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - start >= tonumber(ARGV[1])
    return 1
    """
)


async def hold(client: RedisClient, seconds: float) -> None:
    assert await client.run_script(BUSY, args=[int(seconds * 1e6)]) == 1


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[RedisClient]:
    async with open_redis_client(redis_server.url, connections=2, timeout=5.0) as client:
        yield client


async def test_hundreds_of_concurrent_callers_each_get_their_own_replies(
    redis: RedisClient,
) -> None:
    seen: dict[int, tuple[object, ...]] = {}

    async def caller(i: int) -> None:
        set_reply = await redis.execute("SET", f"pipe:k{i}", f"v{i}")
        got = await redis.execute("GET", f"pipe:k{i}")
        count = await redis.execute("INCR", f"pipe:n{i}")
        echoed = await redis.execute("ECHO", f"e{i}")
        seen[i] = (set_reply, got, count, echoed)

    await redis.execute("DEL", *(f"pipe:n{i}" for i in range(400)))
    async with trio.open_nursery() as nursery:
        for i in range(400):
            nursery.start_soon(caller, i)
    assert seen == {i: (b"OK", f"v{i}".encode(), 1, f"e{i}".encode()) for i in range(400)}


async def test_a_burst_of_callers_goes_out_in_a_few_writes(redis: RedisClient) -> None:
    await redis.execute("PING")
    writes, commands = redis.stats.writes, redis.stats.commands
    replies: dict[int, bytes] = {}

    async def caller(i: int) -> None:
        replies[i] = await redis.execute("ECHO", str(i))

    async with trio.open_nursery() as nursery:
        for i in range(500):
            nursery.start_soon(caller, i)
    assert replies == {i: str(i).encode() for i in range(500)}
    assert redis.stats.commands - commands == 500
    # All 500 queue in one scheduler pass: one write per connection, give or take.
    assert redis.stats.writes - writes <= 10


async def test_cancelled_callers_never_put_replies_out_of_step(redis: RedisClient) -> None:
    """Cancels land before writes and while replies are outstanding (a busy Lua
    script holds the server); every reply a caller does get is its own."""
    mismatches: list[tuple[bytes, object]] = []
    done = {"ok": 0, "cancelled": 0}
    rng = random.Random(7)

    async def caller(i: int) -> None:
        for round_ in range(6):
            token = f"c{i}:{round_}".encode()
            with trio.move_on_after(rng.choice([0, 0.0005, 0.005, 0.02, 0.06, 1.0])):
                await trio.sleep(rng.random() * 0.01)
                reply = await redis.execute("ECHO", token)
                if reply != token:
                    mismatches.append((token, reply))
                done["ok"] += 1
                continue
            done["cancelled"] += 1

    async def sleeper() -> None:
        for _ in range(4):
            with trio.move_on_after(rng.choice([0.01, 1.0])):
                await hold(redis, 0.05)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sleeper)
        for i in range(300):
            nursery.start_soon(caller, i)
    assert not mismatches
    assert done["ok"] > 100 and done["cancelled"] > 100
    assert redis.stats.withdrawn > 0, "no cancel landed before a write"
    assert redis.stats.abandoned > 0, "no cancel landed while a reply was outstanding"
    assert redis.stats.drops == 0
    # And afterwards, every connection is still in step.
    replies = {}

    async def check(i: int) -> None:
        replies[i] = await redis.execute("ECHO", f"after{i}")

    async with trio.open_nursery() as nursery:
        for i in range(200):
            nursery.start_soon(check, i)
    assert replies == {i: f"after{i}".encode() for i in range(200)}


async def test_transactions_are_contiguous_among_concurrent_commands(redis: RedisClient) -> None:
    results: dict[int, list[object]] = {}
    echoes: dict[int, bytes] = {}

    async def transact(i: int) -> None:
        results[i] = await redis.transaction(
            [("SET", f"tx:k{i}", i), ("INCRBY", f"tx:n{i}", i), ("GET", f"tx:k{i}")]
        )

    async def plain(i: int) -> None:
        echoes[i] = await redis.execute("ECHO", f"p{i}")

    await redis.execute("DEL", *(f"tx:n{i}" for i in range(200)))
    async with trio.open_nursery() as nursery:
        for i in range(200):
            nursery.start_soon(transact, i)
            nursery.start_soon(plain, i)
    assert results == {i: [b"OK", i, str(i).encode()] for i in range(200)}
    assert echoes == {i: f"p{i}".encode() for i in range(200)}


async def test_transaction_errors(redis: RedisClient) -> None:
    await redis.execute("SET", "txe:s", "text")
    # Refused when queued: nothing runs.
    with pytest.raises(ReplyError) as refused:
        await redis.transaction([("SET", "txe:a", 1), ("NOSUCHCOMMAND",)])
    assert refused.value.code == "ERR"
    assert await redis.execute("EXISTS", "txe:a") == 0
    # Failing when run: the others did run.
    with pytest.raises(ReplyError) as failed:
        await redis.transaction([("SET", "txe:b", 1), ("INCR", "txe:s")])
    assert "not an integer" in failed.value.message
    assert await redis.execute("GET", "txe:b") == b"1"
    replies = await redis.transaction([("INCR", "txe:s"), ("ECHO", "x")], raise_on_error=False)
    assert isinstance(replies[0], ReplyError) and replies[1] == b"x"
    assert await redis.execute("ECHO", "still in step") == b"still in step"


async def test_error_replies_are_store_unavailable_with_redis_message(redis: RedisClient) -> None:
    await redis.execute("SET", "err:s", "text")
    with pytest.raises(ReplyError) as wrong:
        await redis.execute("LPUSH", "err:s", "x")
    assert wrong.value.code == "WRONGTYPE" and "WRONGTYPE" in str(wrong.value)
    assert isinstance(wrong.value, StoreUnavailable)
    assert await redis.execute("GET", "err:s") == b"text"


async def test_a_write_to_a_replica_raises_read_only(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    replica = start_redis(tmp_path, "--replicaof", "127.0.0.1", str(redis_server.port))
    try:
        async with open_redis_client(f"redis://127.0.0.1:{replica.port}") as client:
            with pytest.raises(ReadOnlyError) as read_only:
                await client.execute("SET", "ro:k", "v")
            assert read_only.value.code == "READONLY"
            assert isinstance(read_only.value, ReplyError | StoreUnavailable)
            with pytest.raises(ReadOnlyError):
                await client.transaction([("SET", "ro:k", "v")])
            assert await client.execute("ECHO", "reads work") == b"reads work"
    finally:
        replica.process.kill()
        replica.process.wait()


async def test_scripts_run_by_sha_and_survive_a_script_flush(redis: RedisClient) -> None:
    script = Script("return {KEYS[1], ARGV[1], redis.call('INCR', KEYS[1])}")
    await redis.execute("DEL", "lua:n")
    assert await redis.run_script(script, keys=["lua:n"], args=["a"]) == [b"lua:n", b"a", 1]
    await redis.execute("SCRIPT", "FLUSH")
    assert await redis.execute("SCRIPT", "EXISTS", script.sha) == [0]
    assert await redis.run_script(script, keys=["lua:n"], args=["b"]) == [b"lua:n", b"b", 2]
    assert await redis.execute("SCRIPT", "EXISTS", script.sha) == [1]
    with pytest.raises(ReplyError):
        await redis.run_script(Script("return redis.call('NOSUCH')"))


async def test_a_fixed_number_of_connections_whatever_the_callers(tmp_path: Path) -> None:
    server = start_redis(tmp_path)
    url = f"redis://127.0.0.1:{server.port}/0?client_name=fixed"
    try:
        async with (
            open_redis_client(url, connections=3) as client,
            trio.open_nursery() as nursery,
        ):
            await nursery.start(
                lambda task_status: serve_subscriber(
                    url,
                    "fixed:*",
                    on_message=lambda c, p: None,
                    on_subscribed=lambda: None,
                    on_lost=lambda e: None,
                    task_status=task_status,
                )
            )
            counts: list[int] = []

            async def caller(i: int) -> None:
                await client.execute("SET", f"fixed:{i}", i)
                assert await client.execute("GET", f"fixed:{i}") == str(i).encode()

            async def count_connections() -> None:
                for _ in range(5):
                    listing = await client.execute("CLIENT", "LIST")
                    counts.append(listing.count(b"name=fixed "))
                    await trio.lowlevel.checkpoint()

            async with trio.open_nursery() as callers:
                for i in range(1000):
                    callers.start_soon(caller, i)
                callers.start_soon(count_connections)
            assert counts == [4] * 5  # 3 for commands, 1 for the subscription
            assert client.stats.connects == 3
            nursery.cancel_scope.cancel()
    finally:
        server.process.kill()
        server.process.wait()


async def test_a_dedicated_connection_runs_wait_without_stalling_the_others(
    redis: RedisClient,
) -> None:
    await redis.execute("PING")
    async with redis.dedicated() as own:
        results: dict[str, float] = {}

        async def wait_for_a_replica() -> None:
            started = trio.current_time()
            # No replica: WAIT blocks its connection for the whole 400 ms.
            assert await own.execute("WAIT", 1, 400) == 0
            results["wait"] = trio.current_time() - started

        async def others() -> None:
            await trio.sleep(0.05)
            started = trio.current_time()
            for i in range(20):
                assert await redis.execute("ECHO", str(i)) == str(i).encode()
            results["others"] = trio.current_time() - started

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait_for_a_replica)
            nursery.start_soon(others)
    assert results["wait"] >= 0.35
    assert results["others"] < 0.3
    with pytest.raises(TransportError):
        await own.execute("PING")  # closed on leaving


async def test_leaving_the_client_fails_its_waiting_callers(redis_server: RedisServer) -> None:
    failures: list[BaseException] = []
    async with trio.open_nursery() as nursery:
        async with open_redis_client(redis_server.url) as client:
            await client.execute("PING")

            async def blocked() -> None:  # a task that outlives the client
                try:
                    await hold(client, 0.3)
                except TransportError as error:
                    failures.append(error)

            nursery.start_soon(blocked)
            await trio.sleep(0.05)
        await eventually(lambda: failures, within=0.1, step=0.005)
    assert "closed" in str(failures[0])
    with pytest.raises(TransportError, match="closed"):
        await client.execute("PING")


def test_urls_become_addresses_by_redis_py_rules() -> None:
    plain = parse_redis_url("redis://u:p%40ss@example.test:6380/3")
    assert plain == RedisAddress(
        host="example.test", port=6380, username="u", password="p@ss", db=3
    )
    assert "p@ss" not in repr(plain) and plain.describe() == "redis://example.test:6380/3"
    assert parse_redis_url("redis://localhost") == RedisAddress()
    assert parse_redis_url("redis://h/0?db=5&socket_timeout=2&max_connections=9").db == 5
    unix = parse_redis_url("unix:///run/redis.sock?db=2&password=pw")
    assert (unix.path, unix.db, unix.password, unix.tls) == ("/run/redis.sock", 2, "pw", None)
    tls = parse_redis_url(
        "rediss://h:6390?ssl_ca_certs=/ca.pem&ssl_certfile=/c.pem&ssl_keyfile=/k.pem"
        "&ssl_cert_reqs=optional&ssl_check_hostname=false"
    )
    assert tls.tls is not None
    assert (tls.tls.ca_certs, tls.tls.certfile, tls.tls.keyfile) == ("/ca.pem", "/c.pem", "/k.pem")
    assert tls.tls.cert_reqs == ssl.CERT_OPTIONAL and tls.tls.check_hostname is False
    assert parse_redis_url("rediss://h").tls.cert_reqs == ssl.CERT_REQUIRED  # type: ignore[union-attr]
    assert parse_redis_url("redis://h?client_name=me").client_name == "me"
    assert plain.at("10.0.0.2", 6400) == RedisAddress(
        host="10.0.0.2", port=6400, username="u", password="p@ss", db=3
    )
    for bad in (
        "http://h",
        "redis://h?ssl_ca_certs=/ca.pem",  # TLS options without TLS
        "rediss://h?ssl_ca_cert=/ca.pem",  # misspelt
        "redis://h?no_such_option=1",
        "redis://h?protocol=3",
        "rediss://h?ssl_cert_reqs=sometimes",
    ):
        with pytest.raises(ValueError):  # noqa: PT011
            parse_redis_url(bad)


async def test_what_the_body_raises_leaves_as_itself(redis_server: RedisServer) -> None:
    async def client_body() -> None:
        async with open_redis_client(redis_server.url) as client:
            await client.execute("PING")
            try:
                raise ValueError("the cause")
            except ValueError as cause:
                raise KeyError("from the body") from cause

    async def dedicated_body() -> None:
        async with open_redis_client(redis_server.url) as client, client.dedicated() as own:
            await own.execute("PING")
            raise KeyError("from the body")

    with pytest.raises(KeyError) as raised:
        await client_body()
    assert isinstance(raised.value.__cause__, ValueError)
    with pytest.raises(KeyError):
        await dedicated_body()


async def test_reconnect_fails_waiting_callers_and_opens_the_connections_again(
    redis: RedisClient,
) -> None:
    await redis.execute("PING")
    connects = redis.stats.connects
    failures: list[str] = []

    async def waiting() -> None:
        try:
            await hold(redis, 0.2)
        except TransportError as error:
            failures.append(str(error))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiting)
        await trio.sleep(0.05)
        redis.reconnect("told to: a replica")
    assert failures == ["told to: a replica"]
    await eventually(lambda: redis.stats.connects == connects + 2)
    assert await redis.execute("ECHO", "again") == b"again"
