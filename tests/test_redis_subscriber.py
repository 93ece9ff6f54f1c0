"""The pattern subscriber (aura_trio.bus.subscriber) against real redis-server processes.

Rules as in test_redis_transport.py: loopback only, free ports, real
redis-server processes of the test's own (the connection kills and restarts would
disturb others), a `trio.fail_after` bound on each test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest
import trio

from aura_trio.bus.client import RedisClient, open_redis_client
from aura_trio.bus.subscriber import serve_subscriber
from bench.harness import RedisServer, start_redis

from .helpers import eventually


@dataclass
class Heard:
    """What the callbacks were told, in order."""

    messages: list[tuple[bytes, bytes]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)

    def on_message(self, channel: bytes, payload: bytes) -> None:
        self.messages.append((channel, payload))

    def on_subscribed(self) -> None:
        self.events.append("subscribed")

    def on_lost(self, error: str) -> None:
        self.events.append(f"lost: {error}")

    @property
    def subscriptions(self) -> int:
        return self.events.count("subscribed")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    server = start_redis(tmp_path)
    yield server
    server.process.kill()
    server.process.wait()


@pytest.fixture
async def client(server: RedisServer) -> AsyncIterator[RedisClient]:
    async with open_redis_client(server.url) as client:
        yield client


def subscriber(
    url: str, heard: Heard, *, ping_interval: float = 1.0, ping_timeout: float = 3.0
) -> Callable[..., Awaitable[None]]:
    """`serve_subscriber` on "sub:*" reporting to `heard`, for `nursery.start`."""

    async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await serve_subscriber(
            url,
            "sub:*",
            on_message=heard.on_message,
            on_subscribed=heard.on_subscribed,
            on_lost=heard.on_lost,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            task_status=task_status,
        )

    return run


async def test_messages_of_the_pattern_are_handed_over_in_order(
    server: RedisServer, client: RedisClient
) -> None:
    heard = Heard()
    async with trio.open_nursery() as nursery:
        await nursery.start(subscriber(server.url, heard))
        assert heard.events == ["subscribed"]
        for i in range(100):
            await client.execute("PUBLISH", f"sub:{i % 3}", f"m{i}")
        await client.execute("PUBLISH", "other:1", "not for us")
        await client.execute("PUBLISH", "sub:bytes", b"\x00\xff\r\n")
        await eventually(lambda: len(heard.messages) == 101)
        nursery.cancel_scope.cancel()
    expected = [(f"sub:{i % 3}".encode(), f"m{i}".encode()) for i in range(100)]
    assert heard.messages == [*expected, (b"sub:bytes", b"\x00\xff\r\n")]


async def test_subscribed_again_after_client_kill(server: RedisServer, client: RedisClient) -> None:
    heard = Heard()
    async with trio.open_nursery() as nursery:
        await nursery.start(subscriber(server.url, heard))
        assert await client.execute("CLIENT", "KILL", "TYPE", "pubsub") == 1
        await eventually(lambda: heard.subscriptions == 2)
        assert heard.events[0] == "subscribed" and heard.events[-1] == "subscribed"
        assert heard.events[1].startswith("lost: ") and len(heard.events) == 3
        await client.execute("PUBLISH", "sub:after", "kill")
        await eventually(lambda: heard.messages == [(b"sub:after", b"kill")])
        nursery.cancel_scope.cancel()


async def test_subscribed_again_after_a_redis_restart(server: RedisServer, tmp_path: Path) -> None:
    heard = Heard()
    async with trio.open_nursery() as nursery:
        await nursery.start(subscriber(server.url, heard))
        server.process.kill()
        server.process.wait()
        await eventually(lambda: any(e.startswith("lost") for e in heard.events))
        await trio.sleep(0.3)  # a few failed attempts, with backoff
        assert heard.subscriptions == 1
        restarted = start_redis(tmp_path, port=server.port)
        try:
            await eventually(lambda: heard.subscriptions == 2, within=5)
            async with open_redis_client(restarted.url) as client:
                await client.execute("PUBLISH", "sub:after", "restart")
                await eventually(lambda: heard.messages == [(b"sub:after", b"restart")])
        finally:
            nursery.cancel_scope.cancel()
            restarted.process.kill()
            restarted.process.wait()


@pytest.mark.parametrize("when", ["subscribed", "mid-outage"])
async def test_cancelling_stops_it_promptly(server: RedisServer, when: str) -> None:
    heard = Heard()
    async with trio.open_nursery() as nursery:
        await nursery.start(subscriber(server.url, heard))
        if when == "mid-outage":
            server.process.kill()
            server.process.wait()
            await trio.sleep(0.5)  # in backoff between failed attempts
            assert heard.events[-1].startswith("lost")
        cancelled_at = trio.current_time()
        nursery.cancel_scope.cancel()
    assert trio.current_time() - cancelled_at < 0.05


async def test_a_silent_subscription_is_lost_by_its_unanswered_ping() -> None:
    async def handle(stream: trio.SocketStream) -> None:
        await stream.receive_some(1024)  # the session's PING
        await stream.send_all(b"+PONG\r\n")
        await stream.receive_some(1024)  # PSUBSCRIBE sub:*
        await stream.send_all(b"*3\r\n$10\r\npsubscribe\r\n$5\r\nsub:*\r\n:1\r\n")
        await trio.sleep_forever()  # and never a word more

    heard = Heard()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        url = f"redis://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        await nursery.start(subscriber(url, heard, ping_interval=0.1, ping_timeout=0.2))
        subscribed_at = trio.current_time()
        await eventually(lambda: len(heard.events) > 1, within=1)
        assert trio.current_time() - subscribed_at < 0.6
        assert "no answer to PING within 0.2 s" in heard.events[1]
        await eventually(lambda: heard.subscriptions == 2)  # and it tries again
        nursery.cancel_scope.cancel()
