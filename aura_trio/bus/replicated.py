"""Writes that return only once `WAIT` confirms them on `replicas` replicas.

`WAIT n timeout` blocks the connection it runs on until the connection's earlier
writes reached `n` replicas, or `timeout` passed. On a shared pipelined connection
it would hold up every other caller's replies behind it: one slow replica, and
every session's reads wait. So the write and its `WAIT` go as one chunk on a
connection lent to this caller alone (:meth:`RedisClient.lend`, a pool of a few):
one round trip, and the `WAIT` covers exactly this write (a lent connection
carries nothing else). A replica that is slow or dead delays only the durable
writes, each by at most the wait's timeout; everything else keeps its shared
connections.

With `replicas=0` the writes go on the shared connections, without `WAIT`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .client import RedisClient, Script
from .dial import Arg, pack
from .errors import NoScriptError, ReplyError, TransportError, specific

_MULTI = pack(("MULTI",))
_EXEC = pack(("EXEC",))


class NotReplicatedError(TransportError):
    """`WAIT` timed out: the write is on the primary, not yet on enough replicas,
    and may be lost if the primary fails now (it may also survive)."""


class Replicated:
    """Durable writes through `client`: confirmed on `replicas` replicas.

    `wait_timeout`: the `WAIT`'s own bound, in seconds; keep it well under the
    client's timeout (the connection's reply deadline).
    """

    def __init__(self, client: RedisClient, *, replicas: int, wait_timeout: float) -> None:
        if replicas < 0:
            raise ValueError("replicas must be >= 0")
        self.replicas = replicas
        self._client = client
        self._wait = pack(("WAIT", replicas, max(1, round(wait_timeout * 1000))))
        self._wait_timeout = wait_timeout

    async def transaction(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        """As :meth:`RedisClient.transaction` (raising on the first error), confirmed.

        Raises:
            NotReplicatedError: the transaction ran, but `WAIT` timed out.
            ReplyError, TransportError: as for RedisClient.transaction.
        """
        if self.replicas == 0:
            return await self._client.transaction(commands)
        packed = b"".join([_MULTI, *(pack(tuple(command)) for command in commands), _EXEC])
        replies = await self._confirmed(packed, len(commands) + 2)
        for reply in replies:
            _checked(reply)
        result = replies[-1]
        if not isinstance(result, list):
            raise TransportError(f"EXEC answered {result!r}")
        for reply in result:
            _checked(reply)
        return result

    async def run_script(
        self, script: Script, *, keys: Sequence[Arg] = (), args: Sequence[Arg] = ()
    ) -> Any:
        """As :meth:`RedisClient.run_script`, confirmed.

        Raises:
            NotReplicatedError: the script ran, but `WAIT` timed out.
        """
        if self.replicas == 0:
            return await self._client.run_script(script, keys=keys, args=args)
        try:
            [reply] = await self._confirmed(
                pack(("EVALSHA", script.sha, len(keys), *keys, *args)), 1
            )
            return _checked(reply)
        except NoScriptError:
            [reply] = await self._confirmed(
                pack(("EVAL", script.source, len(keys), *keys, *args)), 1
            )
            return _checked(reply)

    async def _confirmed(self, packed: bytes, expected: int) -> list[Any]:
        """The replies of `packed`'s commands, once `WAIT` confirmed them."""
        async with self._client.lend() as connection:
            replies = await connection.call(packed + self._wait, expected + 1)
        self._client.check_role(connection, replies)
        *replies, acked = replies
        if any(isinstance(reply, ReplyError) for reply in replies):
            return list(replies)  # the write's own error (READONLY, ...) comes first
        if isinstance(acked, ReplyError):
            raise specific(acked)
        if acked < self.replicas:
            raise NotReplicatedError(
                f"the write reached {acked} of {self.replicas} replicas within "
                f"{self._wait_timeout:g} s (WAIT): on the primary only"
            )
        return list(replies)


def _checked(reply: Any) -> Any:
    if isinstance(reply, ReplyError):
        raise specific(reply)
    return reply
