"""A session's signal-waiter: turns signals into the decision its agent waits for."""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from ..bus.redis_bus import Subscription
from ..errors import StoreUnavailable
from . import records as hitl
from .store import HitlStore

log = logging.getLogger(__name__)


class SignalWaiter:
    """Receives every signal for one session and resolves the request it waits for.

    Signals for any other request id (an earlier request's stored signal, a replay)
    and malformed ones are ignored. Before a decision is acted on it is settled in
    Redis: when another decision was stored first, the stored one wins. A decision
    this process announced itself was stored in the same atomic step as the
    pending → decided transition, so it is applied as it is.

    Args:
        subscription: the session's subscription, registered before any request exists.
        on_rejected: called with the request id and the reason when the awaited request
            is rejected.
    """

    def __init__(
        self,
        subscription: Subscription,
        store: HitlStore,
        on_rejected: Callable[[str, str], None],
    ) -> None:
        self._subscription = subscription
        self._store = store
        self._on_rejected = on_rejected
        self._expected: str | None = None
        self._approved = trio.Event()

    @property
    def expected(self) -> str | None:
        """The request id a decision is awaited for, if any."""
        return self._expected

    def expect(self, request_id: str) -> trio.Event:
        """Start waiting for `request_id`; the returned event is set when it is approved."""
        self._expected = request_id
        self._approved = trio.Event()
        self._subscription.watched = True
        return self._approved

    def forget(self) -> str | None:
        """Stop waiting; returns the request id that was awaited, if any."""
        request_id, self._expected = self._expected, None
        self._subscription.watched = False
        return request_id

    def resolve(self, request_id: str, decision: hitl.Decision, reason: str | None) -> None:
        """Apply the decision on `request_id`, once; later calls are ignored."""
        if request_id != self._expected:
            return
        self.forget()
        if decision == hitl.APPROVED:
            self._approved.set()
        else:
            self._on_rejected(request_id, reason or hitl.DEFAULT_REJECT_REASON)

    async def run(self) -> None:
        """Handle this session's signals until cancelled."""
        async for message in self._subscription.receive:
            signal = hitl.parse_signal(message.payload)
            if signal is None:
                log.warning(
                    "malformed HITL signal ignored",
                    extra={"sessionId": self._subscription.topic, "bytes": len(message.payload)},
                )
                continue
            if signal.request_id != self._expected:
                continue
            if message.announced_here:
                self.resolve(signal.request_id, signal.decision, signal.reason)
            else:
                await self._settle(signal)

    async def _settle(self, signal: hitl.Signal) -> None:
        try:
            stored = await self._store.settle(signal.request_id, signal.decision)
        except StoreUnavailable as error:
            log.warning(
                "could not settle a decision in Redis; following the signal: %s",
                error,
                extra={"requestId": signal.request_id},
            )
            stored = None
        if stored is None:
            self.resolve(signal.request_id, signal.decision, signal.reason)
        elif stored in (hitl.APPROVED, hitl.REJECTED):
            reason = signal.reason if stored == signal.decision else None
            self.resolve(signal.request_id, stored, reason)  # type: ignore[arg-type]
        # timeout / cancelled: the session is already ending on that path.
