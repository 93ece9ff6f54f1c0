"""The WebSocket protocol (docs/websocket.md): client and server messages, close codes,
the subprotocols that carry a token, and the flood rule. Pure, no I/O."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Literal

from ..errors import ValidationError
from ..ids import PATH_ID
from .sse import parse_last_event_id, to_json

SUBPROTOCOL = "aura.v1"
BEARER_PREFIX = "bearer."
MAX_MESSAGE_BYTES = 64 * 1024
# The flood rule: a sustained rate above this ends the connection (a token bucket).
MESSAGES_PER_SECOND = 50.0
MESSAGE_BURST = 100


class Close(IntEnum):
    """The close codes the server sends (RFC 6455 §7.4.1)."""

    NORMAL = 1000  # after `done`
    GOING_AWAY = 1001  # server shutting down, after error ServerShutdown and `done`
    UNSUPPORTED_DATA = 1003  # a binary message
    POLICY_VIOLATION = 1008  # no `start` in time, a flood
    MESSAGE_TOO_BIG = 1009  # a message over MAX_MESSAGE_BYTES
    INTERNAL_ERROR = 1011


class ProtocolViolation(Exception):
    """A client message that ends the connection with `code` (no `done`)."""

    def __init__(self, code: Close, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


# --- client messages --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Start:
    """`start`: `body` (prompt, context, thread_id) is validated as a stream request's."""

    body: dict[str, Any]
    last_event_id: int = 0


@dataclass(frozen=True, slots=True)
class Decide:
    """`approve` / `reject`: `body` (userId, reason, args) is validated as the HTTP body's."""

    action: Literal["approve", "reject"]
    request_id: str
    body: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Cancel:
    """`cancel`: end the session."""


ClientMessage = Start | Decide | Cancel


def parse_client_message(message: str | bytes | None) -> ClientMessage:
    """One message from the client, as received (None: an empty binary message).

    Raises:
        ProtocolViolation: binary (1003) or over MAX_MESSAGE_BYTES (1009).
        ValidationError: not a JSON object with a known `type`, or a bad field (the
            session goes on).
    """
    if not isinstance(message, str):
        raise ProtocolViolation(Close.UNSUPPORTED_DATA, "binary messages are not accepted")
    if len(message) * 4 > MAX_MESSAGE_BYTES and _utf8_size(message) > MAX_MESSAGE_BYTES:
        raise ProtocolViolation(Close.MESSAGE_TOO_BIG, f"over {MAX_MESSAGE_BYTES} bytes")
    try:
        data = json.loads(message)
    except (ValueError, RecursionError):
        raise ValidationError("the message is not valid JSON") from None
    if not isinstance(data, dict):
        raise ValidationError("a message must be a JSON object")
    kind = data.pop("type", None)
    if kind == "start":
        return Start(data, parse_last_event_id(_id_text(data.pop("lastEventId", None))))
    if kind == "approve" or kind == "reject":
        request_id = data.pop("requestId", None)
        if not isinstance(request_id, str) or not PATH_ID.fullmatch(request_id):
            raise ValidationError(f"requestId must match {PATH_ID.pattern.strip('^$')}")
        return Decide(kind, request_id, data)
    if kind == "cancel":
        return Cancel()
    raise ValidationError("type must be one of start, approve, reject, cancel")


def _utf8_size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _id_text(value: object) -> str | None:
    """`lastEventId` as the text of a `Last-Event-ID` header (a number or a string)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    return str(value)


# --- server messages --------------------------------------------------------------

HEARTBEAT = '{"type":"heartbeat"}'
DONE = '{"type":"done"}'


def _text(data: Any) -> str:
    return to_json(data).decode("utf-8")


def event_message(event_id: int, event_type: str, data: Any) -> str:
    """An event: `data` is exactly the JSON of the SSE frame's `data:` line."""
    return f'{{"type":"event","id":{event_id:d},"event":{_text(event_type)},"data":{_text(data)}}}'


def ack_message(action: str, request_id: str, status: str) -> str:
    return _text({"type": "ack", "action": action, "requestId": request_id, "status": status})


def error_message(status: int, error_code: str, message: str, request_id: str | None = None) -> str:
    """A refused client message; `requestId` when it named one. The session goes on."""
    body: dict[str, Any] = {"type": "error", "status": status, "errorCode": error_code}
    body["message"] = message
    if request_id is not None:
        body["requestId"] = request_id
    return _text(body)


class WsFraming:
    """A session's frames as WebSocket text messages."""

    connected = None
    heartbeat = HEARTBEAT
    done = DONE

    @staticmethod
    def event(event_id: int, event_type: str, data: Any) -> str:
        return event_message(event_id, event_type, data)


WS = WsFraming()


# --- the upgrade ------------------------------------------------------------------


def subprotocol_token(offered: Sequence[str]) -> str | None:
    """The token a browser offers as `bearer.<jwt>` next to `aura.v1` (else None)."""
    if SUBPROTOCOL not in offered:
        return None
    for name in offered:
        if name.startswith(BEARER_PREFIX) and len(name) > len(BEARER_PREFIX):
            return name[len(BEARER_PREFIX) :]
    return None


def selected_subprotocol(offered: Sequence[str]) -> str | None:
    """What the server answers: `aura.v1` when offered; never the token."""
    return SUBPROTOCOL if SUBPROTOCOL in offered else None


def origin_allowed(origin: str | None, allowed: frozenset[str] | None) -> bool:
    """Whether an upgrade's `Origin` may connect (`allowed` None: any; no `Origin`: any,
    as a client that is not a browser sends none and could send any)."""
    if allowed is None or origin is None:
        return True
    return origin.strip().rstrip("/").lower() in allowed


class MessageRate:
    """The flood rule: a token bucket of `burst` messages refilled at `rate` per second."""

    def __init__(
        self, now: float, rate: float = MESSAGES_PER_SECOND, burst: int = MESSAGE_BURST
    ) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._at = now

    def allow(self, now: float) -> bool:
        """Count one message at `now`; False once the client is over the rate."""
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True
