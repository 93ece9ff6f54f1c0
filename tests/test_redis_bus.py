"""The bus against a real Redis: read-modify-swap in one step, and what a local
subscriber receives when this process announces a message itself.

Loopback only, the session's redis-server; each test is bounded by conftest's
default 60 s.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis
import trio

from aura_trio.bus.redis_bus import Message, RedisBus, Swap
from aura_trio.hitl import records as hitl

from .helpers import eventually


@pytest.fixture
async def bus(redis_server, raw_redis: redis.Redis) -> AsyncIterator[RedisBus]:
    bus = RedisBus(
        redis_server.url, channel_prefix=hitl.CHANNEL_PREFIX, stored_prefix=hitl.SIGNAL_PREFIX
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.run)
        yield bus
        nursery.cancel_scope.cancel()


def queued(subscription) -> list[Message]:
    messages = []
    while True:
        try:
            messages.append(subscription.receive.receive_nowait())
        except trio.WouldBlock:
            return messages


async def test_own_announcement_reaches_the_local_subscriber_at_once_and_is_marked(
    bus: RedisBus, raw_redis: redis.Redis
):
    raw_redis.set("k", b"pending")
    with bus.subscribe("s1") as subscription:
        result = await bus.update(
            "k", lambda raw: Swap(b"approved", result=raw, announce=("s1", b"signal", 60)),
            attempts=3,
        )  # fmt: skip
        assert result == b"pending"
        # Already queued when the call returns (the published copy, which travels
        # through the subscriber thread, may or may not be there yet).
        messages = queued(subscription)
        assert Message(b"signal", announced_here=True) in messages
        if Message(b"signal") not in messages:
            with trio.fail_after(5):
                assert await subscription.receive.receive() == Message(b"signal")
        assert raw_redis.get("k") == b"approved"
        assert raw_redis.get("hitl:signal:s1") == b"signal"


async def test_a_swap_retries_when_the_value_changed_under_it(
    bus: RedisBus, raw_redis: redis.Redis
):
    raw_redis.set("k", b"1", ex=100)
    seen: list[bytes | None] = []

    def increment(raw: bytes | None) -> Swap:
        seen.append(raw)
        if len(seen) == 1:
            raw_redis.set("k", b"5", keepttl=True)  # another writer gets in between
        assert raw is not None
        return Swap(str(int(raw) + 1).encode(), result=len(seen))

    with bus.subscribe("s2") as subscription:
        assert await bus.update("k", increment, attempts=3) == 2
        assert queued(subscription) == []  # nothing announced
    assert seen == [b"1", b"5"]
    assert raw_redis.get("k") == b"6"
    assert 0 < raw_redis.ttl("k") <= 100


async def test_keeping_the_value_writes_and_announces_nothing(
    bus: RedisBus, raw_redis: redis.Redis
):
    raw_redis.set("k", b"rejected")
    with bus.subscribe("s3") as subscription:
        assert await bus.update("k", lambda raw: Swap(None, result=raw), attempts=3) == b"rejected"
        assert await bus.update("missing", lambda raw: Swap(None, result=raw), attempts=3) is None
        with trio.move_on_after(0.3):
            message = await subscription.receive.receive()
            raise AssertionError(f"a kept value announced {message}")
    assert raw_redis.get("k") == b"rejected"


async def test_a_stopped_bus_leaves_no_connection_open(redis_server, raw_redis: redis.Redis):
    def ours() -> int:
        return sum(1 for c in raw_redis.client_list() if c["name"] == "bus-under-test")

    url = (
        redis_server.url + ("&" if "?" in redis_server.url else "?") + "client_name=bus-under-test"
    )
    bus = RedisBus(url, channel_prefix=hitl.CHANNEL_PREFIX, stored_prefix=hitl.SIGNAL_PREFIX)
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.run)
        async with trio.open_nursery() as commands:  # several at once: several pool connections
            for n in range(8):
                commands.start_soon(bus.get, f"k{n}")
        assert ours() >= 2  # the subscriber and at least one pooled connection
        nursery.cancel_scope.cancel()
    await eventually(lambda: not ours(), within=5, step=0.05)
