"""The process's open sessions: admission limits, and the handle to drain them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Protocol

import trio

from ..errors import TooManyStreamsError, UnavailableError
from .endings import SHUTDOWN, Ending

RETRY_AFTER_SECONDS = 5


class Finishable(Protocol):
    user_id: str

    def finish(self, ending: Ending) -> None: ...


class SessionRegistry:
    """Counts open streams per user and per process, and ends them all on shutdown."""

    def __init__(self, *, max_per_user: int, max_total: int) -> None:
        self._max_per_user = max_per_user
        self._max_total = max_total
        self._sessions: set[Finishable] = set()
        self._per_user: Counter[str] = Counter()
        self._empty = trio.Event()
        self._empty.set()
        self.draining = False

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[Finishable]:
        return iter(list(self._sessions))

    def admit(self, session: Finishable) -> None:
        """Count `session` in, or refuse it.

        Raises:
            UnavailableError: the process is draining or holds `max_total` streams (503).
            TooManyStreamsError: the user holds `max_per_user` streams (429).
        """
        retry = {"Retry-After": str(RETRY_AFTER_SECONDS)}
        if self.draining:
            raise UnavailableError("server is shutting down", headers=retry)
        if len(self._sessions) >= self._max_total:
            raise UnavailableError("too many open streams on this server", headers=retry)
        if self._per_user[session.user_id] >= self._max_per_user:
            raise TooManyStreamsError("too many open streams for this user", headers=retry)
        self._sessions.add(session)
        self._per_user[session.user_id] += 1
        self._empty = trio.Event()

    def release(self, session: Finishable) -> None:
        """Count `session` out; safe to call more than once."""
        if session not in self._sessions:
            return
        self._sessions.remove(session)
        self._per_user[session.user_id] -= 1
        if not self._per_user[session.user_id]:
            del self._per_user[session.user_id]
        if not self._sessions:
            self._empty.set()

    def drain(self) -> None:
        """Refuse new sessions and end every open one with `ServerShutdown`."""
        self.draining = True
        for session in list(self._sessions):
            session.finish(SHUTDOWN)

    async def wait_empty(self) -> None:
        await self._empty.wait()
