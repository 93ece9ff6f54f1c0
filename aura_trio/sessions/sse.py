"""Server-Sent Events framing (docs/contract.md#the-stream): pure, no I/O."""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Callable
from typing import Any

CONNECTED = b": connected\n\n"
HEARTBEAT = b": heartbeat\n\n"
DONE = b"data: [DONE]\n\n"


# One encoder for every frame: `json.dumps` with options builds a new one per call,
# and `JSONEncoder.encode` still builds its C encoder per call (1.6 of 6 µs for a
# `hitl` event); this is that C encoder, built once. No circular check: frames are
# trees (a cyclic one fails on recursion instead).
_options = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)
_make_c_encoder = getattr(json.encoder, "c_make_encoder", None)  # not in typeshed
_encode: Callable[[Any], str]
if _make_c_encoder is None:
    _encode = _options.encode
else:
    _c_encoder = _make_c_encoder(
        None, _options.default, json.encoder.encode_basestring, None, ":", ",", False, False, True
    )

    def _encode(data: Any) -> str:
        return "".join(_c_encoder(data, 0))


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
