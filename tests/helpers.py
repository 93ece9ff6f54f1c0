"""Test helpers: a handle on a running server, small HTTP shortcuts, bounded waits.

Shared by the test modules; none of them imports another test module or `conftest`.
"""

from __future__ import annotations

import inspect
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import redis
import trio
from quart_trio import QuartTrio

from aura_trio import client, mint_token
from aura_trio.app import AuraState

SECRET = "test-secret-that-is-long-enough-for-hs256!"
HOST = "127.0.0.1"


def token(
    sub: str = "alice", tenant: str | None = "t1", secret: str = SECRET, **claims: Any
) -> str:
    return mint_token(secret, sub=sub, tenant_id=tenant, **claims)


def auth(sub: str = "alice", tenant: str | None = "t1", **claims: Any) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token(sub, tenant, **claims)}"}
    if tenant is not None:
        headers["X-Tenant-ID"] = tenant
    return headers


def stream_target(message: str) -> str:
    return f"/aura/test/stream?message={quote(message)}"


@dataclass
class Aura:
    """A server started by the `start_server` fixture."""

    port: int
    app: QuartTrio
    state: AuraState
    stop: trio.Event
    stopped: trio.Event

    @asynccontextmanager
    async def stream(
        self, message: str = "hello", *, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> AsyncIterator[client.SSEStream]:
        async with client.open_sse(
            HOST, self.port, stream_target(message), headers=headers or auth(), **kwargs
        ) as stream:
            yield stream

    def ws(
        self, *, headers: dict[str, str] | None = None, **options: Any
    ) -> AbstractAsyncContextManager[client.WsSession]:
        """A WebSocket to `/aura/ws` (alice of t1 unless `headers` say otherwise)."""
        return client.open_ws(
            HOST, self.port, headers=auth() if headers is None else headers, **options
        )

    async def request(
        self, method: str, target: str, *, headers: dict[str, str] | None = None, body: Any = None
    ) -> client.HttpResponse:
        return await client.request(
            HOST,
            self.port,
            method,
            target,
            headers=auth() if headers is None else headers,
            body=body,
        )

    async def approve(
        self, request_id: str, headers: dict[str, str] | None = None
    ) -> client.HttpResponse:
        return await self.request("POST", f"/aura/hitl/approve/{request_id}", headers=headers)

    async def reject(
        self, request_id: str, reason: str | None = None, headers: dict[str, str] | None = None
    ) -> client.HttpResponse:
        body = {"reason": reason} if reason is not None else None
        return await self.request(
            "POST", f"/aura/hitl/reject/{request_id}", headers=headers, body=body
        )


StartServer = Callable[..., Awaitable[Aura]]
"""The `start_server` fixture: `await start_server(agent=..., **settings)`."""


async def until_hitl(stream: client.SSEStream) -> dict[str, Any]:
    """Read up to the `hitl` event; returns its `data` object."""
    frames = await stream.events_until("hitl")
    payload: dict[str, Any] = frames[-1].json()["data"]
    return payload


async def rest_of(stream: client.SSEStream) -> list[client.Frame]:
    """Every remaining frame, up to the end of the response."""
    return [frame async for frame in stream]


def events_of(frames: list[client.Frame]) -> list[str]:
    return [f.event for f in frames if f.event is not None]


def stored_request(raw: redis.Redis, request_id: str) -> dict[str, Any] | None:
    value = raw.get(f"hitl:request:{request_id}")
    return None if value is None else json.loads(value)


async def eventually(
    predicate: Callable[[], Any], *, within: float = 2.0, step: float = 0.01
) -> Any:
    """Wait until `predicate()` (a plain or an async function) is true, failing after
    `within` seconds; returns the true value.

    For state there is no event to wait on: another process, Redis, the server's
    registry seen from outside. Polling every `step` is the synchronisation here.
    """
    with trio.fail_after(within):
        while True:
            value = predicate()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
            await trio.sleep(step)


async def until_stalled(
    count: Callable[[], int], *, quiet: float = 0.5, within: float = 20.0
) -> None:
    """Wait until `count()` (a producer's progress) has not moved for `quiet` seconds.

    "Stalled" is defined over a window, so the wait is `quiet` at least; it fails
    after `within` seconds if the producer never stops.
    """
    with trio.fail_after(within):
        previous = -1
        while count() != previous:
            previous = count()
            await trio.sleep(quiet)


def java_signal(
    raw: redis.Redis, session_id: str, payload: dict[str, Any] | bytes, *, publish: bool = True
) -> None:
    """What the Java Main Service does: PUBLISH, then SET ... EX 300 (not atomic)."""
    data = (
        payload if isinstance(payload, bytes) else json.dumps(payload, ensure_ascii=False).encode()
    )
    if publish:
        raw.publish(f"hitl:channel:{session_id}", data)
    raw.set(f"hitl:signal:{session_id}", data, ex=300)


async def decide_at(
    port: int, request_id: str, headers: dict[str, str], verb: str = "approve"
) -> client.HttpResponse:
    """`POST /aura/hitl/{verb}/{requestId}` on the server at `port`."""
    return await client.request(
        HOST, port, "POST", f"/aura/hitl/{verb}/{request_id}", headers=headers
    )


async def open_stream_and_stop_reading(port: int) -> trio.socket.SocketType:
    """Open a stream on a socket with a tiny receive buffer, and never read from it."""
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect((HOST, port))
    headers = "".join(f"{k}: {v}\r\n" for k, v in auth().items())
    await sock.send(f"GET {stream_target('go')} HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
    return sock


def listen_overflows() -> int | None:
    """The kernel's count of connections dropped from full accept queues, if readable."""
    try:
        with open("/proc/net/netstat") as netstat:
            lines = netstat.read().splitlines()
    except OSError:
        return None
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split(), values.split(), strict=True))
            return int(table["ListenOverflows"])
    return None
