"""The response body of an SSE stream: runs its session, yields the session's frames."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType

import trio
from quart.wrappers.response import ResponseBody

from ..channel import Channel
from ..sessions.session import OUTBOX_FRAMES, Session, open_session


class SessionBody(ResponseBody):
    """Entered before the response starts; leaving it early (the client went away,
    the send failed) cancels the session, whose cleanup then runs."""

    def __init__(self, session: Session[bytes]) -> None:
        self._session = session
        self._running: AbstractAsyncContextManager[Channel[bytes]] | None = None
        self._frames: Channel[bytes] | None = None

    async def __aenter__(self) -> SessionBody:
        self._running = open_session(self._session)
        self._frames = await self._running.__aenter__()
        return self

    async def __aexit__(  # type: ignore[override]
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._running is not None
        return await self._running.__aexit__(exc_type, exc_value, tb)

    def write_through(self, write: Callable[[bytes], Awaitable[None]]) -> None:
        """Called once the response has started, with how to send a chunk of it."""
        self._session.write_through(write)

    def __aiter__(self) -> SessionBody:
        return self

    async def __anext__(self) -> bytes:
        assert self._frames is not None
        # A frame already queued (the first, queued before the response started) is
        # taken without a scheduler pass: the writes that follow are bounded by what
        # is queued, and the next wait yields. The wait is not inside the `except`:
        # the exception being handled would be held, traceback and all, all along.
        try:
            batch = [self._frames.receive_nowait()]
        except trio.WouldBlock:
            batch = []
        except trio.EndOfChannel:
            raise StopAsyncIteration from None
        if not batch:
            try:
                batch = [await self._frames.receive()]
            except trio.EndOfChannel:
                raise StopAsyncIteration from None
        # Whatever else is already queued goes out in the same write.
        while len(batch) < OUTBOX_FRAMES:
            try:
                batch.append(self._frames.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        return batch[0] if len(batch) == 1 else b"".join(batch)
