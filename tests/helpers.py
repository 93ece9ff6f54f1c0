"""Test helpers: a handle on a running server, and small HTTP shortcuts."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
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


async def eventually(predicate: Any, *, within: float = 2.0, step: float = 0.01) -> None:
    """Wait until `predicate()` is true, failing after `within` seconds."""
    with trio.fail_after(within):
        while not predicate():
            await trio.sleep(step)


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
