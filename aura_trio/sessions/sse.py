"""Server-Sent Events framing (docs/contract.md#the-stream): pure, no I/O."""

from __future__ import annotations

import json
from typing import Any

CONNECTED = b": connected\n\n"
HEARTBEAT = b": heartbeat\n\n"
DONE = b"data: [DONE]\n\n"


# One encoder for every frame: `json.dumps` with options builds a new one per call.
# No circular check: frames are trees (a cyclic one fails on recursion instead).
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).encode


def to_json(data: Any) -> bytes:
    """One-line UTF-8 JSON with non-ASCII kept as is.

    JSON escapes every control character, so the result never holds a line break. A
    lone surrogate cannot be encoded as UTF-8; it becomes the JSON escape `\\udXXX`,
    which is what `ensure_ascii` would have written for it.
    """
    return _encode(data).encode("utf-8", "backslashreplace")


def encode_event(event_id: int, event_type: str, data: Any) -> bytes:
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event_id, event_type.encode(), to_json(data))


def parse_last_event_id(value: str | None) -> int:
    """The id to continue from: an integer `Last-Event-ID`, else 0 (ignored)."""
    if value is None:
        return 0
    value = value.strip()
    if not value.isascii() or not value.isdigit() or len(value) > 18:
        return 0
    return int(value)


class SseFraming:
    """A session's frames as Server-Sent Events (bytes)."""

    connected = CONNECTED
    heartbeat = HEARTBEAT
    done = DONE

    @staticmethod
    def event(event_id: int, event_type: str, data: Any) -> bytes:
        return encode_event(event_id, event_type, data)


SSE = SseFraming()
