"""The Redis command client: a fixed few pipelined connections, whatever the callers.

    async with open_redis_client("redis://127.0.0.1:6379/0", timeout=3.0) as redis:
        await redis.execute("SET", "k", b"v", "EX", 60)
        value = await redis.execute("GET", "k")
        await redis.transaction([("SET", "a", 1), ("SADD", "s", "a")])
        await redis.run_script(CAS, keys=["k"], args=[b"old", b"new"])

Each of the `connections` (default 2) is kept open by a task of the client's
nursery, which reconnects with backoff (50 ms doubling to 2 s; at once after a
connection that had been up for a second) and asks the locator for the address at
every attempt. A call joins a write being gathered on an open connection (the
callers of one scheduler pass share one write and one read: the CPU per command
drops with their number), else goes to the one with the fewest outstanding
commands. While none is open and the last attempt failed, calls fail at once with
:class:`TransportError`; only before the first attempt has finished do they wait.

Every call is bounded by the client's `timeout`: a connection whose oldest
outstanding reply is overdue by `timeout` is presumed dead, closed, and every
caller on it fails at once with :class:`TransportError` (it is then reconnected).
That one deadline per connection bounds every call queued on it (a command is
written at once, or behind a write whose commands have earlier deadlines), so no
call pays for a cancel scope of its own: in Trio one costs more than the rest of a
call. Waiting for a connection is bounded by `timeout` as well. A caller wanting a
tighter bound puts the call in a cancel scope of its own, which is always safe (a
cancelled command is either never sent, or its reply is read and dropped); one
wanting a longer bound needs another client. A caller that fails with
TransportError after its command was written cannot know whether it took effect.

Replies come as hiredis gives them: bytes, int, None, lists; error replies are
raised as :class:`ReplyError` (:class:`ReadOnlyError` for `READONLY`). A `READONLY`
reply also means the connections are on a replica (a primary demoted under them):
all are closed and opened again on the address the locator then gives.

The connections are shared: commands must be one request, one reply, and leave
the connection as they found it. Not through :meth:`RedisClient.execute`:
SUBSCRIBE and MONITOR (use :func:`aura_trio.bus.subscriber.serve_subscriber`),
SELECT, AUTH, CLIENT REPLY, MULTI/WATCH by hand (use
:meth:`RedisClient.transaction`), and commands that block (WAIT, BLPOP: use
:meth:`RedisClient.dedicated`, or :meth:`RedisClient.lend` for a pooled one).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

from aura_trio.errors import StoreUnavailable

from .address import AddressLike, Locator, as_locator
from .connection import Connection, Stats, serving
from .dial import Arg, Backoff, dial_located, pack
from .errors import NoScriptError, ReplyError, TransportError, specific, unwrapped

_MULTI = pack(("MULTI",))
_EXEC = pack(("EXEC",))
# A connection that stayed up this long is opened again at once when it breaks.
_STABLE_SECONDS = 1.0
_READONLY = b"READONLY"


class Script:
    """A Lua script, run with EVALSHA (EVAL when the server's cache lacks it)."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str | bytes) -> None:
        self.source = source.encode() if isinstance(source, str) else source
        self.sha = hashlib.sha1(self.source).hexdigest()


class RedisClient:
    """Commands over a fixed set of connections; made by :func:`open_redis_client`."""

    def __init__(
        self, locator: Locator, *, timeout: float, connect_timeout: float, lendable: int = 4
    ) -> None:
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.stats = Stats()
        self._locate = locator
        self._live: list[Connection] = []
        self._idle: list[Connection] = []  # lendable connections not lent now
        self._lendable = trio.Semaphore(lendable)
        self._nursery: trio.Nursery | None = None
        self._last_error: str | None = None
        self._changed = trio.Event()
        self._closed = False

    @property
    def connected(self) -> bool:
        """At least one connection is open."""
        return self._pick() is not None

    @property
    def last_error(self) -> str | None:
        """Why the last attempt to connect failed, or the last connection broke, when
        none is open; else None."""
        return None if self.connected else self._last_error

    async def execute(self, *args: Arg) -> Any:
        """Run one command and return its reply.

        Raises:
            ReplyError: Redis answered with an error (ReadOnlyError for READONLY).
            TransportError: no connection, it broke, or no reply within `timeout`.
        """
        return _checked(await self._call(pack(args), 1))

    async def transaction(
        self, commands: Sequence[Sequence[Arg]], *, raise_on_error: bool = True
    ) -> list[Any]:
        """Run `commands` in MULTI/EXEC and return EXEC's list of replies.

        MULTI, the commands and EXEC are written as one contiguous chunk on one
        connection: no other caller's command comes between them.

        Raises:
            ReplyError: a command was refused when queued (then nothing ran), or
                with `raise_on_error`, the first error among EXEC's replies (the
                other commands did run: Redis has no rollback).
            TransportError: as for :meth:`execute`.
        """
        packed = b"".join([_MULTI, *(pack(tuple(command)) for command in commands), _EXEC])
        replies = await self._call(packed, len(commands) + 2)
        for reply in replies:
            _checked(reply)
        result = replies[-1]
        if not isinstance(result, list):
            raise TransportError(f"EXEC answered {result!r}")
        if raise_on_error:
            for reply in result:
                _checked(reply)
        return result

    async def run_script(
        self, script: Script, *, keys: Sequence[Arg] = (), args: Sequence[Arg] = ()
    ) -> Any:
        """EVALSHA the script; if the server's cache lacks it (NOSCRIPT: a restarted
        or flushed Redis), EVAL it, which caches it again."""
        try:
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self.execute("EVAL", script.source, len(keys), *keys, *args)

    @asynccontextmanager
    async def dedicated(self) -> AsyncIterator[Dedicated]:
        """A short-lived connection of its own, closed on leaving.

        For commands that block the connection they run on (`WAIT numreplicas
        timeout`): on a shared connection they would hold up the replies of every
        caller behind them. It is opened on the locator's current address, outside
        the fixed set, with the client's timeouts: a blocking command must give up
        well within `timeout`.

        Raises:
            StoreUnavailable: it could not be opened (TransportError, or the
                locator's own error).
        """
        try:
            with trio.fail_after(self.connect_timeout):
                address, stream, parser = await dial_located(self._locate)
        except trio.TooSlowError:
            raise TransportError(f"no connection within {self.connect_timeout:g} s") from None
        connection = Connection(
            stream, parser, where=address.describe(), reply_timeout=self.timeout, stats=self.stats
        )
        async with serving(connection):
            yield Dedicated(connection)

    @asynccontextmanager
    async def lend(self) -> AsyncIterator[Connection]:
        """A pooled connection, the caller's alone while inside.

        For a command that blocks its connection and covers the connection's
        earlier writes (`WAIT`): written with its write as one chunk on a lent
        connection, it holds up no other caller. At most `lendable` (4) are lent at
        once; the others wait, bounded by `timeout`. One that broke, or is left
        with a reply outstanding (its caller was cancelled), is closed, not
        pooled again; a new one is opened on the locator's current address.

        Raises:
            StoreUnavailable: none free within `timeout`, or one could not be
                opened (TransportError, or the locator's own error).
        """
        acquired = False
        with trio.move_on_after(self.timeout):
            await self._lendable.acquire()
            acquired = True
        if not acquired:
            raise TransportError(f"no connection free to lend within {self.timeout:g} s")
        try:
            connection = await self._lent_connection()
            try:
                yield connection
            finally:
                if connection.error is None and connection.pending == 0 and not self._closed:
                    self._idle.append(connection)
                else:
                    connection.close(f"lent connection to {connection.where} closed")
        finally:
            self._lendable.release()

    async def _lent_connection(self) -> Connection:
        while self._idle:
            connection = self._idle.pop()
            if connection.error is None:
                return connection
        if self._nursery is None or self._closed:
            raise TransportError("the Redis client is closed")
        try:
            with trio.fail_after(self.connect_timeout):
                address, stream, parser = await dial_located(self._locate)
        except trio.TooSlowError:
            raise TransportError(f"no connection within {self.connect_timeout:g} s") from None
        connection = Connection(
            stream, parser, where=address.describe(), reply_timeout=self.timeout, stats=self.stats
        )
        self.stats.connects += 1
        self._nursery.start_soon(connection.serve)
        return connection

    def reconnect(self, reason: str) -> None:
        """Close every open connection: callers waiting on them fail with
        TransportError(`reason`), and each is opened again on the address the
        locator then gives (at once if it had been up a second, else after the
        backoff). For a caller that learnt the address is stale, e.g. from a
        ReadOnlyError: the connection is on a replica."""
        for connection in [*self._live, *self._idle]:
            connection.close(reason)
        self._idle.clear()

    def check_role(self, connection: Connection, reply: Any) -> None:
        """After `reply` came on `connection`: if it (or one of a pipeline's
        replies) is `READONLY`, the connections are on a replica: reconnect all."""
        replies = reply if isinstance(reply, list) else (reply,)
        for item in replies:
            if isinstance(item, ReplyError) and item.code == "READONLY":
                self.reconnect(f"{connection.where} answered READONLY: it is a replica now")
                return

    async def _call(self, packed: bytes, expected: int) -> Any:
        # No cancel scope per call (one costs more than the rest of a call): once
        # queued on a connection, its watchdog bounds the wait (see the module doc).
        connection = self._pick()
        if connection is None:
            with trio.move_on_after(self.timeout):
                connection = await self._wait_for_connection()
            if connection is None:
                raise TransportError(f"no Redis connection within {self.timeout:g} s")
        reply = await connection.call(packed, expected)
        if expected > 1 or isinstance(reply, ReplyError):
            self.check_role(connection, reply)
        return reply

    def _pick(self) -> Connection | None:
        # A write gathering commands takes this one too: the callers of one scheduler
        # pass share one write and one read. Else the least busy connection.
        best = None
        for connection in self._live:
            if connection.error is None:
                if connection.gathering:
                    return connection
                if best is None or connection.pending < best.pending:
                    best = connection
        return best

    async def _wait_for_connection(self) -> Connection:
        while True:
            connection = self._pick()
            if connection is not None:
                return connection
            if self._closed:
                raise TransportError("the Redis client is closed")
            if self._last_error is not None:
                raise TransportError(self._last_error)
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _keep_connected(self) -> None:
        """One of the fixed connections: open it, serve it, open it again."""
        backoff = Backoff()
        while True:
            try:
                with trio.fail_after(self.connect_timeout):
                    address, stream, parser = await dial_located(self._locate)
            except (StoreUnavailable, trio.TooSlowError) as error:
                self.stats.connect_failures += 1
                self._last_error = (
                    f"no Redis connection within {self.connect_timeout:g} s"
                    if isinstance(error, trio.TooSlowError)
                    else str(error)
                )
                self._notify()
                await trio.sleep(backoff.next())
                continue
            connection = Connection(
                stream,
                parser,
                where=address.describe(),
                reply_timeout=self.timeout,
                stats=self.stats,
            )
            self.stats.connects += 1
            self._live.append(connection)
            self._last_error = None
            self._notify()
            try:
                await connection.serve()
            finally:
                self._live.remove(connection)
                self._last_error = connection.error
            if trio.current_time() - connection.opened_at >= _STABLE_SECONDS:
                backoff.reset()
            else:
                await trio.sleep(backoff.next())

    def _close(self) -> None:
        self._closed = True
        self._notify()


class Dedicated:
    """A connection lent to one task by :meth:`RedisClient.dedicated`."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    async def execute(self, *args: Arg) -> Any:
        """As :meth:`RedisClient.execute`, on this connection."""
        return _checked(await self._connection.call(pack(args), 1))


def _checked(reply: Any) -> Any:
    if isinstance(reply, ReplyError):
        raise specific(reply)
    return reply


@asynccontextmanager
async def open_redis_client(
    address: AddressLike,
    *,
    connections: int = 2,
    # Settings of the client, for every call it will serve: not bounds on opening it.
    timeout: float = 3.0,  # noqa: ASYNC109
    connect_timeout: float | None = None,
) -> AsyncIterator[RedisClient]:
    """A client whose `connections` are kept open by tasks of its own nursery.

    `address`: a URL, a :class:`RedisAddress`, or a locator (asked at every
    connection attempt). `timeout`: the bound of every call, and how long a written
    command may wait for its reply before its connection is presumed dead.
    `connect_timeout` (default `timeout`): of one connection attempt, locator,
    TLS and AUTH/SELECT included. Opening does not wait for a connection. Leaving
    (or cancelling) closes every connection; callers still waiting get
    TransportError.
    """
    if connections < 1:
        raise ValueError("connections must be at least 1")
    client = RedisClient(
        as_locator(address), timeout=timeout, connect_timeout=connect_timeout or timeout
    )
    with unwrapped():
        async with trio.open_nursery() as nursery:
            client._nursery = nursery
            for _ in range(connections):
                nursery.start_soon(client._keep_connected)
            try:
                yield client
            finally:
                client._close()
                nursery.cancel_scope.cancel()
