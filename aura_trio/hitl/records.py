"""HITL records, signals and their state machine: pure, no I/O.

The JSON shapes are the ones the Java Main Service reads and writes
(docs/contract.md#redis-keys-and-ttls); these frozen dataclasses are what the
rest of the code passes around.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from ..sessions import events
from ..sessions.sse import to_json

PENDING: Final = "pending"
APPROVED: Final = "approved"
REJECTED: Final = "rejected"
TIMEOUT: Final = "timeout"
CANCELLED: Final = "cancelled"

Decision = Literal["approved", "rejected"]
Status = Literal["pending", "approved", "rejected", "timeout", "cancelled"]
# How a request left `pending` (docs/approvals.md#decision-record).
Via = Literal["api", "signal", "timeout", "disconnect", "cancel", "shutdown", "worker_lost"]
_STATUSES: frozenset[str] = frozenset((PENDING, APPROVED, REJECTED, TIMEOUT, CANCELLED))

DEFAULT_REJECT_REASON = "사용자 거절"

CHANNEL_PREFIX = "hitl:channel:"
SIGNAL_PREFIX = "hitl:signal:"

_SIGNAL_TYPES: dict[str, Decision] = {"approval": APPROVED, "rejection": REJECTED}
_VIAS: frozenset[str] = frozenset(
    ("api", "signal", "timeout", "disconnect", "cancel", "shutdown", "worker_lost")
)
_OWN_OPTIONAL = frozenset(
    ("tenantId", "args", "proposedArgs", "editableArgs", "decidedBy", "decidedAt", "reason", "via")
)


def request_key(request_id: str) -> str:
    return f"hitl:request:{request_id}"


def session_key(session_id: str) -> str:
    return f"hitl:session:{session_id}"


def signal_key(session_id: str) -> str:
    return SIGNAL_PREFIX + session_id


def channel(session_id: str) -> str:
    return CHANNEL_PREFIX + session_id


@dataclass(frozen=True, slots=True)
class HitlRequest:
    """A stored request (`hitl:request:{requestId}`).

    `extra` keeps fields this version does not know, so that a rewrite never drops
    what another writer added.
    """

    request_id: str
    session_id: str
    action_type: str
    message: str
    context: dict[str, Any]
    status: Status
    user_id: str
    tenant_id: str | None
    created_at: int
    expires_at: int
    # The tool's arguments: proposed, or the ones a person approved instead.
    args: dict[str, Any] | None = None
    proposed_args: dict[str, Any] | None = None
    # A JSON Schema the edited arguments must satisfy; None: they cannot be edited.
    editable_args: dict[str, Any] | None = None
    decided_by: str | None = None
    decided_at: int | None = None
    reason: str | None = None
    via: Via | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        optional = {
            "args": self.args,
            "proposedArgs": self.proposed_args,
            "editableArgs": self.editable_args,
            "reason": self.reason,
        }
        decided = (
            {}
            if self.status == PENDING
            else {"decidedBy": self.decided_by, "decidedAt": self.decided_at, "via": self.via}
        )
        return {
            **self.extra,
            **{name: value for name, value in optional.items() if value is not None},
            **decided,
            "requestId": self.request_id,
            "sessionId": self.session_id,
            "actionType": self.action_type,
            "message": self.message,
            "context": self.context,
            "status": self.status,
            "userId": self.user_id,
            "tenantId": self.tenant_id,
            "createdAt": self.created_at,
            "expiresAt": self.expires_at,
        }

    def encode(self) -> bytes:
        return to_json(self.to_json())

    @classmethod
    def from_json(cls, data: object) -> HitlRequest | None:
        """The request in `data`, or None when `data` is not a well-formed one."""
        if not isinstance(data, dict):
            return None
        known = {
            "requestId": str,
            "sessionId": str,
            "actionType": str,
            "message": str,
            "context": dict,
            "status": str,
            "userId": str,
            "createdAt": int,
            "expiresAt": int,
        }
        for name, kind in known.items():
            if not isinstance(data.get(name), kind):
                return None
        tenant_id = data.get("tenantId")
        if data["status"] not in _STATUSES or not (tenant_id is None or isinstance(tenant_id, str)):
            return None
        optional_objects = {}
        for name in ("args", "proposedArgs", "editableArgs"):
            value = data.get(name)
            if not (value is None or isinstance(value, dict)):
                return None
            optional_objects[name] = value
        decided_by, decided_at = data.get("decidedBy"), data.get("decidedAt")
        reason, via = data.get("reason"), data.get("via")
        if not (decided_by is None or isinstance(decided_by, str)):
            return None
        if not (decided_at is None or isinstance(decided_at, int)):
            return None
        if not (reason is None or isinstance(reason, str)) or not (via is None or via in _VIAS):
            return None
        extra = {k: v for k, v in data.items() if k not in known and k not in _OWN_OPTIONAL}
        return cls(
            request_id=data["requestId"],
            session_id=data["sessionId"],
            action_type=data["actionType"],
            message=data["message"],
            context=data["context"],
            status=data["status"],
            user_id=data["userId"],
            tenant_id=tenant_id,
            created_at=data["createdAt"],
            expires_at=data["expiresAt"],
            args=optional_objects["args"],
            proposed_args=optional_objects["proposedArgs"],
            editable_args=optional_objects["editableArgs"],
            decided_by=decided_by,
            decided_at=decided_at,
            reason=reason,
            via=via,
            extra=extra,
        )

    @classmethod
    def decode(cls, raw: bytes | None) -> HitlRequest | None:
        return cls.from_json(_loads(raw))

    def moved_to(
        self,
        status: Status,
        *,
        via: Via | None = None,
        by: str | None = None,
        at: int | None = None,
        reason: str | None = None,
        args: dict[str, Any] | None = None,
    ) -> HitlRequest | None:
        """This request moved to `status`, recording who and how; None when it is no
        longer pending. `args`: the arguments approved instead of the proposed ones."""
        if self.status != PENDING:
            return None
        edited = args is not None and args != self.args
        return dataclasses.replace(
            self,
            status=status,
            via=via,
            decided_by=by,
            decided_at=events.now() if at is None else at,
            reason=reason if status == REJECTED else None,
            args=args if edited else self.args,
            proposed_args=self.args if edited else None,
        )

    def visible_to(self, tenant_id: str | None, user_id: str) -> bool:
        """Whether a caller may see and decide it: one of its own tenant; a request
        opened in no tenant, only its own user."""
        return _visible(self.tenant_id, self.user_id, tenant_id, user_id)


@dataclass(frozen=True, slots=True)
class SessionPointer:
    """`hitl:session:{sessionId}`: the session's latest request, and whose it is."""

    session_id: str
    request_id: str
    user_id: str
    tenant_id: str | None

    def encode(self) -> bytes:
        return to_json(
            {
                "sessionId": self.session_id,
                "requestId": self.request_id,
                "userId": self.user_id,
                "tenantId": self.tenant_id,
            }
        )

    @classmethod
    def decode(cls, raw: bytes | None) -> SessionPointer | None:
        data = _loads(raw)
        if not isinstance(data, dict):
            return None
        session_id, request_id = data.get("sessionId"), data.get("requestId")
        user_id, tenant_id = data.get("userId"), data.get("tenantId")
        if not (isinstance(session_id, str) and isinstance(request_id, str)):
            return None
        if not isinstance(user_id, str) or not (tenant_id is None or isinstance(tenant_id, str)):
            return None
        return cls(session_id, request_id, user_id, tenant_id)

    def visible_to(self, tenant_id: str | None, user_id: str) -> bool:
        return _visible(self.tenant_id, self.user_id, tenant_id, user_id)


def _visible(owner_tenant: str | None, owner: str, tenant_id: str | None, user_id: str) -> bool:
    return owner_tenant == tenant_id and (tenant_id is not None or owner == user_id)


@dataclass(frozen=True, slots=True)
class Signal:
    """A decision as published on `hitl:channel:{sessionId}`."""

    request_id: str
    decision: Decision
    reason: str | None = None
    # The approver, when the publisher says (the Java side may send `userId`).
    user_id: str | None = None
    # Edited arguments an approval carries (ours; the Java side sends none).
    args: dict[str, Any] | None = None


def parse_signal(payload: bytes | str) -> Signal | None:
    """The signal in `payload`, or None when it is not a well-formed decision."""
    data = _loads(payload)
    if not isinstance(data, dict):
        return None
    request_id, status, kind = data.get("requestId"), data.get("status"), data.get("type")
    if not isinstance(request_id, str) or not request_id or status not in (APPROVED, REJECTED):
        return None
    if kind is not None and _SIGNAL_TYPES.get(kind) != status:
        return None
    reason = data.get("reason")
    if status == REJECTED and not isinstance(reason, str):
        reason = DEFAULT_REJECT_REASON
    user_id, args = data.get("userId"), data.get("args")
    return Signal(
        request_id,
        status,
        reason if status == REJECTED else None,
        user_id if isinstance(user_id, str) else None,
        args if isinstance(args, dict) and status == APPROVED else None,
    )


def signal_payload(
    request_id: str,
    decision: Decision,
    *,
    reason: str | None,
    user_id: str | None,
    args: dict[str, Any] | None = None,
) -> bytes:
    """A signal exactly as the Java side writes it, plus the approver's id and, for
    an approval with edited arguments, those arguments."""
    if decision == APPROVED:
        body: dict[str, Any] = {"type": "approval", "requestId": request_id, "status": APPROVED}
    else:
        body = {
            "type": "rejection",
            "requestId": request_id,
            "status": REJECTED,
            "reason": reason or DEFAULT_REJECT_REASON,
        }
    body["timestamp"] = events.now()
    if user_id is not None:
        body["userId"] = user_id
    if args is not None:
        body["args"] = args
    return to_json(body)


def decode_json_object(raw: bytes | None) -> dict[str, Any] | None:
    """A stored JSON object as it is (for the API to return), or None."""
    value = _loads(raw)
    return value if isinstance(value, dict) else None


def _loads(raw: bytes | str | None) -> object:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
