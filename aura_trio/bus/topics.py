"""Local subscribers of topics: the one subscription's messages, fanned out.

The shape of broadcaster's backends: one listener (the process's subscriber) hands
each message to the local subscription of its topic. Messages published while that
listener is down are lost by Redis, so every *watched* subscription's stored value
can be re-read and delivered like a message (:meth:`Topics.watched`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import trio

from ..channel import Channel

_INBOX_SIZE = 16


@dataclass(frozen=True, slots=True)
class Message:
    """A message for a topic.

    `announced_here`: this process stored and published it itself, in the same
    atomic step that changed what it reports; its published copy arrives as well.
    """

    payload: bytes
    announced_here: bool = False
    # Trio time it reached this process's inbox: how long it then waited for its
    # session's task is the process's own scheduling lag.
    received_at: float = 0.0
    # What the subscription's `handle_at_once` made of the payload, for the receiver.
    parsed: object = None


class Subscription:
    """Messages for one topic, received by one local task (a bounded inbox).

    `watched` subscriptions have their stored value re-read on every resync; the
    value arrives through :attr:`receive` like a published message.

    `handle_at_once`, when set, sees each message first, in the delivering task: a
    message it handles (returns None) never reaches the inbox, so the receiving task
    is not woken for it (one scheduler pass less between a message and its effect).
    Else it returns the message to queue, maybe with what it parsed of it. It must
    not block.
    """

    def __init__(self, topics: Topics, topic: str) -> None:
        self.topic = topic
        self.watched = False
        self.dropped = 0
        self.handle_at_once: Callable[[Message], Message | None] | None = None
        self._topics = topics
        self.receive = Channel[Message](_INBOX_SIZE)

    def deliver(self, payload: bytes, *, announced_here: bool = False) -> None:
        message = Message(payload, announced_here, trio.current_time())
        if self.handle_at_once is not None:
            to_queue = self.handle_at_once(message)
            if to_queue is None:
                return
            message = to_queue
        try:
            self.receive.send_nowait(message)
        except trio.WouldBlock:
            # The stored copy is re-read on the next resync, so nothing is lost for good.
            self.dropped += 1
        except trio.ClosedResourceError:
            pass

    def close(self) -> None:
        self.handle_at_once = None  # a receiver's bound method: a cycle through it
        self._topics._unregister(self)
        self.receive.close()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Topics:
    """The local subscriptions of one process, by topic."""

    def __init__(self) -> None:
        self._subscriptions: dict[str, Subscription] = {}

    def subscribe(self, topic: str) -> Subscription:
        """Register the local receiver of `topic`; use as a context manager."""
        if topic in self._subscriptions:
            raise ValueError(f"{topic!r} already has a subscriber in this process")
        subscription = Subscription(self, topic)
        self._subscriptions[topic] = subscription
        return subscription

    def deliver(self, topic: str, payload: bytes, *, announced_here: bool = False) -> None:
        """Hand `payload` to the local subscriber of `topic`, if there is one."""
        subscription = self._subscriptions.get(topic)
        if subscription is not None:
            subscription.deliver(payload, announced_here=announced_here)

    def watched(self) -> list[Subscription]:
        return [s for s in self._subscriptions.values() if s.watched]

    def is_current(self, subscription: Subscription) -> bool:
        return self._subscriptions.get(subscription.topic) is subscription

    def __contains__(self, topic: object) -> bool:
        return topic in self._subscriptions

    def __len__(self) -> int:
        return len(self._subscriptions)

    def _unregister(self, subscription: Subscription) -> None:
        if self.is_current(subscription):
            del self._subscriptions[subscription.topic]
