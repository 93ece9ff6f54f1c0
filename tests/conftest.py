"""Shared fixtures and the time-limit hook; helpers live in `helpers.py` and
`processes.py` (no test module imports this file).

Rules for every network test: loopback only, servers on port 0, a real
Redis-protocol server started here (through `bench/harness.py`), a real server over
TCP, and a `trio.fail_after` bound on every async test: TEST_SECONDS (60 s) unless
the test is marked `time_limit(seconds)` (hook below; pytest-timeout misbehaves with
Trio: docs/design-notes.md#test-time-limits-without-pytest-timeout). Sync tests are
bounded by their own timeouts (sockets, `subprocess.run(timeout=...)`).
"""

from __future__ import annotations

import inspect
import tempfile
from collections.abc import AsyncIterator, Iterator
from functools import wraps
from pathlib import Path
from typing import Any

import pytest
import redis
import trio

from aura_trio import Settings, create_app, serve_app, state_of
from aura_trio.agents import Agent
from bench import harness
from bench.harness import RedisServer

from .helpers import SECRET, Aura, StartServer

TEST_SECONDS = 60


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    # Before pytest-trio's own wrapper of this hook replaces the coroutine function
    # by its runner (by pytest_pyfunc_call it is too late to see a coroutine).
    if isinstance(item, pytest.Function):
        bound_async_test(item)
    yield


def bound_async_test(pyfuncitem: pytest.Function) -> None:
    function = pyfuncitem.obj
    if inspect.iscoroutinefunction(function) and not getattr(function, "_bounded", False):
        limit = pyfuncitem.get_closest_marker("time_limit")
        seconds = limit.args[0] if limit else TEST_SECONDS

        @wraps(function)
        async def bounded(*args: Any, **kwargs: Any) -> Any:
            with trio.fail_after(seconds):
                return await function(*args, **kwargs)

        bounded._bounded = True  # type: ignore[attr-defined]
        pyfuncitem.obj = bounded


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the whole run (sync: Trio fixtures are function-scoped)."""
    with (
        tempfile.TemporaryDirectory(prefix="aura-test-redis-") as directory,
        harness.running_redis(Path(directory)) as server,
    ):
        yield server


@pytest.fixture
def raw_redis(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A plain client on the session's Redis, emptied for this test."""
    client = redis_server.client()
    client.flushall()
    yield client
    client.close()


def make_settings(*, redis_url: str, **overrides: Any) -> Settings:
    base = Settings(
        host="127.0.0.1",
        port=0,
        redis_url=redis_url,
        secret=SECRET,
        heartbeat_seconds=15.0,
        event_delay_seconds=0.0,
        hitl_timeout_seconds=20.0,
        signal_poll_seconds=30.0,
        shutdown_grace_seconds=3.0,
        keep_alive_seconds=5.0,
    )
    return base.replace(**overrides)


@pytest.fixture
async def start_server(
    raw_redis: redis.Redis, redis_server: RedisServer
) -> AsyncIterator[StartServer]:
    """Start servers (in this process, on real TCP ports); all stop gracefully at teardown."""
    stops: list[trio.Event] = []
    with trio.fail_after(3600) as teardown:
        async with trio.open_nursery() as nursery:

            async def start(*, agent: Agent | None = None, **overrides: Any) -> Aura:
                overrides.setdefault("redis_url", redis_server.url)
                settings = make_settings(**overrides)
                app = create_app(settings, agent=agent)
                stop, stopped = trio.Event(), trio.Event()
                stops.append(stop)

                async def run(task_status: trio.TaskStatus[list[str]]) -> None:
                    await serve_app(app, shutdown_trigger=stop.wait, task_status=task_status)
                    stopped.set()

                binds = await nursery.start(run)
                port = int(binds[0].rsplit(":", 1)[1])
                return Aura(port=port, app=app, state=state_of(app), stop=stop, stopped=stopped)

            yield start
            for stop in stops:
                stop.set()
            teardown.deadline = trio.current_time() + 15


@pytest.fixture
async def aura(start_server: StartServer) -> Aura:
    return await start_server()
