"""Redis for one process: a command client on a fixed few connections, and the one
pattern subscription, fanned out to local subscribers by topic.

Messages published while the subscription is down are lost by Redis, so every
watched subscription's stored value is re-read in one batch whenever the
subscription is (re-)established, and again every `poll_interval` as a safety net.
A re-read that fails (the command connections still on their way to a new
primary after a failover) is tried again soon, with backoff, not at the next poll.
A message this process publishes itself reaches its local subscriber once, marked
as announced here (:meth:`RedisBus.announcing`): at once when the publishing step
returns, or earlier if Redis sends its copy back first; the other copy is dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import trio

from ..errors import StoreUnavailable
from .address import AddressLike
from .client import RedisClient, open_redis_client
from .dial import Backoff
from .replicated import Replicated
from .subscriber import serve_subscriber
from .topics import Subscription, Topics

log = logging.getLogger(__name__)

_MGET_BATCH = 500
# After a (re)subscription's re-read, one more this much later.
_FOLLOW_UP_SECONDS = 1.0


class RedisBus:
    """Redis commands from Trio, plus the process's one pattern subscription.

    Args:
        address: a URL (`redis://`, `rediss://`, `unix://`) or a locator.
        channel_prefix: published channels are `channel_prefix + topic`.
        stored_prefix: the last message of a topic is stored at `stored_prefix + topic`.
        connections: the fixed number of command connections.
        timeout: the bound of every command.
        min_replicas: how many replicas a :attr:`durable` write must reach (`WAIT`,
            bounded by half the `timeout`); 0: none, no `WAIT`.
    """

    def __init__(
        self,
        address: AddressLike,
        *,
        channel_prefix: str,
        stored_prefix: str,
        connections: int = 2,
        timeout: float = 3.0,
        poll_interval: float = 5.0,
        on_subscribed: Callable[[], object] | None = None,
        min_replicas: int = 0,
    ) -> None:
        self._address = address
        self.min_replicas = min_replicas
        self._durable: Replicated | None = None
        self._channel_prefix = channel_prefix.encode()
        self._stored_prefix = stored_prefix
        self._connections = connections
        self._timeout = timeout
        self._poll_interval = poll_interval
        self._on_subscribed_hook = on_subscribed
        self._client: RedisClient | None = None
        self._topics = Topics()
        # Messages this process is publishing itself, by topic (see `announcing`).
        self._announcing: dict[str, bytes] = {}
        self._resync_wanted = trio.Event()
        self.subscribed = False
        self.subscribed_count = 0
        self._subscriber_error: str | None = None

    @property
    def commands(self) -> RedisClient:
        """The command client (`execute`, `transaction`, `run_script`)."""
        if self._client is None:
            raise StoreUnavailable("the Redis bus is not running")
        return self._client

    @property
    def durable(self) -> Replicated:
        """Writes confirmed on `min_replicas` replicas (`transaction`, `run_script`)."""
        if self._durable is None:
            raise StoreUnavailable("the Redis bus is not running")
        return self._durable

    @property
    def connected(self) -> bool:
        """Subscribed, and at least one command connection is open."""
        return self.subscribed and self._client is not None and self._client.connected

    @property
    def last_error(self) -> str | None:
        if self._client is not None and self._client.last_error is not None:
            return self._client.last_error
        return self._subscriber_error

    # --- subscriptions --------------------------------------------------------

    def subscribe(self, topic: str) -> Subscription:
        """Register the local receiver of `topic`; use as a context manager."""
        return self._topics.subscribe(topic)

    @contextmanager
    def announcing(self, topic: str, payload: bytes) -> Iterator[Callable[[], None]]:
        """Around a step that stores and publishes `payload` on `topic` atomically.

        Call the function it yields once the step succeeded: the local subscriber
        then gets the message at once, marked `announced_here`, unless Redis's copy
        came back first (then that copy was marked and handed over instead). Either
        way it is handed over once: the copy that comes second is dropped, where
        the subscriber used to get both and read the request again for the second.
        """
        self._announcing[topic] = payload
        try:
            yield lambda: self._announce(topic, payload)
        finally:
            if self._announcing.get(topic) is payload:
                del self._announcing[topic]

    def _announce(self, topic: str, payload: bytes) -> None:
        # Else Redis's copy came first, and was handed over as announced here.
        if self._announcing.get(topic) is payload:
            del self._announcing[topic]
            self._topics.deliver(topic, payload, announced_here=True)

    def subscribed_here(self, topic: str) -> bool:
        """Whether a task of this process receives `topic`."""
        return topic in self._topics

    @property
    def subscription_count(self) -> int:
        return len(self._topics)

    def request_resync(self) -> None:
        """Re-read the stored value of every watched subscription soon."""
        self._resync_wanted.set()

    # --- running --------------------------------------------------------------

    async def run(
        self,
        *,
        startup_wait: float = 2.0,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Keep the connections and the subscription up, until cancelled.

        `started()` is called once subscribed, or after `startup_wait` seconds even
        if Redis cannot be reached: a process whose Redis is down still serves its
        health routes, and :attr:`connected` tells.
        """
        async with open_redis_client(
            self._address, connections=self._connections, timeout=self._timeout
        ) as client:
            self._client = client
            self._durable = Replicated(
                client, replicas=self.min_replicas, wait_timeout=self._timeout / 2
            )
            try:
                async with trio.open_nursery() as nursery:
                    first = trio.Event()
                    nursery.start_soon(self._subscribe, first)
                    nursery.start_soon(self._resync_loop)
                    with trio.move_on_after(startup_wait):
                        await first.wait()
                    task_status.started()
            finally:
                self._client = None
                self._durable = None
                self.subscribed = False

    async def _subscribe(self, first: trio.Event) -> None:
        def subscribed() -> None:
            self.subscribed = True
            self._subscriber_error = None
            self.subscribed_count += 1
            first.set()
            if self._on_subscribed_hook is not None:
                self._on_subscribed_hook()
            log.info("subscribed to Redis signals (subscription #%d)", self.subscribed_count)
            self.request_resync()

        def lost(error: str) -> None:
            if self.subscribed:
                log.warning("Redis subscription lost: %s", error)
            self.subscribed = False
            self._subscriber_error = error

        await serve_subscriber(
            self._address,
            self._channel_prefix + b"*",
            on_message=self._on_message,
            on_subscribed=subscribed,
            on_lost=lost,
            connect_timeout=self._timeout,
        )

    def _on_message(self, channel: bytes, payload: bytes) -> None:
        topic = channel[len(self._channel_prefix) :].decode("utf-8", "replace")
        if self._announcing.get(topic) == payload:
            # Our own message, back before the step that published it returned.
            del self._announcing[topic]
            self._topics.deliver(topic, payload, announced_here=True)
            return
        self._topics.deliver(topic, payload)

    async def _resync_loop(self) -> None:
        backoff = Backoff()
        retry = False
        follow_up = False
        while True:
            if retry:
                wait = backoff.next()
            else:
                wait = _FOLLOW_UP_SECONDS if follow_up else self._poll_interval
            with trio.move_on_after(wait):
                await self._resync_wanted.wait()
            asked = self._resync_wanted.is_set()
            self._resync_wanted = trio.Event()
            try:
                await self._resync()
            except StoreUnavailable as error:
                log.warning("resync of stored signals failed: %s", error)
                retry = self.subscribed  # else it comes with the next subscription
            else:
                retry = False
                backoff.reset()
                # The Java side publishes, then stores: a signal published just before
                # the subscription and stored just after the re-read is in neither.
                # One more re-read shortly after a (re)subscription finds it.
                follow_up = asked

    async def _resync(self) -> None:
        watched = self._topics.watched()
        for start in range(0, len(watched), _MGET_BATCH):
            batch = watched[start : start + _MGET_BATCH]
            keys = [self._stored_prefix + s.topic for s in batch]
            values = await self.commands.execute("MGET", *keys)
            for subscription, value in zip(batch, values, strict=True):
                if value is not None and self._topics.is_current(subscription):
                    subscription.deliver(value)
