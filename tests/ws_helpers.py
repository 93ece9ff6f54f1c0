"""Helpers for the WebSocket tests: reading sessions, refusals, and a raw client.

The raw client speaks the protocol with wsproto over a plain Trio socket, for what
trio-websocket hides or will not do: the upgrade response's bytes as they are on
the wire, a connection dropped without a close frame, a socket that never reads.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import Any

import trio
import trio_websocket
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate

from aura_trio import client

from .helpers import HOST


async def until_hitl(ws: client.WsSession) -> dict[str, Any]:
    """Read up to the `hitl` event; returns its inner data (requestId, sessionId...)."""
    messages = await ws.until("hitl")
    payload: dict[str, Any] = messages[-1]["data"]["data"]
    return payload


def events_of(messages: list[dict[str, Any]]) -> list[str]:
    return [m["event"] for m in messages if m["type"] == "event"]


def kinds_of(messages: list[dict[str, Any]]) -> list[str]:
    """Each message's type, with the event's name for events (`event:hitl`)."""
    return [f"event:{m['event']}" if m["type"] == "event" else m["type"] for m in messages]


def close_code(ws: client.WsSession) -> int | None:
    return None if ws.ws.closed is None else ws.ws.closed.code


async def refused(port: int, **options: Any) -> trio_websocket.ConnectionRejected:
    """Open a WebSocket that must be refused before the upgrade; returns the refusal."""
    try:
        async with client.open_ws(HOST, port, **options):
            pass
    except trio_websocket.ConnectionRejected as rejection:
        return rejection
    raise AssertionError("the upgrade was accepted")


def envelope_of(rejection: trio_websocket.ConnectionRejected) -> dict[str, Any]:
    assert rejection.body is not None
    body: dict[str, Any] = json.loads(rejection.body)
    return body


def header(rejection: trio_websocket.ConnectionRejected, name: str) -> str | None:
    wanted = name.lower().encode()
    for key, value in rejection.headers or ():
        if key.lower() == wanted:
            return bytes(value).decode("latin-1")
    return None


@dataclass
class RawWs:
    """An upgraded connection driven by hand."""

    stream: trio.SocketStream
    connection: WSConnection
    response_head: bytes  # the upgrade response's status line and headers, as sent

    async def send_text(self, text: str) -> None:
        await self.stream.send_all(self.connection.send(TextMessage(data=text)))

    async def send_json(self, **message: Any) -> None:
        await self.send_text(json.dumps(message))

    async def until(self, event_type: str | None) -> tuple[list[dict[str, Any]], int | None]:
        """Messages up to and including the first `event` of `event_type`, or (None) up
        to the server's close frame, which is answered; and the close code, if any."""
        messages: list[dict[str, Any]] = []
        partial = ""
        while True:
            for event in self.connection.events():
                if isinstance(event, TextMessage):
                    partial += event.data
                    if event.message_finished:
                        messages.append(json.loads(partial))
                        partial = ""
                        if event_type is not None and messages[-1].get("event") == event_type:
                            return messages, None
                elif isinstance(event, CloseConnection):
                    await self.stream.send_all(self.connection.send(event.response()))
                    return messages, event.code
            data = await self.stream.receive_some(65536)
            if not data:
                return messages, None
            self.connection.receive_data(data)

    async def drop(self) -> None:
        """Close the TCP connection without a close frame."""
        await self.stream.aclose()


async def raw_upgrade(
    port: int,
    headers: dict[str, str],
    *,
    subprotocols: list[str] | None = None,
    receive_buffer: int | None = None,
    deflate: bool = False,
) -> RawWs:
    """Upgrade on a raw socket; `deflate` offers permessage-deflate, as browsers do."""
    sock = trio.socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    await sock.connect((HOST, port))
    stream = trio.SocketStream(sock)
    connection = WSConnection(ConnectionType.CLIENT)
    request = Request(
        host=f"{HOST}:{port}",
        target="/aura/ws",
        subprotocols=subprotocols or [],
        extra_headers=[(k.encode(), v.encode()) for k, v in headers.items()],
        extensions=[PerMessageDeflate()] if deflate else [],
    )
    await stream.send_all(connection.send(request))
    received = b""
    while b"\r\n\r\n" not in received:
        data = await stream.receive_some(65536)
        assert data, f"closed during the upgrade: {received!r}"
        received += data
    connection.receive_data(received)
    event = next(connection.events())
    if isinstance(event, RejectConnection):
        raise AssertionError(f"refused: {received!r}")
    assert isinstance(event, AcceptConnection)
    return RawWs(stream, connection, received.split(b"\r\n\r\n", 1)[0])
