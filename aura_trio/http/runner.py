"""Running one server process: the app on Hypercorn until a signal stops it."""

from __future__ import annotations

import logging
import signal
import socket
from collections.abc import Awaitable, Callable
from functools import partial

import trio
from quart_trio import QuartTrio

from ..app import state_of
from ..collector import keep_collections_short
from ..sessions.ws_protocol import MAX_MESSAGE_BYTES
from .server import SendBound, make_config, serve

log = logging.getLogger(__name__)

# Of the shutdown grace, what is kept back for closing connections and the lifespan.
_CLOSE_RESERVE_SECONDS = 1.5
_CONNECTION_GRACE_SECONDS = 1.0


async def serve_until_signal(
    app: QuartTrio, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
) -> None:
    """:func:`serve_app` until SIGTERM or SIGINT (main thread only).

    The signal handlers stay installed until the shutdown is over, so a second
    signal (a terminal sends SIGINT to the whole process group) cannot cut it short;
    after it, both signals are ignored while the process exits.
    """
    stop = trio.Event()

    async def stop_on_signal() -> None:
        # What the receiver restores when the shutdown is over: a signal that comes
        # while the process exits (a supervisor's second SIGTERM) must not turn a
        # clean exit into death by signal.
        for stopping in (signal.SIGTERM, signal.SIGINT):
            signal.signal(stopping, signal.SIG_IGN)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                if not stop.is_set():
                    log.info("received %s: shutting down", signal.Signals(signum).name)
                stop.set()

    freeze_every = state_of(app).settings.gc_freeze_seconds
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stop_on_signal)
        if freeze_every > 0:
            nursery.start_soon(keep_collections_short, freeze_every)
        await serve_app(app, shutdown_trigger=stop.wait, task_status=task_status)
        nursery.cancel_scope.cancel()


async def serve_app(
    app: QuartTrio,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]],
    sockets: list[socket.socket] | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve an app from :func:`create_app` until `shutdown_trigger` returns.

    `started()` returns the bound addresses. Shutdown ends every stream with
    `ServerShutdown` within the settings' shutdown grace.
    """
    state = state_of(app)
    settings = state.settings
    config = make_config(
        host=settings.host,
        port=settings.port,
        backlog=settings.listen_backlog,
        keep_alive_seconds=settings.keep_alive_seconds,
        reuse_port=settings.workers > 1,
        websocket_max_message_bytes=MAX_MESSAGE_BYTES,
    )
    config.graceful_timeout = _CONNECTION_GRACE_SECONDS
    drain_within = max(0.1, settings.shutdown_grace_seconds - _CLOSE_RESERVE_SECONDS)
    await serve(
        app,
        config,
        send_bound=SendBound(settings.send_timeout_seconds),
        shutdown_trigger=shutdown_trigger,
        drain=partial(state.drain, drain_within),
        sockets=sockets,
        task_status=task_status,
    )
