"""HITL requests and decisions in Redis: the state machine of `records` over the bus."""

from __future__ import annotations

from typing import Any, NamedTuple

from ..bus.redis_bus import RedisBus, Swap
from ..errors import ConflictError, NotFoundError
from . import records as hitl
from .records import HitlRequest, SessionPointer


class Caller(NamedTuple):
    """Who reads or decides: a request is visible to its tenant (to its own user
    when it was opened in no tenant)."""

    tenant_id: str | None
    user_id: str


# Each swap only loses to another writer that already moved the record on; a
# handful of attempts is plenty, and bounded.
_ATTEMPTS = 8


class HitlStore:
    """Reads and atomic state changes of HITL requests, scoped by tenant."""

    def __init__(
        self,
        bus: RedisBus,
        *,
        request_ttl: int,
        session_ttl: int,
        signal_ttl: int,
        owned_set: str | None = None,
    ) -> None:
        """`owned_set`: where this process lists the requests it opened (see `liveness`)."""
        self._bus = bus
        self._owned_set = owned_set
        self._disowned: list[str] = []
        self._request_ttl = request_ttl
        self._session_ttl = session_ttl
        self._signal_ttl = signal_ttl

    async def open_request(self, request: HitlRequest) -> None:
        """Store a new pending request, point its session at it and list it as this
        process's, in one step."""
        session = SessionPointer(
            request.session_id, request.request_id, request.user_id, request.tenant_id
        )
        owned = (
            None
            if self._owned_set is None
            else (self._owned_set, request.request_id, self._request_ttl)
        )
        await self._bus.set_many(
            [
                (hitl.request_key(request.request_id), request.encode(), self._request_ttl),
                (hitl.session_key(request.session_id), session.encode(), self._session_ttl),
            ],
            add_to=owned,
        )

    def disown(self, request_ids: list[str]) -> None:
        """This process no longer waits for these requests (they are settled).

        They leave its set at the next :meth:`flush_disowned`: a set member that
        outlives its session costs a dead worker's sweep one no-op compare-and-set,
        while a Redis call per ended session costs every session a worker-thread job.
        """
        if self._owned_set is not None:
            self._disowned += request_ids

    async def flush_disowned(self) -> None:
        """Drop the disowned requests from this process's set; kept for later if Redis fails."""
        if self._owned_set is None or not self._disowned:
            return
        request_ids, self._disowned = self._disowned, []
        try:
            await self._bus.remove_members(self._owned_set, request_ids)
        except BaseException:
            self._disowned[:0] = request_ids
            raise

    async def read_request(self, request_id: str, caller: Caller) -> HitlRequest:
        """The request, if the caller's tenant owns it.

        Raises:
            NotFoundError: unknown, expired, or another tenant's (indistinguishable).
        """
        request = HitlRequest.decode(await self._bus.get(hitl.request_key(request_id)))
        if request is None or not request.visible_to(*caller):
            raise NotFoundError("HITL request not found")
        return request

    async def read_signal(self, session_id: str, caller: Caller) -> dict[str, Any]:
        """The last signal stored for a session of the caller's tenant.

        Raises:
            NotFoundError: no such session for this tenant, or no signal stored.
        """
        session_raw, signal_raw = await self._bus.mget(
            [hitl.session_key(session_id), hitl.signal_key(session_id)]
        )
        session = SessionPointer.decode(session_raw)
        signal = hitl.decode_json_object(signal_raw)
        if session is None or signal is None or not session.visible_to(*caller):
            raise NotFoundError("HITL signal not found")
        return signal

    async def decide(
        self,
        request_id: str,
        caller: Caller,
        decision: hitl.Decision,
        *,
        reason: str | None = None,
    ) -> HitlRequest:
        """Move a pending request to `decision`, then store and publish its signal.

        All three happen in one atomic step, so of two concurrent decisions exactly
        one succeeds. Returns the updated request.

        Raises:
            NotFoundError: as :meth:`read_request`.
            ConflictError: the request is no longer pending.
        """

        def change(raw: bytes | None) -> Swap:
            request = HitlRequest.decode(raw)
            if request is None or not request.visible_to(*caller):
                raise NotFoundError("HITL request not found")
            updated = request.moved_to(decision)
            if updated is None:
                raise ConflictError(f"HITL request is already {request.status}")
            signal = hitl.signal_payload(
                request_id, decision, reason=reason, user_id=caller.user_id
            )
            announce = (request.session_id, signal, self._signal_ttl)
            return Swap(updated.encode(), result=updated, announce=announce)

        decided: HitlRequest = await self._bus.update(
            hitl.request_key(request_id), change, attempts=_ATTEMPTS
        )
        return decided

    async def settle(self, request_id: str, status: hitl.Status) -> hitl.Status | None:
        """Move a pending request to `status`; return the status it ends up in.

        When someone else decided first, their status is returned instead: the
        stored request is the one truth a session follows. None when the request
        is gone (expired, deleted, or unreadable).
        """

        def change(raw: bytes | None) -> Swap:
            request = HitlRequest.decode(raw)
            if request is None:
                return Swap(None)
            updated = request.moved_to(status)
            if updated is None:
                return Swap(None, result=request.status)
            return Swap(updated.encode(), result=status)

        settled: hitl.Status | None = await self._bus.update(
            hitl.request_key(request_id), change, attempts=_ATTEMPTS
        )
        return settled
