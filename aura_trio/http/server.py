"""Serving the app with Hypercorn's trio worker, with the bounds a stream server needs.

Like `hypercorn.trio.serve`, plus: a listen backlog sized for reconnect storms
(docs/design-notes.md#listen-backlog), a bound on every socket write so a client
that stops reading is dropped instead of holding its task forever
(docs/design-notes.md#bounded-socket-writes), `SO_REUSEPORT` for several worker
processes on one port, and an ordered shutdown: stop accepting,
let the app drain its streams, close idle connections, then the lifespan.

And cheaper per request than Hypercorn's own loop (docs/design-notes.md#where-http-cpu-goes):
keep-alive timers without a task per idle period (`keep_alive.py`), no cancel scope
per read, and a socket write that goes straight to the socket when it can.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import Awaitable, Callable
from functools import partial

import h11
import trio
from hypercorn.config import Config
from hypercorn.events import Closed, Event, RawData
from hypercorn.protocol import ProtocolWrapper
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.task_group import TaskGroup
from hypercorn.trio.tcp_server import MAX_RECV as _MAX_RECV
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import AppWrapper, ConnectionState, Framework
from hypercorn.utils import parse_socket_addr, repr_socket_addr, wrap_app

from ..api.envelope import HTTP_ERROR_CODES, envelope_error
from ..sessions.sse import to_json
from .acceptor import serve_sockets
from .keep_alive import IdleTimer, KeepAliveTimers
from .request_inbox import DirectTaskGroup

log = logging.getLogger(__name__)


class ServerConfig(Config):
    """Hypercorn's config, with its `date` and `server` response headers built once a
    second rather than for every response (formatting the date was ~1.5 % of a
    round trip's CPU)."""

    def __init__(self) -> None:
        super().__init__()
        self._headers_of_second: dict[str, tuple[int, list[tuple[bytes, bytes]]]] = {}

    def response_headers(self, protocol: str) -> list[tuple[bytes, bytes]]:
        if self.alt_svc_headers or self._quic_addresses:
            return super().response_headers(protocol)
        second = int(time.time())
        cached = self._headers_of_second.get(protocol)
        if cached is None or cached[0] != second:
            cached = (second, super().response_headers(protocol))
            self._headers_of_second[protocol] = cached
        return list(cached[1])


def make_config(
    *,
    host: str,
    port: int,
    backlog: int,
    keep_alive_seconds: float,
    reuse_port: bool,
    websocket_max_message_bytes: int = 16 * 1024 * 1024,
) -> Config:
    config = ServerConfig()
    # Hypercorn closes with 1009 past it (counting characters of a text message).
    config.websocket_max_message_size = websocket_max_message_bytes
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.backlog = backlog
    config.keep_alive_timeout = keep_alive_seconds
    config.workers = 2 if reuse_port else 1  # >1 is what turns SO_REUSEPORT on
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    return config


class SendBound:
    """The time limit on socket writes, kept by one watchdog task.

    A write still blocked `timeout` seconds after it began (or past `cap`, during a
    shutdown) has its connection closed, which ends the write. One task checking a
    table, rather than a deadline per write, keeps the hot path to a dict update.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.cap = math.inf
        self.writing: dict[trio.abc.AsyncResource, float] = {}
        self.dropped: set[trio.abc.AsyncResource] = set()
        self._tick = min(1.0, timeout / 4)
        self._hurried = trio.Event()

    async def watch(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Close connections whose write is overdue, until cancelled."""
        task_status.started()
        while True:
            with trio.move_on_after(self._tick):
                await self._hurried.wait()
            now = trio.current_time()
            for stream, started in list(self.writing.items()):
                if min(started + self.timeout, self.cap) <= now:
                    del self.writing[stream]
                    self.dropped.add(stream)
                    await stream.aclose()  # the blocked send_all raises ClosedResourceError

    def hurry(self, cap: float) -> None:
        """Let no write, running or future, go past `cap`."""
        self.cap = cap
        self._hurried.set()


class _EnvelopedErrorsH11Protocol(H11Protocol):
    """Hypercorn's HTTP/1.1 protocol, answering what h11 refuses before the app sees
    it (a request line or headers still incomplete past 16 KiB: 431; malformed: 400)
    in the contract's envelope instead of with an empty body.

    A response's head goes out with its first body bytes, in one write: a syscall
    and a TCP segment less per response. Every response of this app has its first
    body bytes ready when it starts (a JSON body; a stream's `: connected` frame,
    queued before its response starts), so the head waits one scheduler pass at most.
    """

    _head = b""

    async def _send_h11_event(
        self, event: h11.Data | h11.EndOfMessage | h11.InformationalResponse | h11.Response
    ) -> None:
        try:
            data = self.connection.send(event)
        except h11.LocalProtocolError:
            if self.connection.their_state != h11.ERROR:
                raise
            return
        if type(event) is h11.Response:
            self._head = data or b""
            return
        if self._head:
            data, self._head = self._head + (data or b""), b""
        await self.send(RawData(data=data))

    async def _send_error_response(self, status_code: int) -> None:
        message = "request line or headers too large" if status_code == 431 else "malformed request"
        body = to_json(envelope_error(message, HTTP_ERROR_CODES.get(status_code, "HTTP_ERROR")))
        headers = [
            (b"content-type", b"application/json; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            *self.config.response_headers("h11"),
        ]
        await self._send_h11_event(h11.Response(status_code=status_code, headers=headers))
        await self._send_h11_event(h11.Data(data=body))
        await self._send_h11_event(h11.EndOfMessage())


class _BoundedSendTCPServer(TCPServer):
    """Hypercorn's connection handler, with a time limit on each socket write.

    Hypercorn shields writes from cancellation, so without a limit a client that
    stops reading holds its connection, and a graceful shutdown, forever.

    Per request it also does less than Hypercorn's: its keep-alive timer is an
    entry in `timers` (no task started and cancelled per idle period), a write
    takes the send lock without a scheduler pass when nobody else holds it, goes
    to the socket at once when the socket takes it all (else it waits as trio's
    `send_all` does), and the empty write that ends a Content-Length body is skipped.
    """

    def __init__(self, bound: SendBound, timers: KeepAliveTimers, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self._bound = bound
        self._timers = timers
        self.idle_task = IdleTimer(timers, self)  # type: ignore[assignment]

    async def run(self) -> None:
        try:
            if isinstance(self.stream, trio.SSLStream):
                await super().run()
            else:
                await self._run_plain()
        finally:
            # Hypercorn's connection objects hold each other in a cycle (this object
            # → its protocol → our bound `protocol_send`): ~28 objects per connection
            # that only a full collection would free. Cut it: refcounting frees them
            # at once, and nothing of a connection waits for (or stalls) the collector.
            # Our keep-alive timer refers back to this object: the same cycle.
            self.__dict__.pop("protocol", None)
            self.__dict__.pop("_task_group", None)
            self.__dict__.pop("idle_task", None)

    async def _run_plain(self) -> None:
        """`TCPServer.run` for a plain socket, without its first step: a TLS handshake
        attempted in a `fail_after` on every connection, to find out from the
        AttributeError that the stream has no TLS."""
        sock = self.stream.socket
        try:
            client = parse_socket_addr(sock.family, sock.getpeername())
            server = parse_socket_addr(sock.family, sock.getsockname())
            async with TaskGroup() as task_group:
                self._task_group = task_group
                self.protocol = ProtocolWrapper(
                    self.app,
                    self.config,
                    self.context,
                    task_group,
                    ConnectionState(self.state),
                    False,
                    client,
                    server,
                    self.protocol_send,
                    "http/1.1",
                )
                await self.protocol.initiate()
                await self.idle_task.restart(self._task_group, self._idle_timeout)
                await self._read_data()
        except OSError:
            pass
        finally:
            await self._close()

    async def _read_data(self) -> None:
        if type(self.protocol.protocol) is H11Protocol:  # built by TCPServer.run just now
            self.protocol.protocol.__class__ = _EnvelopedErrorsH11Protocol
        if type(self._task_group) is TaskGroup:  # the same: no app spawned yet
            self._task_group.__class__ = DirectTaskGroup
        # Hypercorn's loop, without a cancel scope around every read when there is no
        # read timeout (there is none here: idle connections have the keep-alive timer).
        if self.config.read_timeout is not None:
            await super()._read_data()
        else:
            fresh = True  # just started: its first read needs no scheduler pass of its own
            while True:
                try:
                    data = await _receive(self.stream, yield_if_ready=not fresh)
                    fresh = False
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    break
                await self.protocol.handle(RawData(data))
                if not data:
                    break
            await self.protocol.handle(Closed())
        # The client is gone (or we closed): the keep-alive timer has nothing left to
        # wait for. Hypercorn leaves it running, holding the connection for up to
        # keep_alive_timeout after every disconnect.
        await self.idle_task.stop()

    async def _close(self) -> None:
        self._timers.went_busy(self)
        if not isinstance(self.stream, trio.SocketStream):
            await super()._close()
            return
        # Hypercorn's `send_eof` then `aclose`, without their two scheduler passes:
        # the connection's tasks are all done, nothing else writes to it.
        sock = self.stream.socket
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the client is already gone
        sock.close()

    async def protocol_send(self, event: Event) -> None:
        if not isinstance(event, RawData):
            await super().protocol_send(event)
            return
        data = event.data
        if not data:
            return  # h11's end of a Content-Length body: nothing to write
        stream = self.stream
        writing = self._bound.writing
        lock = self.send_lock
        try:
            lock.acquire_nowait()
        except trio.WouldBlock:
            await lock.acquire()
        try:
            writing[stream] = trio.current_time()
            try:
                sent = _write_now(stream, data)
                if sent < len(data):
                    with trio.CancelScope(shield=True):
                        await stream.send_all(memoryview(data)[sent:] if sent else data)
                return
            except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError):
                # Busy: Hypercorn's read task is already closing the connection (it
                # saw the client's next request after our `Connection: close`).
                if stream in self._bound.dropped:
                    self._bound.dropped.discard(stream)
                    log.info("dropped a client that accepted no bytes in time")
            finally:
                writing.pop(stream, None)
        finally:
            lock.release()
        await self.protocol.handle(Closed())


def _write_now(stream: trio.abc.Stream, data: bytes) -> int:
    """Write what the socket takes right now, without a scheduler pass; 0 when it
    takes nothing, or on any error: then `send_all` writes the rest, and raises
    trio's own error for a broken or closed socket."""
    sock = getattr(stream, "socket", None)
    if sock is None:
        return 0
    try:
        return os.write(sock.fileno(), data)
    except OSError:
        return 0


async def _receive(stream: trio.abc.Stream, *, yield_if_ready: bool = True) -> bytes:
    """`stream.receive_some(MAX_RECV)`, waiting on the socket itself: a connection
    waiting for bytes (every open stream, all its life) holds 3 coroutines instead of
    trio's 11 (its stream, socket and error-translating layers: ~2.5 KB).

    Bytes already there are returned after a scheduler pass, as trio's own read
    does, unless `yield_if_ready` is false (a task that has only just started)."""
    sock = getattr(stream, "socket", None)
    if sock is None:
        return bytes(await stream.receive_some(_MAX_RECV))
    await trio.lowlevel.checkpoint_if_cancelled()
    waited = False
    while True:
        fd = sock.fileno()
        if fd < 0:
            raise trio.ClosedResourceError("the connection was closed")
        try:
            data = os.read(fd, _MAX_RECV)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(fd)
            waited = True
            continue
        except OSError as error:
            raise trio.BrokenResourceError(f"the connection broke: {error}") from error
        if not waited and yield_if_ready:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return data


async def serve(
    app: Framework,
    config: Config,
    *,
    send_bound: SendBound,
    shutdown_trigger: Callable[[], Awaitable[None]],
    drain: Callable[[], Awaitable[None]] | None = None,
    sockets: list[socket.socket] | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` until `shutdown_trigger` returns, then shut down in order.

    `started()` returns the bound addresses (`http://host:port`) once the lifespan
    has started and the sockets listen. On shutdown: accepting stops, `drain()`
    runs (the app ends its streams), idle keep-alive connections are closed,
    connections still open after `config.graceful_timeout` are cancelled, and the
    app's lifespan shuts down.
    """
    wrapped: AppWrapper = wrap_app(app, config.wsgi_max_body_size, "asgi")
    lifespan_state: dict[str, object] = {}
    lifespan = Lifespan(wrapped, config, lifespan_state)
    context = WorkerContext(None)
    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        if sockets is None:
            sockets = config.create_sockets().insecure_sockets
            for sock in sockets:
                sock.listen(config.backlog)
        binds = [f"http://{repr_socket_addr(s.family, s.getsockname())}" for s in sockets]
        timers = KeepAliveTimers(config.keep_alive_timeout)
        handler = partial(
            _BoundedSendTCPServer,
            send_bound,
            timers,
            wrapped,
            config,
            context,
            ConnectionState(lifespan_state.copy()),
        )
        await lifespan_nursery.start(send_bound.watch)
        await lifespan_nursery.start(timers.watch)
        async with trio.open_nursery() as connections:
            async with trio.open_nursery() as acceptors:
                await acceptors.start(serve_sockets, handler, sockets, connections)
                task_status.started(binds)
                await shutdown_trigger()
                acceptors.cancel_scope.cancel()
            for sock in sockets:
                sock.close()
            if drain is not None:
                await drain()
            await context.terminated.set()
            timers.close_all()
            deadline = trio.current_time() + config.graceful_timeout
            send_bound.hurry(deadline)
            connections.cancel_scope.deadline = deadline
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()
