"""HITL records, signals and their state machine (CONTRACT 4 and 5): pure, no I/O."""

from __future__ import annotations

import json
from dataclasses import dataclass
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

DEFAULT_REJECT_REASON = "사용자 거절"

CHANNEL_PREFIX = "hitl:channel:"
SIGNAL_PREFIX = "hitl:signal:"

encode = to_json

_SIGNAL_TYPES: dict[str, Decision] = {"approval": APPROVED, "rejection": REJECTED}


def request_key(request_id: str) -> str:
    return f"hitl:request:{request_id}"


def session_key(session_id: str) -> str:
    return f"hitl:session:{session_id}"


def signal_key(session_id: str) -> str:
    return SIGNAL_PREFIX + session_id


def channel(session_id: str) -> str:
    return CHANNEL_PREFIX + session_id


@dataclass(frozen=True, slots=True)
class Signal:
    """A decision as published on `hitl:channel:{sessionId}`."""

    request_id: str
    decision: Decision
    reason: str | None = None


def parse_signal(payload: bytes | str) -> Signal | None:
    """The signal in `payload`, or None when it is not a well-formed decision."""
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
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
    return Signal(request_id, status, reason if status == REJECTED else None)


def signal_payload(
    request_id: str, decision: Decision, *, reason: str | None, user_id: str | None
) -> dict[str, Any]:
    """A signal exactly as the Java side writes it, plus the approver's id."""
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
    return body


def new_request(
    *,
    request_id: str,
    session_id: str,
    action_type: str,
    message: str,
    context: dict[str, Any],
    user_id: str,
    tenant_id: str | None,
    created_at: int,
    expires_at: int,
) -> dict[str, Any]:
    return {
        "requestId": request_id,
        "sessionId": session_id,
        "actionType": action_type,
        "message": message,
        "context": context,
        "status": PENDING,
        "userId": user_id,
        "tenantId": tenant_id,
        "createdAt": created_at,
        "expiresAt": expires_at,
    }


def session_record(
    session_id: str, request_id: str, user_id: str, tenant_id: str | None
) -> dict[str, Any]:
    return {
        "sessionId": session_id,
        "requestId": request_id,
        "userId": user_id,
        "tenantId": tenant_id,
    }


def with_status(record: dict[str, Any], status: Status) -> dict[str, Any] | None:
    """The record moved to `status`, or None when it is no longer pending."""
    if record.get("status") != PENDING:
        return None
    return {**record, "status": status}


def visible_to(record: dict[str, Any] | None, tenant_id: str | None) -> bool:
    """Whether a caller of `tenant_id` may see `record` (only its own tenant may)."""
    return isinstance(record, dict) and record.get("tenantId") == tenant_id


def decode(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return value if isinstance(value, dict) else None
