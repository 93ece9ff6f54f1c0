"""quart-trio's request, without the synchronisation a request rarely uses.

Its body holds two trio Events and the request a trio Lock, for every request,
streams included (~1.2 KB of a waiting session): a GET's body is complete before
anyone waits on it, and the parsing lock is only taken to read a body. Here each is
made the first time something has to wait on it.
"""

from __future__ import annotations

from types import TracebackType

import trio
from quart_trio.wrappers.request import TrioBody, TrioRequest
from werkzeug.exceptions import RequestEntityTooLarge


class _Flag:
    """The interface quart-trio's body uses of its events: an Event made only for a
    task that has to wait."""

    __slots__ = ("_event", "_set")

    def __init__(self) -> None:
        self._set = False
        self._event: trio.Event | None = None

    def set(self) -> None:
        self._set = True
        if self._event is not None:
            self._event.set()

    def clear(self) -> None:
        self._set = False
        self._event = None  # as quart-trio's: a fresh event for later waiters

    def is_set(self) -> bool:
        return self._set

    async def wait(self) -> None:
        if self._set:
            await trio.lowlevel.checkpoint()
            return
        if self._event is None:
            self._event = trio.Event()
        await self._event.wait()


class _LazyLock:
    """A trio Lock made when first taken."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock: trio.Lock | None = None

    async def __aenter__(self) -> None:
        if self._lock is None:
            self._lock = trio.Lock()
        await self._lock.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._lock is not None
        self._lock.release()


class LeanBody(TrioBody):
    def __init__(self, expected_content_length: int | None, max_content_length: int | None) -> None:
        # TrioBody.__init__ (it calls no other), with flags in place of its two events.
        self._data = bytearray()
        self._complete = _Flag()  # type: ignore[assignment]
        self._has_data = _Flag()  # type: ignore[assignment]
        self._max_content_length = max_content_length
        self._must_raise: Exception | None = None
        if (
            expected_content_length is not None
            and max_content_length is not None
            and expected_content_length > max_content_length
        ):
            self._must_raise = RequestEntityTooLarge()


class LeanRequest(TrioRequest):
    body_class = LeanBody
    lock_class = _LazyLock  # type: ignore[assignment]
