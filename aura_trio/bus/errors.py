"""What the transport raises: all of it is :class:`aura_trio.errors.StoreUnavailable`.

- :class:`TransportError`: no usable connection, or it broke (refused, EOF, reset,
  TLS failure, protocol error, no reply in time). Nothing is known of whether a
  command that was written took effect.
- :class:`ReplyError`: Redis answered with an error reply; `code` is its first word
  (`ERR`, `WRONGTYPE`, `NOSCRIPT`, `READONLY`, `EXECABORT`, `WRONGPASS`, ...) and
  `message` the whole text. The connection is fine.
- :class:`ReadOnlyError`: the `READONLY` reply, the one a replica gives to a write:
  the connection is on a replica, which a Sentinel-aware caller treats as failed.
- :class:`NoScriptError`: `NOSCRIPT`, the script cache lacks the script (handled by
  :class:`aura_trio.bus.client.Script`).

hiredis builds :class:`ReplyError` itself for every error reply (also inside an
EXEC array); :func:`specific` picks the subclass when it is raised.

:func:`unwrapped` lets what the body of an `open_*` context manager raised out of
its nursery as itself, not inside an ExceptionGroup.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from aura_trio.errors import StoreUnavailable


class TransportError(StoreUnavailable):
    """The connection to Redis could not be made or broke."""


class ReplyError(StoreUnavailable):
    """An error reply from Redis."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def code(self) -> str:
        return self.message.split(" ", 1)[0]


class ReadOnlyError(ReplyError):
    """`READONLY`: a write reached a replica."""


class NoScriptError(ReplyError):
    """`NOSCRIPT`: the server's script cache does not hold that SHA1."""


_SPECIFIC: dict[str, type[ReplyError]] = {"READONLY": ReadOnlyError, "NOSCRIPT": NoScriptError}


def specific(error: ReplyError) -> ReplyError:
    """`error` as its most specific class (hiredis only knows :class:`ReplyError`)."""
    cls = _SPECIFIC.get(error.code)
    if cls is None or type(error) is not ReplyError:
        return error
    return cls(error.message)


@contextmanager
def unwrapped() -> Iterator[None]:
    """Around a nursery whose tasks raise nothing but bugs: a lone exception coming
    out (the body's) leaves as itself, with its own cause and context."""
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) != 1:
            raise
        lone = group.exceptions[0]
        context, cause, suppress = lone.__context__, lone.__cause__, lone.__suppress_context__
        try:
            raise lone  # as itself, its cause and context put back below
        finally:
            lone.__context__, lone.__cause__ = context, cause
            lone.__suppress_context__ = suppress
