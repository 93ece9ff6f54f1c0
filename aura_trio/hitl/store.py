"""HITL requests in Redis: every transition one atomic step, indexed and audited.

Each change of a request is a compare-and-set of its stored JSON, and in the same
Lua step it leaves its tenant's pending index and is appended to its tenant's
audit stream (and a decision's signal is stored and published). So the inbox
never lists a settled request, and the audit log misses none.

What a person sees is durable (`AURA_REDIS_MIN_REPLICAS`, the bus's
:attr:`~aura_trio.bus.redis_bus.RedisBus.durable` writes): a request is opened,
and a decision made through our API, only once `WAIT` confirmed it on the
replicas. A decision's signal is then published after that confirmation, not in
its Lua step: no session resumes on a decision that a failover could still undo.
"""

from __future__ import annotations

import json
import logging
from typing import Any, NamedTuple

from ..bus.client import Script
from ..bus.redis_bus import RedisBus
from ..errors import ConflictError, NotFoundError, StoreUnavailable
from ..sessions import events
from . import records as hitl
from .edits import check_edited_args
from .records import HitlRequest, SessionPointer

log = logging.getLogger(__name__)

# Each attempt only loses to another writer that already moved the record on; a
# handful of attempts is plenty, and bounded.
_ATTEMPTS = 8

# KEYS: request, pending index, audit stream [, signal]
# ARGV: old JSON, new JSON, index member, audit max length, audit entry
#       [, signal, signal TTL, channel ('': not published here)]
_TRANSITION = Script("""
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
redis.call('ZREM', KEYS[2], ARGV[3])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'entry', ARGV[5])
if #KEYS > 3 then
  redis.call('SET', KEYS[4], ARGV[6], 'EX', ARGV[7])
  if ARGV[8] ~= '' then redis.call('PUBLISH', ARGV[8], ARGV[6]) end
end
return 1
""")


class Caller(NamedTuple):
    """Who reads or decides: a request is visible to its tenant (to its own user
    when it was opened in no tenant)."""

    tenant_id: str | None
    user_id: str


class Page(NamedTuple):
    items: list[dict[str, Any]]
    next_cursor: str | None


def pending_key(tenant_id: str | None, user_id: str) -> str:
    return (
        f"hitl:pending:tenant:{tenant_id}"
        if tenant_id is not None
        else (f"hitl:pending:user:{user_id}")
    )


def audit_key(tenant_id: str | None, user_id: str) -> str:
    return (
        f"hitl:audit:tenant:{tenant_id}"
        if tenant_id is not None
        else (f"hitl:audit:user:{user_id}")
    )


def _index_member(request: HitlRequest) -> str:
    # One score for all: members sort by expiry (then id), and a page is a lex range.
    return f"{request.expires_at:012d}:{request.request_id}"


def _audit_entry(before: HitlRequest | None, after: HitlRequest) -> bytes:
    return json.dumps(
        {
            "requestId": after.request_id,
            "sessionId": after.session_id,
            "from": None if before is None else before.status,
            "to": after.status,
            "by": after.user_id if before is None else after.decided_by,
            "via": "session" if before is None else after.via,
            "reason": after.reason,
            "at": after.created_at if before is None else after.decided_at,
        },
        ensure_ascii=False,
    ).encode()


class HitlStore:
    """Reads and atomic state changes of HITL requests, scoped by caller."""

    def __init__(
        self,
        bus: RedisBus,
        *,
        request_ttl: int,
        session_ttl: int,
        signal_ttl: int,
        audit_max_len: int = 10_000,
        owned_set: str | None = None,
    ) -> None:
        """`owned_set`: where this process lists the requests it opened (see `liveness`)."""
        self._bus = bus
        self._owned_set = owned_set
        self._disowned: list[str] = []
        self._request_ttl = request_ttl
        self._session_ttl = session_ttl
        self._signal_ttl = signal_ttl
        self._audit_max_len = audit_max_len

    async def open_request(self, request: HitlRequest) -> None:
        """Store a new pending request, point its session at it, index it, audit it
        and list it as this process's, in one MULTI/EXEC, confirmed on the replicas.

        Raises:
            NotReplicatedError: stored on the primary, but not confirmed in time.
        """
        session = SessionPointer(
            request.session_id, request.request_id, request.user_id, request.tenant_id
        )
        commands: list[tuple[Any, ...]] = [
            ("SET", hitl.request_key(request.request_id), request.encode(),
             "EX", self._request_ttl),
            ("SET", hitl.session_key(request.session_id), session.encode(),
             "EX", self._session_ttl),
            ("ZADD", pending_key(request.tenant_id, request.user_id), 0, _index_member(request)),
            ("XADD", audit_key(request.tenant_id, request.user_id),
             "MAXLEN", "~", self._audit_max_len, "*", "entry", _audit_entry(None, request)),
        ]  # fmt: skip
        if self._owned_set is not None:
            commands.append(("SADD", self._owned_set, request.request_id))
            commands.append(("EXPIRE", self._owned_set, self._request_ttl))
        await self._bus.durable.transaction(commands)

    def disown(self, request_ids: list[str]) -> None:
        """This process no longer waits for these requests (they are settled).

        They leave its set at the next :meth:`flush_disowned`: a set member that
        outlives its session costs a dead worker's sweep one no-op compare-and-set,
        while a Redis call per ended session costs every session a round trip.
        """
        if self._owned_set is not None:
            self._disowned += request_ids

    async def flush_disowned(self) -> None:
        """Drop the disowned requests from this process's set; kept for later if Redis fails."""
        if self._owned_set is None or not self._disowned:
            return
        request_ids, self._disowned = self._disowned, []
        try:
            await self._bus.commands.execute("SREM", self._owned_set, *request_ids)
        except BaseException:
            self._disowned[:0] = request_ids
            raise

    async def read_request(self, request_id: str, caller: Caller) -> HitlRequest:
        """The request, if the caller may see it.

        Raises:
            NotFoundError: unknown, expired, or another tenant's (indistinguishable).
        """
        raw = await self._bus.commands.execute("GET", hitl.request_key(request_id))
        request = HitlRequest.decode(raw)
        if request is None or not request.visible_to(*caller):
            raise NotFoundError("HITL request not found")
        return request

    async def read_signal(self, session_id: str, caller: Caller) -> dict[str, Any]:
        """The last signal stored for a session the caller may see.

        Raises:
            NotFoundError: no such session for this caller, or no signal stored.
        """
        session_raw, signal_raw = await self._bus.commands.execute(
            "MGET", hitl.session_key(session_id), hitl.signal_key(session_id)
        )
        session = SessionPointer.decode(session_raw)
        signal = hitl.decode_json_object(signal_raw)
        if session is None or signal is None or not session.visible_to(*caller):
            raise NotFoundError("HITL signal not found")
        return signal

    async def pending(self, caller: Caller, *, limit: int, cursor: str | None) -> Page:
        """The caller's pending requests, newest first, `limit` at a time.

        A page is one range read of the index and one MGET: it costs the same with
        ten thousand pending requests as with ten. Requests past their expiry are
        not listed (their sessions are timing them out).
        """
        index = pending_key(*caller)
        now = f"{events.now():012d}:"
        top = "+" if cursor is None else "(" + cursor
        members = await self._bus.commands.execute(
            "ZREVRANGEBYLEX", index, top, "[" + now, "LIMIT", 0, limit
        )
        if not members:
            return Page([], None)
        names = [m.decode() for m in members]
        raws = await self._bus.commands.execute(
            "MGET", *(hitl.request_key(name.split(":", 1)[1]) for name in names)
        )
        items = []
        for raw in raws:
            request = HitlRequest.decode(raw)
            if request is not None and request.status == hitl.PENDING:
                if request.visible_to(*caller):
                    items.append(request.to_json())
        return Page(items, names[-1] if len(names) == limit else None)

    async def audit(self, caller: Caller, *, limit: int, cursor: str | None) -> Page:
        """Transitions of the caller's tenant's requests, oldest first."""
        start = "-" if cursor is None else "(" + cursor
        entries = await self._bus.commands.execute(
            "XRANGE", audit_key(*caller), start, "+", "COUNT", limit
        )
        items = []
        for entry_id, fields in entries:
            values = dict(zip(fields[::2], fields[1::2], strict=True))
            item = hitl.decode_json_object(values.get(b"entry"))
            if item is not None:
                items.append({"id": entry_id.decode(), **item})
        next_cursor = entries[-1][0].decode() if len(entries) == limit else None
        return Page(items, next_cursor)

    async def decide(
        self,
        request_id: str,
        caller: Caller,
        decision: hitl.Decision,
        *,
        reason: str | None = None,
        args: dict[str, Any] | None = None,
    ) -> HitlRequest:
        """Move a pending request to `decision`, then store and publish its signal.

        All of it is one atomic step, so of two concurrent decisions exactly one
        succeeds. `args`: edited arguments to approve instead of the proposed ones,
        checked against what the agent declared editable. Returns the decided request
        once it is confirmed on the replicas.

        Raises:
            NotReplicatedError: decided on the primary, but not confirmed in time
                (not published either: the sessions find it at their next re-read).
            NotFoundError: as :meth:`read_request`.
            ConflictError: the request is no longer pending.
            ValidationError: `args` are not an allowed edit (nothing is decided).
        """
        key = hitl.request_key(request_id)
        for _ in range(_ATTEMPTS):
            raw = await self._bus.commands.execute("GET", key)
            request = HitlRequest.decode(raw)
            if request is None or not request.visible_to(*caller):
                raise NotFoundError("HITL request not found")
            if request.status != hitl.PENDING:
                raise ConflictError(f"HITL request is already {request.status}")
            if args is not None:
                check_edited_args(request.editable_args, args, request.args)
            decided = request.moved_to(
                decision, via="api", by=caller.user_id, reason=reason, args=args
            )
            assert decided is not None
            signal = hitl.signal_payload(
                request_id,
                decision,
                reason=reason,
                user_id=caller.user_id,
                args=decided.args if decided.proposed_args is not None else None,
            )
            with self._bus.announcing(request.session_id, signal) as announce:
                if await self._transition(raw, request, decided, signal=signal):
                    if self._bus.min_replicas:
                        await self._publish(request.session_id, signal)
                    announce()
                    return decided
        raise StoreUnavailable(f"{key} kept changing; try again")

    async def settle(
        self,
        request_id: str,
        status: hitl.Status,
        *,
        via: hitl.Via,
        by: str | None = None,
        reason: str | None = None,
    ) -> HitlRequest | None:
        """Move a pending request to `status`; return the request as it ends up.

        When someone else decided first, that decision is returned instead: the
        stored request is the one truth a session follows. None when the request
        is gone (expired, deleted, or unreadable).
        """
        key = hitl.request_key(request_id)
        for _ in range(_ATTEMPTS):
            raw = await self._bus.commands.execute("GET", key)
            request = HitlRequest.decode(raw)
            if request is None:
                return None
            settled = request.moved_to(status, via=via, by=by, reason=reason)
            if settled is None:
                return request
            if await self._transition(raw, request, settled):
                return settled
        raise StoreUnavailable(f"{key} kept changing; try again")

    async def _publish(self, session_id: str, signal: bytes) -> None:
        # Durable already: a PUBLISH lost now only delays the sessions to their re-read.
        try:
            await self._bus.commands.execute("PUBLISH", hitl.channel(session_id), signal)
        except StoreUnavailable as error:
            log.warning("a confirmed decision's signal was not published: %s", error)

    async def _transition(
        self, raw: bytes, before: HitlRequest, after: HitlRequest, *, signal: bytes | None = None
    ) -> bool:
        keys: list[Any] = [
            hitl.request_key(before.request_id),
            pending_key(before.tenant_id, before.user_id),
            audit_key(before.tenant_id, before.user_id),
        ]
        args: list[Any] = [
            raw,
            after.encode(),
            _index_member(before),
            self._audit_max_len,
            _audit_entry(before, after),
        ]
        if signal is None:
            return bool(await self._bus.commands.run_script(_TRANSITION, keys=keys, args=args))
        # A decision: durable, and published here only when no confirmation is awaited.
        durable = self._bus.durable
        channel = "" if durable.replicas else hitl.channel(before.session_id)
        keys.append(hitl.signal_key(before.session_id))
        args += [signal, self._signal_ttl, channel]
        return bool(await durable.run_script(_TRANSITION, keys=keys, args=args))
