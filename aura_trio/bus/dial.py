"""Opening a connection to Redis: the stream, the session, and the pace of attempts.

:func:`dial` opens the stream (TCP, unix socket, or TLS with `trio.SSLStream`) and
the session in RESP2, without HELLO: `AUTH`, `SELECT`, `CLIENT SETNAME` as the
address says, then `PING`, so a connection counts as up only once the server
answered; for an address that must be a primary (Sentinel's), `ROLE` too, and a
connection that finds a replica there fails. Commands are packed and replies parsed by hiredis.
"""

from __future__ import annotations

import random
import ssl
from typing import Any

import hiredis
import trio

from .address import Locator, RedisAddress
from .errors import ReplyError, TransportError

Arg = bytes | str | int | float
RECEIVE_SIZE = 65536

# What a broken connection raises somewhere in Trio, the ssl module or hiredis.
BROKEN = (OSError, trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError)

MORE = object()  # what hiredis's gets() returns when no whole reply is buffered yet


def new_parser() -> hiredis.Reader:
    """A RESP reader: bytes stay bytes; error replies become :class:`ReplyError` values;
    what is not RESP raises :class:`TransportError`."""
    return hiredis.Reader(protocolError=TransportError, replyError=ReplyError, notEnoughData=MORE)


def pack(args: tuple[Arg, ...]) -> bytes:
    """One command in RESP (hiredis); raises TypeError for an argument of another type."""
    packed: bytes = hiredis.pack_command(args)  # type: ignore[arg-type]
    return packed


class Backoff:
    """Delays between reconnect attempts: `first` doubling up to `cap`, a little jittered."""

    def __init__(self, first: float = 0.05, cap: float = 2.0) -> None:
        self._first = first
        self._cap = cap
        self._delay = first

    def next(self) -> float:
        delay = self._delay
        self._delay = min(self._cap, delay * 2)
        return delay * random.uniform(0.8, 1.0)

    def reset(self) -> None:
        self._delay = self._first


def describe_error(error: BaseException) -> str:
    """`Type: message` of a transport failure (a BrokenResourceError's cause, if any)."""
    cause = error.__cause__ or error.__context__
    if isinstance(error, trio.BrokenResourceError) and cause is not None:
        error = cause
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


async def dial(address: RedisAddress) -> tuple[trio.abc.Stream, hiredis.Reader]:
    """Open a stream to `address` and its session (AUTH, SELECT, CLIENT SETNAME, PING).

    Unbounded: the caller puts it in a cancel scope (a cancelled dial leaves
    nothing open).

    Raises:
        TransportError: refused, unreachable, TLS failure, or the server refused
        AUTH or SELECT (the reply's text is in the message).
    """
    where = address.describe()
    try:
        stream = await _open_stream(address)
    except BROKEN as error:
        raise TransportError(f"cannot connect to {where}: {describe_error(error)}") from None
    try:
        return stream, await _open_session(stream, address)
    except BaseException as error:
        await trio.aclose_forcefully(stream)
        if isinstance(error, BROKEN):
            raise TransportError(f"cannot connect to {where}: {describe_error(error)}") from None
        raise


async def dial_located(locator: Locator) -> tuple[RedisAddress, trio.abc.Stream, hiredis.Reader]:
    """:func:`dial` the address `locator` gives now; unbounded as well.

    Raises:
        StoreUnavailable: the locator's failure, or TransportError as for dial.
    """
    address = await locator()
    stream, parser = await dial(address)
    return address, stream, parser


async def _open_stream(address: RedisAddress) -> trio.abc.Stream:
    if address.path is not None:
        return await trio.open_unix_socket(address.path)
    stream = await trio.open_tcp_stream(address.host, address.port)
    if address.tls is None:
        return stream
    try:
        tls = trio.SSLStream(stream, address.tls.context(), server_hostname=address.host)
        await tls.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return tls


async def exchange(
    stream: trio.abc.Stream, parser: hiredis.Reader, commands: list[tuple[Arg, ...]], where: str
) -> list[Any]:
    """Send `commands` in one write and read their replies (error replies as values).

    Raises:
        TransportError: the stream closed, or more replies came than were asked for.
        BROKEN: the stream broke.
    """
    await stream.send_all(b"".join(pack(command) for command in commands))
    replies: list[Any] = []
    while len(replies) < len(commands):
        data = await stream.receive_some(RECEIVE_SIZE)
        if not data:
            raise TransportError(f"{where} closed the connection at once")
        parser.feed(data)  # type: ignore[arg-type]  # any buffer will do
        while (reply := parser.gets()) is not MORE:
            replies.append(reply)
    if len(replies) > len(commands):
        raise TransportError(f"{where} sent replies nobody asked for")
    return replies


async def _open_session(stream: trio.abc.Stream, address: RedisAddress) -> hiredis.Reader:
    commands: list[tuple[Arg, ...]] = []
    if address.password is not None:
        if address.username:
            commands.append(("AUTH", address.username, address.password))
        else:
            commands.append(("AUTH", address.password))
    if address.db:
        commands.append(("SELECT", address.db))
    if address.client_name:
        commands.append(("CLIENT", "SETNAME", address.client_name))
    if address.primary_only:
        commands.append(("ROLE",))
    commands.append(("PING",))
    parser = new_parser()
    replies = await exchange(stream, parser, commands, address.describe())
    for command, reply in zip(commands, replies, strict=True):
        if isinstance(reply, ReplyError):
            raise TransportError(
                f"{address.describe()} refused {command[0]!s}"
                f"{' ' + str(command[1]) if command[0] == 'SELECT' else ''}: {reply.message}"
            )
        if command[0] == "ROLE" and not (isinstance(reply, list) and reply[:1] == [b"master"]):
            role = reply[0] if isinstance(reply, list) and reply else b"?"
            name = "replica" if role == b"slave" else role.decode(errors="replace")
            raise TransportError(f"{address.describe()} is a {name}, not the primary")
    return parser
