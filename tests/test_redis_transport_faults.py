"""The Trio-native Redis client when Redis dies, restarts, stalls or never comes.

Rules as in test_redis_transport.py: loopback only, free ports, real
redis-server processes of the test's own (killed with SIGKILL, restarted on the
same port), a `trio.fail_after` bound on each test; the silent servers are tiny
Trio TCP servers in the test.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import pytest
import redis as redis_py
import trio
import trio.lowlevel

from aura_trio.bus.address import RedisAddress
from aura_trio.bus.client import RedisClient, Script, open_redis_client
from aura_trio.bus.errors import TransportError
from bench.harness import RedisServer, start_redis
from bench.harness import pick_port as free_port

from .bus_servers import launch_redis
from .helpers import eventually

DEBUG = ("--enable-debug-command", "local")


async def answers(client: RedisClient, *, within: float) -> None:
    """Wait until the client gets replies again (it is never recreated)."""
    with trio.fail_after(within):
        while True:
            try:
                assert await client.execute("ECHO", "back") == b"back"
                return
            except TransportError:
                await trio.sleep(0.02)


async def fails_fast(call: Callable[[], Awaitable[object]], *, within: float = 0.2) -> str:
    started = trio.current_time()
    with pytest.raises(TransportError) as failed:
        await call()
    assert trio.current_time() - started < within
    return str(failed.value)


async def test_sigkill_fails_pending_callers_at_once_then_the_same_client_recovers(
    tmp_path: Path,
) -> None:
    server = start_redis(tmp_path, *DEBUG)
    try:
        async with open_redis_client(server.url, timeout=5.0) as client:
            await client.execute("PING")
            failed_at: list[float] = []

            async def pending(i: int) -> None:
                try:
                    if i == 0:
                        await client.execute("DEBUG", "SLEEP", "3")
                    else:
                        await client.execute("ECHO", str(i))
                except TransportError:
                    failed_at.append(trio.current_time())

            async with trio.open_nursery() as nursery:
                for i in range(50):
                    nursery.start_soon(pending, i)
                await trio.sleep(0.2)  # all 50 wait on the sleeping server
                killed_at = trio.current_time()
                server.process.kill()
                server.process.wait()
            assert len(failed_at) == 50
            assert max(failed_at) - killed_at < 0.5  # not the 5 s timeout
            assert client.stats.drops == 2 and not client.connected
            await fails_fast(lambda: client.execute("PING"))

            server = start_redis(tmp_path, *DEBUG, port=server.port)
            await answers(client, within=5)
            assert client.stats.drops == 2 and client.connected
    finally:
        server.process.kill()
        server.process.wait()


@pytest.mark.parametrize("auth", ["requirepass", "acl-user"])
async def test_auth_and_select_are_redone_after_a_restart(tmp_path: Path, auth: str) -> None:
    if auth == "requirepass":
        options: tuple[str, ...] = ("--requirepass", "s3cret")
        username, user = None, b"default"
    else:
        options = ("--user", "default", "off", "--user", "aura", "on", ">s3cret", "~*", "&*",
                   "+@all")  # fmt: skip
        username, user = "aura", b"aura"
    server = launch_redis(tmp_path, *options)
    credentials = f"{username or ''}:s3cret@"
    raw = redis_py.Redis(port=server.port, username=username, password="s3cret", db=3)
    raw_db0 = redis_py.Redis(port=server.port, username=username, password="s3cret", db=0)
    try:
        async with open_redis_client(f"redis://{credentials}127.0.0.1:{server.port}/3") as client:
            await client.execute("SET", "auth:before", "1")
            assert raw.get("auth:before") == b"1"
            server.restart()
            await answers(client, within=5)
            info = await client.execute("CLIENT", "INFO")
            assert b" db=3 " in info and b" user=" + user + b" " in info
            await client.execute("SET", "auth:after", "2")
            assert raw.get("auth:after") == b"2"
            assert raw_db0.get("auth:after") is None
    finally:
        raw.close()
        raw_db0.close()
        server.kill()


async def test_a_refused_password_fails_fast_with_redis_reason(tmp_path: Path) -> None:
    server = launch_redis(tmp_path, "--requirepass", "s3cret")
    try:
        async with open_redis_client(f"redis://:wrong@127.0.0.1:{server.port}/0") as client:
            reason = await fails_fast(lambda: client.execute("PING"), within=1.0)
            assert "WRONGPASS" in reason
            await fails_fast(lambda: client.execute("PING"))
    finally:
        server.kill()


async def test_a_script_runs_again_after_a_restart(tmp_path: Path) -> None:
    server = start_redis(tmp_path)
    script = Script("return 'ran ' .. ARGV[1]")
    try:
        async with open_redis_client(server.url) as client:
            assert await client.run_script(script, args=["once"]) == b"ran once"
            server.process.kill()
            server.process.wait()
            server = start_redis(tmp_path, port=server.port)
            await answers(client, within=5)
            assert await client.execute("SCRIPT", "EXISTS", script.sha) == [0]
            assert await client.run_script(script, args=["twice"]) == b"ran twice"
            assert await client.execute("SCRIPT", "EXISTS", script.sha) == [1]
    finally:
        server.process.kill()
        server.process.wait()


async def test_a_connection_whose_oldest_reply_is_overdue_is_presumed_dead(tmp_path: Path) -> None:
    server = start_redis(tmp_path, *DEBUG)
    try:
        async with open_redis_client(server.url, timeout=0.5) as client:
            await client.execute("PING")
            outcomes: list[tuple[float, str]] = []
            started = trio.current_time()

            async def call(*args: str) -> None:
                try:
                    await client.execute(*args)
                    outcomes.append((trio.current_time() - started, "ok"))
                except TransportError as error:
                    outcomes.append((trio.current_time() - started, str(error)))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(call, "DEBUG", "SLEEP", "2")
                await trio.sleep(0.01)
                for i in range(20):
                    nursery.start_soon(call, "ECHO", str(i))
            assert len(outcomes) == 21
            assert all(0.4 < elapsed < 1.0 for elapsed, _ in outcomes), outcomes
            assert all("presumed dead" in what for _, what in outcomes), outcomes
            assert client.stats.overdue == 2
            await answers(client, within=5)  # once the server wakes up
    finally:
        server.process.kill()
        server.process.wait()


async def _serve_silently(nursery: trio.Nursery, *, answer_handshake: bool) -> int:
    """A TCP server that accepts and never answers (but the session's PING)."""

    async def handle(stream: trio.SocketStream) -> None:
        if answer_handshake:
            await stream.receive_some(1024)  # the PING that opens the session
            await stream.send_all(b"+PONG\r\n")
        await trio.sleep_forever()

    listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
    return int(listeners[0].socket.getsockname()[1])


async def test_a_server_that_stops_answering_fails_callers_within_the_timeout(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    async with trio.open_nursery() as servers:
        silent = RedisAddress("127.0.0.1", await _serve_silently(servers, answer_handshake=True))
        target = {"address": silent}

        async def locate() -> RedisAddress:
            return target["address"]

        async with open_redis_client(locate, timeout=0.5) as client:
            started = trio.current_time()
            with pytest.raises(TransportError, match="presumed dead"):
                await client.execute("PING")
            assert 0.4 < trio.current_time() - started < 1.2
            # The locator is asked again at every reconnect: point it at Redis.
            target["address"] = RedisAddress("127.0.0.1", redis_server.port)
            await answers(client, within=5)
        servers.cancel_scope.cancel()


async def test_a_server_that_never_answers_fails_the_connect_then_calls_fail_fast() -> None:
    async with trio.open_nursery() as servers:
        port = await _serve_silently(servers, answer_handshake=False)
        async with open_redis_client(f"redis://127.0.0.1:{port}", timeout=0.5) as client:
            # The first call waits for the first attempt (bounded), later ones do not.
            reason = await fails_fast(lambda: client.execute("PING"), within=1.0)
            assert "no Redis connection within 0.5 s" in reason
            await fails_fast(lambda: client.execute("PING"), within=0.05)
        servers.cancel_scope.cancel()


async def test_redis_down_at_start_fails_fast_then_connects_when_it_appears(tmp_path: Path) -> None:
    port = free_port()
    async with open_redis_client(f"redis://127.0.0.1:{port}/0", timeout=5.0) as client:
        reason = await fails_fast(lambda: client.execute("PING"))
        assert "cannot connect" in reason
        await fails_fast(lambda: client.transaction([("PING",)]))
        assert client.last_error is not None and not client.connected
        server = start_redis(tmp_path, port=port)
        try:
            await answers(client, within=5)
            await eventually(lambda: client.stats.connects == 2, within=3)
            assert client.last_error is None
        finally:
            server.process.kill()
            server.process.wait()


async def test_a_process_too_busy_to_read_does_not_presume_its_redis_dead(tmp_path: Path) -> None:
    """Regression: 9,000 sessions ending at once kept the Trio loop so busy that the
    reader got one read per scheduler pass; replies queued up unread, the oldest
    went overdue, and the watchdog failed every caller ("presumed dead") although
    Redis had answered at once. Replies still arriving mean Redis is alive."""
    server = start_redis(tmp_path)
    payload = "x" * 20_000
    try:
        async with open_redis_client(server.url, timeout=0.3) as client:
            await client.execute("PING")
            replies: list[object] = []
            busy_until = trio.current_time() + 1.5

            async def busy() -> None:  # every scheduler pass costs 0.1 s of blocking
                while trio.current_time() < busy_until:
                    time.sleep(0.025)  # noqa: ASYNC251  the loop blocks, on purpose
                    await trio.lowlevel.checkpoint()

            async def call() -> None:
                replies.append(await client.execute("ECHO", payload))

            async with trio.open_nursery() as nursery:
                for _ in range(4):
                    nursery.start_soon(busy)
                for _ in range(40):  # ~800 KB of replies: a dozen reads
                    nursery.start_soon(call)
            assert replies == [payload.encode()] * 40
            assert client.stats.overdue == 0
    finally:
        server.kill()
