"""A session's signal-waiter: turns the session's signals into the outcome of its request."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from ..bus.dial import Backoff
from ..bus.topics import Message, Subscription
from ..errors import StoreUnavailable
from ..one_task_slot import OneTaskSlot
from . import records as hitl
from .store import HitlStore

log = logging.getLogger(__name__)

# How long a signal's decision is retried into Redis before the session follows the
# signal unrecorded.
SETTLE_RETRY_SECONDS = 5.0
_LONGEST_RETRY_DELAY = 0.5


@dataclass(frozen=True, slots=True)
class Approved:
    request_id: str
    # The arguments approved: the proposed ones, or a person's edit of them.
    args: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Rejected:
    request_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class TimedOut:
    request_id: str


Outcome = Approved | Rejected | TimedOut


class _Awaited(OneTaskSlot):
    """The one request a decision is awaited for; its outcome is set once, and wakes
    the one task waiting for it."""

    __slots__ = ("outcome", "request_id")

    def __init__(self, request_id: str) -> None:
        super().__init__()
        self.request_id = request_id
        self.outcome: Approved | Rejected | None = None

    def set(self, outcome: Approved | Rejected) -> None:
        if self.outcome is None:
            self.outcome = outcome
            self._wake()

    async def wait(self) -> None:
        """Until the outcome is set (a checkpoint if it is already)."""
        if self.outcome is not None:
            await trio.lowlevel.checkpoint()
            return
        await self._park()


class SignalWaiter:
    """Receives every signal for one session and decides the request it waits for.

    Signals for any other request id (an earlier request's stored signal, a replay),
    for a request already decided, and malformed ones are ignored. Before a
    decision is acted on it is settled in Redis: when another decision was stored
    first, the stored one wins. A decision this process announced itself was
    stored in the same atomic step as the pending → decided transition, so it is
    applied as it is.

    Args:
        subscription: the session's subscription, registered before any request exists.
        on_lag: called with how long each message waited in the inbox for this task.
    """

    def __init__(
        self,
        subscription: Subscription,
        store: HitlStore,
        *,
        on_lag: Callable[[float], object] | None = None,
    ) -> None:
        self._subscription = subscription
        self._store = store
        self._on_lag = on_lag
        self._awaited: _Awaited | None = None
        subscription.handle_at_once = self._handle_at_once

    def expect(self, request_id: str) -> None:
        """Count signals for `request_id` from now on: call before the request is stored."""
        self._awaited = _Awaited(request_id)
        self._subscription.watched = True

    async def decision(self, request_id: str, *, deadline: float) -> Outcome:
        """Wait for the decision on `request_id` (announced by :meth:`expect`).

        At `deadline` (Trio time) the request is settled as `timeout` in Redis,
        unless a decision was stored just before: that decision is returned, not lost.
        """
        awaited = self._awaited
        assert awaited is not None and awaited.request_id == request_id, "expect() it first"
        with trio.move_on_at(deadline):
            await awaited.wait()
        self._stop_waiting()
        if awaited.outcome is not None:
            return awaited.outcome
        try:
            stored = await self._store.settle(request_id, hitl.TIMEOUT, via="timeout")
        except StoreUnavailable as error:
            log.warning("could not mark a HITL request timed out: %s", error)
            stored = None
        if stored is not None and stored.status in (hitl.APPROVED, hitl.REJECTED):
            # A decision was stored just before the deadline: it is not lost.
            return _outcome_of(stored)
        return TimedOut(request_id)

    def abandon(self) -> str | None:
        """Stop waiting; returns the request id still awaited, if any (the session ends)."""
        awaited = self._awaited
        self._stop_waiting()
        return None if awaited is None or awaited.outcome is not None else awaited.request_id

    def _stop_waiting(self) -> None:
        self._awaited = None
        self._subscription.watched = False

    async def run(self) -> None:
        """Handle this session's signals until cancelled: those that need Redis (the
        rest were handled at once, see :meth:`_handle_at_once`)."""
        async for message in self._subscription.receive:
            if self._on_lag is not None:
                self._on_lag(trio.current_time() - message.received_at)
            signal = message.parsed  # every message queued was parsed by _handle_at_once
            assert isinstance(signal, hitl.Signal)
            if self._to_settle(signal, message) is None:  # decided meanwhile
                continue
            awaited = self._awaited
            assert awaited is not None  # _to_settle returns a signal only for it
            outcome = await self._settle(signal)
            if outcome is not None:
                awaited.set(outcome)

    def _handle_at_once(self, message: Message) -> Message | None:
        """In the delivering task: every signal that needs no Redis is handled there
        (ignored, or a decision announced here applied), so the session's agent wakes
        one scheduler pass sooner; the others go to :meth:`run`, parsed."""
        signal = hitl.parse_signal(message.payload)
        if signal is None:
            log.warning(
                "malformed HITL signal ignored",
                extra={"sessionId": self._subscription.topic, "bytes": len(message.payload)},
            )
        if signal is None or self._to_settle(signal, message) is None:
            if self._on_lag is not None:
                self._on_lag(0.0)
            return None
        return dataclasses.replace(message, parsed=signal)

    def _to_settle(self, signal: hitl.Signal, message: Message) -> hitl.Signal | None:
        """`signal` when it must be settled in Redis; else None, having ignored it or
        applied it."""
        awaited = self._awaited
        if awaited is None or signal.request_id != awaited.request_id:
            return None
        if awaited.outcome is not None:
            # Decided already (the other copy of our own decision, a replay):
            # nothing to settle, and reading the request again would cost a GET.
            return None
        if message.announced_here:
            # Stored in the same atomic step that published it: applied as it is.
            awaited.set(_outcome_of_signal(signal))
            return None
        return signal

    async def _settle(self, signal: hitl.Signal) -> Approved | Rejected | None:
        """Settle the signal's decision in Redis; the stored decision wins. The
        signal's own when Redis cannot say (the request is gone, or Redis is
        unreachable for SETTLE_RETRY_SECONDS); None when the request already timed
        out or was cancelled (the session is ending on that path)."""
        give_up_at = trio.current_time() + SETTLE_RETRY_SECONDS
        backoff = Backoff(cap=_LONGEST_RETRY_DELAY)
        while True:
            try:
                stored = await self._store.settle(
                    signal.request_id,
                    signal.decision,
                    via="signal",
                    by=signal.user_id,
                    reason=signal.reason,
                )
                break
            except StoreUnavailable as error:
                # Redis is reconnecting: followed unrecorded, the request would stay
                # `pending` (listed, decidable again). The settle is a compare-and-set,
                # so a try whose reply was lost is found settled by the next one.
                delay = backoff.next()
                if trio.current_time() + delay > give_up_at:
                    log.warning(
                        "could not settle a decision in Redis; following the signal: %s",
                        error,
                        extra={"requestId": signal.request_id},
                    )
                    stored = None
                    break
                await trio.sleep(delay)
        if stored is None:
            return _outcome_of_signal(signal)
        if stored.status in (hitl.APPROVED, hitl.REJECTED):
            return _outcome_of(stored)
        return None


def _outcome_of(request: hitl.HitlRequest) -> Approved | Rejected:
    if request.status == hitl.APPROVED:
        return Approved(request.request_id, request.args)
    return Rejected(request.request_id, request.reason or hitl.DEFAULT_REJECT_REASON)


def _outcome_of_signal(signal: hitl.Signal) -> Approved | Rejected:
    if signal.decision == hitl.APPROVED:
        return Approved(signal.request_id, signal.args)
    return Rejected(signal.request_id, signal.reason or hitl.DEFAULT_REJECT_REASON)
