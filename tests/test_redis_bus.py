"""The bus against a real Redis: what a local subscriber receives, and when.

Loopback only, the session's redis-server, a `trio.fail_after` bound per test.
"""

from __future__ import annotations

import redis
import trio

from aura_trio import hitl
from aura_trio.redis_bus import Message, RedisBus


async def test_own_announcement_reaches_the_local_subscriber_at_once_and_is_marked(
    redis_server, raw_redis: redis.Redis
):
    bus = RedisBus(
        redis_server.url, channel_prefix=hitl.CHANNEL_PREFIX, stored_prefix=hitl.SIGNAL_PREFIX
    )
    raw_redis.set("hitl:request:r1", b"pending")
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.run)
        with bus.subscribe("s1") as subscription:
            swapped = await bus.compare_and_set(
                "hitl:request:r1", b"pending", b"approved", announce=("s1", b"signal", 60)
            )
            assert swapped
            # Already queued when the call returns (the published copy, which
            # travels through the subscriber thread, may or may not be there yet).
            queued = []
            while True:
                try:
                    queued.append(subscription.receive.receive_nowait())
                except trio.WouldBlock:
                    break
            assert Message(b"signal", announced_here=True) in queued
            if Message(b"signal") not in queued:
                with trio.fail_after(5):
                    assert await subscription.receive.receive() == Message(b"signal")
            assert raw_redis.get("hitl:signal:s1") == b"signal"
            assert raw_redis.get("hitl:request:r1") == b"approved"

            lost = await bus.compare_and_set(
                "hitl:request:r1", b"pending", b"rejected", announce=("s1", b"late", 60)
            )
            assert not lost
            with trio.move_on_after(0.3):
                message = await subscription.receive.receive()
                raise AssertionError(f"a swap that did not happen announced {message}")
        nursery.cancel_scope.cancel()
