"""How a transport encodes what a session sends: SSE (`sse.py`, bytes) and the
WebSocket (`ws_protocol.py`, text) each provide one :class:`Framing`."""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

Frame = TypeVar("Frame", bytes, str)
FrameOut = TypeVar("FrameOut", bytes, str, covariant=True)


class Framing(Protocol[FrameOut]):
    """A session's frames for one transport: pure, no I/O."""

    @property
    def connected(self) -> FrameOut | None:
        """Sent first, before any event (None: nothing)."""

    @property
    def heartbeat(self) -> FrameOut:
        """Sent when nothing was written for the heartbeat interval."""

    @property
    def done(self) -> FrameOut:
        """Sent last, after the ending's events."""

    def event(self, event_id: int, event_type: str, data: Any) -> FrameOut:
        """One event: its id, its type (`start`, `hitl`, ...) and its JSON data."""
