"""A small client for the demo, the tests and the bench: HTTP/1.1 and SSE over Trio
sockets (h11), and the WebSocket transport (trio-websocket)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import h11
import trio
import trio_websocket

_READ_SIZE = 65536


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(slots=True)
class Frame:
    """One SSE frame: the block of lines up to a blank line."""

    raw: bytes
    comments: list[str] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def event(self) -> str | None:
        return self.fields.get("event")

    @property
    def id(self) -> int | None:
        value = self.fields.get("id")
        return int(value) if value is not None else None

    @property
    def data(self) -> str | None:
        return self.fields.get("data")

    @property
    def is_done(self) -> bool:
        return self.data == "[DONE]" and "event" not in self.fields

    def json(self) -> Any:
        assert self.data is not None
        return json.loads(self.data)


class SSEParser:
    """Splits a byte stream into frames (LF line ends, as the contract fixes)."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames = []
        while (end := self._buffer.find(b"\n\n")) >= 0:
            raw, self._buffer = self._buffer[: end + 2], self._buffer[end + 2 :]
            frames.append(_parse_frame(raw))
        return frames

    @property
    def leftover(self) -> bytes:
        return self._buffer


def _parse_frame(raw: bytes) -> Frame:
    frame = Frame(raw=raw)
    for line in raw[:-2].decode("utf-8").split("\n"):
        if line.startswith(":"):
            frame.comments.append(line[1:].strip())
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name in frame.fields:
            frame.fields[name] += "\n" + value  # repeated data lines join with LF
        else:
            frame.fields[name] = value
    return frame


def _encode_headers(
    host: str, port: int, headers: Mapping[str, str], body: bytes
) -> list[tuple[str, str]]:
    result = [("Host", f"{host}:{port}"), ("Content-Length", str(len(body)))]
    result += list(headers.items())
    return result


class _Connection:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)

    async def send(self, event: Any) -> None:
        data = self.h11.send(event)
        if data:
            await self.stream.send_all(data)

    async def next_event(self) -> Any:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            self.h11.receive_data(await self.stream.receive_some(_READ_SIZE))


async def _start(
    host: str, port: int, method: str, target: str, headers: Mapping[str, str], body: bytes
) -> tuple[_Connection, h11.Response]:
    stream = await trio.open_tcp_stream(host, port)
    connection = _Connection(stream)
    try:
        await connection.send(
            h11.Request(
                method=method, target=target, headers=_encode_headers(host, port, headers, body)
            )
        )
        if body:
            await connection.send(h11.Data(data=body))
        await connection.send(h11.EndOfMessage())
        response = await connection.next_event()
    except BaseException:
        await stream.aclose()
        raise
    if not isinstance(response, h11.Response):
        await stream.aclose()
        raise ConnectionError(f"unexpected {response!r}")
    return connection, response


def _headers(response: h11.Response) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in response.headers}


async def request(
    host: str,
    port: int,
    method: str,
    target: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | dict[str, Any] | None = None,
) -> HttpResponse:
    """One request on a fresh connection; a dict body is sent as JSON."""
    hdrs = dict(headers or {})
    if isinstance(body, dict):
        body = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    connection, response = await _start(host, port, method, target, hdrs, body or b"")
    chunks = []
    async with connection.stream:
        while True:
            event = await connection.next_event()
            if isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
    return HttpResponse(response.status_code, _headers(response), b"".join(chunks))


class SSEStream:
    """An open event stream: iterate to receive frames as they arrive."""

    def __init__(self, connection: _Connection, response: h11.Response) -> None:
        self._connection = connection
        self.status = response.status_code
        self.headers = _headers(response)
        self._parser = SSEParser()
        self._pending: list[Frame] = []
        self.body = b""
        self.ended = False

    def __aiter__(self) -> SSEStream:
        return self

    async def __anext__(self) -> Frame:
        while not self._pending:
            if self.ended:
                raise StopAsyncIteration
            event = await self._connection.next_event()
            if isinstance(event, h11.Data):
                data = bytes(event.data)
                self.body += data
                self._pending.extend(self._parser.feed(data))
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                self.ended = True
        return self._pending.pop(0)

    async def read_body(self) -> bytes:
        """Everything up to the end of the response (for error responses)."""
        async for _ in self:
            pass
        return self.body

    async def events_until(self, event_type: str) -> list[Frame]:
        """Frames received up to and including the first `event_type` event."""
        frames = []
        async for frame in self:
            frames.append(frame)
            if frame.event == event_type:
                return frames
        raise AssertionError(f"stream ended before a {event_type!r} event")

    async def aclose(self) -> None:
        await self._connection.stream.aclose()


@asynccontextmanager
async def open_sse(
    host: str,
    port: int,
    target: str,
    *,
    headers: Mapping[str, str] | None = None,
    method: str = "GET",
    body: dict[str, Any] | None = None,
) -> AsyncIterator[SSEStream]:
    """Open a stream; the connection is closed on exit (a client disconnect)."""
    hdrs = {"Accept": "text/event-stream", **(headers or {})}
    raw = b""
    if body is not None:
        raw = json.dumps(body, ensure_ascii=False).encode()
        hdrs.setdefault("Content-Type", "application/json")
    connection, response = await _start(host, port, method, target, hdrs, raw)
    stream = SSEStream(connection, response)
    try:
        yield stream
    finally:
        await stream.aclose()


class WsSession:
    """A session over `GET /aura/ws`: JSON messages both ways. Once the server has
    closed, `receive()` raises `trio_websocket.ConnectionClosed`; `ws.closed.code`."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws

    async def send(self, message_type: str, **fields: Any) -> None:
        await self.ws.send_message(json.dumps({"type": message_type, **fields}, ensure_ascii=False))

    async def start(self, prompt: str, **fields: Any) -> None:  # context, thread_id, lastEventId
        await self.send("start", prompt=prompt, **fields)

    async def decide(self, verb: str, request_id: str, **fields: Any) -> None:  # userId, reason
        await self.send(verb, requestId=request_id, **fields)

    async def receive(self) -> dict[str, Any]:
        message = await self.ws.get_message()
        data: dict[str, Any] = json.loads(message)
        return data

    async def until(self, event_type: str) -> list[dict[str, Any]]:
        """Messages received up to and including the first `event` of `event_type`."""
        messages = []
        while True:
            messages.append(await self.receive())
            if messages[-1].get("event") == event_type:
                return messages

    async def rest(self) -> list[dict[str, Any]]:
        """Every message until the server closes."""
        messages = []
        with suppress(trio_websocket.ConnectionClosed):
            while True:
                messages.append(await self.receive())
        return messages


@asynccontextmanager
async def open_ws(
    host: str,
    port: int,
    *,
    headers: Mapping[str, str] | None = None,
    subprotocols: list[str] | None = None,
    target: str = "/aura/ws",
    **options: Any,
) -> AsyncIterator[WsSession]:
    """Open a WebSocket, closed on exit; a refusal raises `trio_websocket.ConnectionRejected`."""
    extra = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    async with trio_websocket.open_websocket(
        host, port, target, use_ssl=False, subprotocols=subprotocols, extra_headers=extra,
        **options,
    ) as ws:  # fmt: skip
        yield WsSession(ws)
