"""Accepting connections: `trio.serve_listeners` without its scheduler passes.

Trio's loop takes a scheduler pass for every `accept` that succeeds, and its
handler's end closes the stream with `aclose_forcefully`, two passes more (one of
them raising `Cancelled`). A round trip opens and closes a connection, so that was
3 of its ~32 passes. Here a listener accepts all it can before it waits, yielding
every `_BURST` connections so a reconnect storm does not hold the scheduler, and a
connection's socket is closed synchronously when its handler returns.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Awaitable, Callable

import trio

log = logging.getLogger(__name__)

# What `accept` fails with when the process or the machine is out of descriptors or
# memory: the listener keeps the connection queued, and retries in a moment
# (trio.serve_listeners does the same).
_OUT_OF_CAPACITY = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
_CAPACITY_RETRY_SECONDS = 0.1
_BURST = 64

Handler = Callable[[trio.SocketStream], Awaitable[object]]


async def serve_sockets(
    handler: Handler,
    sockets: list[socket.socket],
    connections: trio.Nursery,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept on every listening socket until cancelled, running `handler(stream)`
    in `connections` for each connection, then closing its socket."""
    async with trio.open_nursery() as nursery:
        for sock in sockets:
            sock.setblocking(False)
            nursery.start_soon(_accept_forever, sock, handler, connections)
        task_status.started()


async def _accept_forever(
    listener: socket.socket, handler: Handler, connections: trio.Nursery
) -> None:
    accepted = 0
    while True:
        try:
            sock, _ = listener.accept()
        except BlockingIOError:
            accepted = 0
            await trio.lowlevel.wait_readable(listener)
            continue
        except OSError as error:
            if error.errno not in _OUT_OF_CAPACITY:
                raise
            log.error(
                "accept failed: %s; retrying in %s s",
                errno.errorcode[error.errno],
                _CAPACITY_RETRY_SECONDS,
            )
            await trio.sleep(_CAPACITY_RETRY_SECONDS)
            continue
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        connections.start_soon(_run_handler, handler, stream)
        accepted += 1
        if accepted % _BURST == 0:
            await trio.lowlevel.checkpoint()


async def _run_handler(handler: Handler, stream: trio.SocketStream) -> None:
    try:
        await handler(stream)
    finally:
        stream.socket.close()  # trio's close: tells any task still waiting on it
