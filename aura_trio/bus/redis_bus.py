"""The process's one door to Redis: the only module that imports `redis`.

redis-py has no Trio support, so its sync client runs in worker threads under a
limiter of our own, sized to its connection pool: the number of Redis connections
is fixed, whatever the number of sessions. One subscriber thread per process holds
a single `PSUBSCRIBE` and hands each message to the local subscription of its topic.

Messages published while that subscription is down are lost by Redis, so every
watched subscription's stored value is re-read in one batch whenever the
subscription is (re-)established, and again every `poll_interval` as a safety net.

A message this process announces itself (in a successful :meth:`RedisBus.update`)
is also handed to the local subscriber at once, marked `announced_here`: it does
not wait for Redis to send it back through the subscriber thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import redis
import trio
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..errors import StoreUnavailable

log = logging.getLogger(__name__)

# KEYS[1] value must still equal ARGV[1]; it becomes ARGV[2] (TTL kept). With a
# second key, ARGV[3] is also stored there (EX ARGV[4]) and published on ARGV[5].
_COMPARE_AND_SET = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
if #KEYS > 1 then
  redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[4])
  redis.call('PUBLISH', ARGV[5], ARGV[3])
end
return 1
"""

_MGET_BATCH = 500
_INBOX_SIZE = 16
# How long the subscriber thread blocks in one read: bounds how fast it notices a stop.
_POLL_SECONDS = 0.1


@dataclass(frozen=True, slots=True)
class Message:
    """A message for a topic.

    `announced_here`: this process's own :meth:`RedisBus.update` stored and published
    it, in the same atomic step that changed the key; what it reports is therefore
    already stored. Its published copy arrives as well.
    """

    payload: bytes
    announced_here: bool = False


@dataclass(frozen=True, slots=True)
class Swap:
    """What :meth:`RedisBus.update` does with the value it read.

    `new`: the value to put instead (None: leave it as it is). `announce`:
    `(topic, message, ttl)` to store for the topic and publish, in the same atomic
    step. `result`: what `update` returns when this swap is the one that applies.
    """

    new: bytes | None
    result: Any = None
    announce: tuple[str, bytes, int] | None = None


class Subscription:
    """Messages for one topic, received by one local task.

    `watched` subscriptions have their stored value re-read on every resync; the
    value arrives through :attr:`receive` like a published message.
    """

    def __init__(self, bus: RedisBus, topic: str) -> None:
        self.topic = topic
        self.watched = False
        self.dropped = 0
        self._bus = bus
        self._send, self.receive = trio.open_memory_channel[Message](_INBOX_SIZE)

    def deliver(self, payload: bytes, *, announced_here: bool = False) -> None:
        try:
            self._send.send_nowait(Message(payload, announced_here))
        except trio.WouldBlock:
            # The stored copy is re-read on the next resync, so nothing is lost for good.
            self.dropped += 1
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    def close(self) -> None:
        self._bus._unregister(self)
        self._send.close()
        self.receive.close()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class RedisBus:
    """Redis commands from Trio, plus the process's one pattern subscription.

    Args:
        url: a redis-py URL (`redis://`, `rediss://`, `unix://`).
        channel_prefix: published channels are `channel_prefix + topic`.
        stored_prefix: the last message of a topic is stored at `stored_prefix + topic`.
    """

    def __init__(
        self,
        url: str,
        *,
        channel_prefix: str,
        stored_prefix: str,
        max_connections: int = 16,
        timeout: float = 3.0,
        poll_interval: float = 5.0,
        on_subscribed: Callable[[], object] | None = None,
        on_lag: Callable[[float], object] | None = None,
    ) -> None:
        self._channel_prefix = channel_prefix.encode()
        self._stored_prefix = stored_prefix
        self._poll_interval = poll_interval
        self._on_subscribed_hook = on_subscribed
        self._on_lag = on_lag
        common: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": min(timeout, 2.0),
            "protocol": 2,
        }
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout,
            retry=Retry(NoBackoff(), 1),
            **common,
        )
        self._client = redis.Redis(connection_pool=pool)
        self._compare_and_set = self._client.register_script(_COMPARE_AND_SET)
        self._subscriber = redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), **common)
        self._limiter = trio.CapacityLimiter(max_connections)
        self._subscriptions: dict[str, Subscription] = {}
        self._resync_wanted = trio.Event()
        self._first_subscription = trio.Event()
        self.connected = False
        self.subscribed_count = 0
        self.last_error: str | None = None

    # --- commands -------------------------------------------------------------

    async def _call(self, fn: Callable[..., Any], *args: Any, abandon: bool = False) -> Any:
        def guarded() -> Any:
            try:
                return fn(*args)
            except redis.RedisError as error:
                raise StoreUnavailable(f"redis: {error}") from None

        return await trio.to_thread.run_sync(
            guarded, limiter=self._limiter, abandon_on_cancel=abandon
        )

    async def ping(self) -> None:
        await self._call(self._client.ping, abandon=True)

    async def get(self, key: str) -> bytes | None:
        value: bytes | None = await self._call(self._client.get, key, abandon=True)
        return value

    async def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        values: list[bytes | None] = await self._call(self._client.mget, list(keys), abandon=True)
        return values

    async def set_many(
        self,
        items: Sequence[tuple[str, bytes, int]],
        *,
        add_to: tuple[str, str, int] | None = None,
    ) -> None:
        """SET each `(key, value, ttl seconds)` in one MULTI/EXEC.

        With `add_to=(set key, member, ttl)` the member joins that set in the same
        step, and the set's TTL is renewed.
        """

        def run() -> None:
            with self._client.pipeline(transaction=True) as pipe:
                for key, value, ttl in items:
                    pipe.set(key, value, ex=ttl)
                if add_to is not None:
                    set_key, member, ttl = add_to
                    pipe.sadd(set_key, member)
                    pipe.expire(set_key, ttl)
                pipe.execute()

        await self._call(run)

    async def set(self, key: str, value: bytes, ttl: int) -> None:
        await self._call(partial(self._client.set, key, value, ex=ttl))

    async def delete(self, *keys: str) -> None:
        await self._call(self._client.delete, *keys)

    async def exists(self, key: str) -> bool:
        return bool(await self._call(self._client.exists, key, abandon=True))

    async def add_member(self, set_key: str, member: str) -> None:
        await self._call(self._client.sadd, set_key, member)

    async def remove_members(self, set_key: str, members: Sequence[str]) -> None:
        if members:
            await self._call(self._client.srem, set_key, *members)

    async def members(self, set_key: str) -> list[str]:
        raw = await self._call(self._client.smembers, set_key, abandon=True)
        return sorted(m.decode("utf-8", "replace") for m in raw)

    async def update(
        self, key: str, change: Callable[[bytes | None], Swap], *, attempts: int
    ) -> Any:
        """Read `key`, let `change` decide, and compare-and-set: in one worker-thread job.

        `change` gets the value (None when the key is missing) and returns a
        :class:`Swap`; it runs in that thread, so it must be pure (no Trio, no I/O),
        and what it raises propagates. The new value replaces the read one only if
        it is still there (TTL kept), with the swap's announcement in the same
        atomic step; otherwise it is read again, up to `attempts` times. A local
        subscriber of an announced topic gets the message at once (`announced_here`).
        Returns the result of the swap that applied.

        Raises:
            StoreUnavailable: Redis failed, or the value kept changing.
        """

        def run() -> Swap:
            for _ in range(attempts):
                raw: bytes | None = self._client.get(key)  # type: ignore[assignment]
                swap = change(raw)
                if swap.new is None:
                    return swap
                if raw is None:
                    raise ValueError(f"cannot swap the value of a missing key {key!r}")
                keys: list[str] = [key]
                args: list[Any] = [raw, swap.new]
                if swap.announce is not None:
                    topic, message, ttl = swap.announce
                    keys.append(self._stored_prefix + topic)
                    args += [message, ttl, self._channel_prefix + topic.encode()]
                if self._compare_and_set(keys=keys, args=args):
                    return swap
            raise StoreUnavailable(f"{key} kept changing; try again")

        # One job, not a GET and a compare-and-set apart: each hand-off to a worker
        # thread and back waits behind the busy Trio loop (p99 several ms).
        swap: Swap = await self._call(run)
        if swap.announce is not None:
            # Waiting for Redis to send it back costs a trip through the
            # subscriber thread, milliseconds when the loop is busy.
            subscription = self._subscriptions.get(swap.announce[0])
            if subscription is not None:
                subscription.deliver(swap.announce[1], announced_here=True)
        return swap.result

    async def publish_stored(self, topic: str, message: bytes, ttl: int) -> None:
        """PUBLISH then SET with a TTL, non-atomically: what the Java side does."""

        def run() -> None:
            self._client.publish(self._channel_prefix + topic.encode(), message)
            self._client.set(self._stored_prefix + topic, message, ex=ttl)

        await self._call(run)

    # --- subscriptions --------------------------------------------------------

    def subscribe(self, topic: str) -> Subscription:
        """Register the local receiver of `topic`; use as a context manager."""
        if topic in self._subscriptions:
            raise ValueError(f"{topic!r} already has a subscriber in this process")
        subscription = Subscription(self, topic)
        self._subscriptions[topic] = subscription
        return subscription

    def _unregister(self, subscription: Subscription) -> None:
        if self._subscriptions.get(subscription.topic) is subscription:
            del self._subscriptions[subscription.topic]

    @property
    def subscription_count(self) -> int:
        return len(self._subscriptions)

    def request_resync(self) -> None:
        """Re-read the stored value of every watched subscription soon."""
        self._resync_wanted.set()

    async def run(
        self,
        *,
        startup_wait: float = 2.0,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run the subscriber thread and the resync loop until cancelled.

        `started()` is called once subscribed, or after `startup_wait` seconds even
        if Redis cannot be reached: a process whose Redis is down still serves its
        health routes, and :attr:`connected` tells.
        """
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._listen_in_thread)
                nursery.start_soon(self._resync_loop)
                with trio.move_on_after(startup_wait):
                    await self._first_subscription.wait()
                task_status.started()
        finally:
            # Redis.close() leaves a pool it was given open.
            self._client.connection_pool.disconnect()
            self._subscriber.close()

    async def _resync_loop(self) -> None:
        while True:
            with trio.move_on_after(self._poll_interval):
                await self._resync_wanted.wait()
            self._resync_wanted = trio.Event()
            try:
                await self._resync()
            except StoreUnavailable as error:
                log.warning("resync of stored signals failed: %s", error)

    async def _resync(self) -> None:
        watched = [s for s in self._subscriptions.values() if s.watched]
        for start in range(0, len(watched), _MGET_BATCH):
            batch = watched[start : start + _MGET_BATCH]
            values = await self.mget([self._stored_prefix + s.topic for s in batch])
            for subscription, value in zip(batch, values, strict=True):
                if (
                    value is not None
                    and self._subscriptions.get(subscription.topic) is subscription
                ):
                    subscription.deliver(value)

    async def _listen_in_thread(self) -> None:
        await trio.to_thread.run_sync(
            self._listen, limiter=trio.CapacityLimiter(1), abandon_on_cancel=False
        )

    def _listen(self) -> None:
        """The subscriber thread: returns when its Trio task is cancelled."""
        pattern = self._channel_prefix + b"*"
        pubsub = None
        failures = 0
        try:
            while True:
                trio.from_thread.check_cancelled()
                try:
                    if pubsub is None:
                        pubsub = self._subscriber.pubsub(ignore_subscribe_messages=False)  # type: ignore[no-untyped-call]
                        pubsub.psubscribe(pattern)
                    message = pubsub.get_message(timeout=_POLL_SECONDS)
                except (redis.RedisError, OSError) as error:
                    if pubsub is not None and not pubsub.patterns:
                        pubsub.close()
                        pubsub = None
                    failures += 1
                    trio.from_thread.run_sync(self._on_lost, str(error))
                    _sleep_checking_cancel(min(2.0, 0.05 * 2**failures))
                    continue
                if message is None:
                    continue
                if message["type"] == "psubscribe":
                    failures = 0
                    trio.from_thread.run_sync(self._on_subscribed)
                elif message["type"] == "pmessage":
                    trio.from_thread.run_sync(
                        self._on_message, message["channel"], message["data"], time.monotonic()
                    )
        finally:
            if pubsub is not None:
                pubsub.close()

    def _on_subscribed(self) -> None:
        self.connected = True
        self.last_error = None
        self.subscribed_count += 1
        self._first_subscription.set()
        if self._on_subscribed_hook is not None:
            self._on_subscribed_hook()
        log.info("subscribed to Redis signals (subscription #%d)", self.subscribed_count)
        self.request_resync()

    def _on_lost(self, error: str) -> None:
        if self.connected:
            log.warning("Redis subscription lost: %s", error)
        self.connected = False
        self.last_error = error

    def _on_message(self, channel: bytes, payload: bytes, read_at: float) -> None:
        topic = channel[len(self._channel_prefix) :].decode("utf-8", "replace")
        subscription = self._subscriptions.get(topic)
        if subscription is not None:
            subscription.deliver(payload)
        if self._on_lag is not None:
            self._on_lag(time.monotonic() - read_at)


def _sleep_checking_cancel(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 0.1))
        trio.from_thread.check_cancelled()
