"""The bus and the HITL store against a real Redis: a transition is one atomic step,
and what a local subscriber receives when this process announces a message itself.

Loopback only, the session's redis-server; each test is bounded by conftest's
default 60 s.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
import redis
import trio

from aura_trio.bus.redis_bus import RedisBus
from aura_trio.hitl import records as hitl
from aura_trio.hitl.store import Caller, HitlStore

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


def store_of(bus: RedisBus) -> HitlStore:
    return HitlStore(bus, request_ttl=600, session_ttl=600, signal_ttl=60)


def new_request(request_id: str = "req_1", session_id: str = "s1") -> hitl.HitlRequest:
    return hitl.HitlRequest(
        request_id=request_id, session_id=session_id, action_type="git_merge", message="m",
        context={}, status="pending", user_id="alice", tenant_id="t1",
        created_at=1_700_000_000, expires_at=4_000_000_000, args={"strategy": "merge"},
    )  # fmt: skip


async def test_own_decision_reaches_the_local_subscriber_once_and_is_marked(
    bus: RedisBus, raw_redis: redis.Redis
):
    store = store_of(bus)
    await store.open_request(new_request())
    with bus.subscribe("s1") as subscription:
        decided = await store.decide("req_1", Caller("t1", "bob"), "approved")
        assert decided.status == "approved" and decided.decided_by == "bob"
        # Queued before decide returns: the local copy, or Redis's if it came first.
        first = subscription.receive.receive_nowait()
        assert first.announced_here
        assert json.loads(first.payload)["requestId"] == "req_1"
        # Redis's copy comes too (the subscription's PUBLISH); when it came second it
        # is not marked, and the waiter ignores it (its request is decided already).
        with trio.move_on_after(0.5):
            while True:
                again = await subscription.receive.receive()
                assert again.payload == first.payload and not again.announced_here
    stored = json.loads(raw_redis.get("hitl:request:req_1"))
    assert stored["status"] == "approved" and stored["via"] == "api"
    assert raw_redis.get("hitl:signal:s1") == first.payload


async def test_own_message_that_redis_returns_first_is_handed_over_once(bus: RedisBus):
    payload, foreign = b'{"requestId":"req_1","status":"approved"}', b'{"x":1}'
    with bus.subscribe("s1") as subscription:
        with bus.announcing("s1", payload) as announce:
            bus._on_message(b"hitl:channel:s1", foreign)  # someone else's: as it is
            bus._on_message(b"hitl:channel:s1", payload)  # ours, before the step returned
            announce()  # the step returned: already handed over, nothing more
        with bus.announcing("s1", b'{"later":1}'):
            pass  # a step that failed: nothing handed over
        messages = []
        while True:
            try:
                messages.append(subscription.receive.receive_nowait())
            except trio.WouldBlock:
                break
    assert [(m.payload, m.announced_here) for m in messages] == [
        (foreign, False),
        (payload, True),
    ]
    assert not bus._announcing


async def test_a_settle_follows_the_decision_stored_first(bus: RedisBus, raw_redis: redis.Redis):
    store = store_of(bus)
    await store.open_request(new_request())
    await store.decide("req_1", Caller("t1", "bob"), "rejected", reason="no")
    settled = await store.settle("req_1", "timeout", via="timeout")
    assert settled is not None and settled.status == "rejected" and settled.reason == "no"
    assert await store.settle("req_missing", "cancelled", via="disconnect") is None
    assert json.loads(raw_redis.get("hitl:request:req_1"))["status"] == "rejected"


async def test_a_transition_loses_to_a_writer_that_got_in_between(
    bus: RedisBus, raw_redis: redis.Redis
):
    store = store_of(bus)
    await store.open_request(new_request())
    raw = raw_redis.get("hitl:request:req_1")
    # Someone else moves the request on between our read and our compare-and-set.
    moved = json.loads(raw)
    moved["status"] = "cancelled"
    raw_redis.set("hitl:request:req_1", json.dumps(moved), keepttl=True)
    settled = await store.settle("req_1", "timeout", via="timeout")
    assert settled is not None and settled.status == "cancelled"
    assert 0 < raw_redis.ttl("hitl:request:req_1") <= 600


async def test_a_stopped_bus_leaves_no_connection_open(redis_server, raw_redis: redis.Redis):
    def ours() -> int:
        return sum(1 for c in raw_redis.client_list() if c["name"] == "bus-under-test")

    url = (
        redis_server.url + ("&" if "?" in redis_server.url else "?") + "client_name=bus-under-test"
    )
    bus = RedisBus(url, channel_prefix=hitl.CHANNEL_PREFIX, stored_prefix=hitl.SIGNAL_PREFIX)
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.run)
        async with trio.open_nursery() as commands:
            for n in range(8):
                commands.start_soon(bus.commands.execute, "GET", f"k{n}")
        assert ours() == 3  # the subscriber and the two command connections
        nursery.cancel_scope.cancel()
    await eventually(lambda: not ours(), within=5, step=0.05)


async def test_a_signal_stored_just_after_the_resubscription_re_read_is_found(
    redis_server, raw_redis: redis.Redis
):
    """Regression: the Java side publishes, then stores. A signal published while the
    subscription was down and stored just after the re-read that follows the new
    subscription was in neither; with the safety-net poll far off, its session
    waited until its timeout (seen once in the Redis-restart fault test)."""
    bus = RedisBus(
        redis_server.url,
        channel_prefix=hitl.CHANNEL_PREFIX,
        stored_prefix=hitl.SIGNAL_PREFIX,
        poll_interval=600,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.run)
        with bus.subscribe("marker") as marker, bus.subscribe("late") as late:
            marker.watched = late.watched = True
            raw_redis.set("hitl:signal:marker", b"m")
            before = bus.subscribed_count
            raw_redis.client_kill_filter(_type="pubsub")
            # The marker's stored signal comes with the re-read of the new subscription.
            with trio.fail_after(5):
                assert (await marker.receive.receive()).payload == b"m"
            assert bus.subscribed_count > before
            raw_redis.set("hitl:signal:late", b"l")  # its PUBLISH went to nobody
            with trio.fail_after(3):
                assert (await late.receive.receive()).payload == b"l"
        nursery.cancel_scope.cancel()


async def test_own_decision_decides_the_waiting_session_before_decide_returns(bus: RedisBus):
    """A decision announced here needs no Redis, so the waiter applies it in the
    delivering task: decided when `decide` returns, its task never woken for it.
    A foreign signal (the Java side's) still goes to the waiter's task, to be settled."""
    from aura_trio.hitl.waiter import SignalWaiter

    store = store_of(bus)
    await store.open_request(new_request())
    with bus.subscribe("s1") as subscription:
        waiter = SignalWaiter(subscription, store)  # its run() is not started
        waiter.expect("req_1")
        await store.decide("req_1", Caller("t1", "bob"), "approved")
        assert waiter.abandon() is None  # decided: nothing left awaited
        with pytest.raises(trio.WouldBlock):
            subscription.receive.receive_nowait()

        await store.open_request(new_request("req_2"))
        waiter.expect("req_2")
        foreign = hitl.signal_payload("req_2", "rejected", reason="no", user_id="carol")
        subscription.deliver(foreign)  # as the subscriber hands a published one over
        assert subscription.receive.receive_nowait().payload == foreign
        assert waiter.abandon() == "req_2"  # still awaited: settled by run(), not here
