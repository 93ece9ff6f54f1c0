"""The real `aura-trio serve` command and redis-server as child processes of a test.

Started and stopped by `bench/harness.py`, the harness the bench uses too (its
docstring says how ports are found without a race). Async tests use the `async`
context managers here: the harness's blocking waits run in a worker thread, so the
test's Trio loop keeps running, and each process is stopped in `finally` (shielded
from the test's cancellation, bounded by the harness: SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import trio

from bench import harness
from bench.harness import RedisServer, ServerProcess

from .helpers import SECRET

__all__ = [
    "AOF",
    "RedisServer",
    "ServerProcess",
    "run_redis",
    "run_sentinel",
    "run_server",
    "serve",
    "stop",
]

# A Redis that keeps its data across SIGKILL.
AOF = ("--appendonly", "yes", "--appendfsync", "always")


def _command(args: tuple[str, ...]) -> list[str]:
    return [sys.executable, "-m", "aura_trio", "serve", "--host", "127.0.0.1", "--port", "0", *args]


def _env(env: Mapping[str, str] | None) -> dict[str, str]:
    return {**os.environ, "SECRET_KEY": SECRET, "AURA_EVENT_DELAY_SECONDS": "0", **(env or {})}


def _listeners(args: tuple[str, ...]) -> int:
    return int(args[args.index("--workers") + 1]) if "--workers" in args else 1


@contextmanager
def serve(
    tmp_path: Path, *args: str, env: Mapping[str, str] | None = None, name: str = "server"
) -> Iterator[ServerProcess]:
    """`aura-trio serve --host 127.0.0.1 --port 0 ...` for sync code (fixtures, sync tests)."""
    with harness.running_server(
        _command(args), env=_env(env), log_path=tmp_path / f"{name}.log", listeners=_listeners(args)
    ) as server:
        yield server


@asynccontextmanager
async def run_server(
    tmp_path: Path, *args: str, env: Mapping[str, str] | None = None, name: str = "server"
) -> AsyncIterator[ServerProcess]:
    """`aura-trio serve --host 127.0.0.1 --port 0 ...`, started once it listens (every
    worker, with `--workers N`); its port is the one it logged."""
    start = partial(
        harness.start_server,
        _command(args),
        env=_env(env),
        log_path=tmp_path / f"{name}.log",
        listeners=_listeners(args),
    )
    server = await trio.to_thread.run_sync(start)
    try:
        yield server
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(harness.stop_process, server.process)


async def stop(
    server: ServerProcess, sig: int = signal.SIGTERM, within: float = harness.STOP_SECONDS
) -> int:
    """Send `sig` and wait (in a thread) for the exit status; SIGKILL after `within` s."""
    return await trio.to_thread.run_sync(partial(server.stop, sig, within))


@asynccontextmanager
async def run_redis(
    directory: Path, *options: str, port: int | None = None
) -> AsyncIterator[RedisServer]:
    """A redis-server of the test's own (`port`: on that port, e.g. to restart one)."""
    server = await trio.to_thread.run_sync(
        partial(harness.start_redis, directory, *options, port=port)
    )
    try:
        yield server
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(server.stop)


@asynccontextmanager
async def run_sentinel(
    directory: Path, primary_port: int, *, port: int | None = None, **options: Any
) -> AsyncIterator[RedisServer]:
    """A redis-sentinel of the test's own, monitoring the primary on `primary_port`
    (`options`: of :func:`bench.harness.start_sentinel`)."""
    server = await trio.to_thread.run_sync(
        partial(harness.start_sentinel, directory, primary_port, port=port, **options)
    )
    try:
        yield server
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(server.stop)
