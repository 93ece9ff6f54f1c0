"""Raw HTTP/1.1 over Trio sockets, as cheap per byte as Python allows.

The load generator must not be the bottleneck, so this is not h11: requests are
pre-built byte strings, responses are parsed just enough (status, framing), and
an event stream is split into SSE frames with `bytes.split` on whole batches.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass

import trio

READ_SIZE = 65536


class HttpError(Exception):
    """The server answered something this client cannot read, or closed early."""


def build_request(
    method: str,
    target: str,
    host: str,
    headers: Mapping[str, str],
    body: bytes = b"",
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body or method != "GET":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


_source_address: list[str] = []


def bind_connections_to(address: str) -> None:
    """Open every later connection from `address` (e.g. 127.0.0.2): one source
    address has only the ephemeral port range (~28,000 here) to reach one port with."""
    _source_address[:] = [address]


async def connect(host: str, port: int) -> trio.socket.SocketType:
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if _source_address:
            await sock.bind((_source_address[0], 0))
        await sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


async def send_all(sock: trio.socket.SocketType, data: bytes) -> None:
    view = memoryview(data)
    while view:
        sent = await sock.send(view)
        view = view[sent:]


@dataclass(slots=True)
class Head:
    status: int
    headers: dict[str, str]


def parse_head(raw: bytes) -> Head:
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise HttpError(f"bad status line {lines[0]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Head(int(parts[1]), headers)


class ChunkedDecoder:
    """Incremental `Transfer-Encoding: chunked` decoder (trailers ignored)."""

    __slots__ = ("_buffer", "_remaining", "_want_crlf", "done")

    def __init__(self) -> None:
        self._buffer = b""
        self._remaining = 0
        self._want_crlf = False
        self.done = False

    def feed(self, data: bytes) -> bytes:
        buffer = self._buffer + data if self._buffer else data
        out = []
        pos, size = 0, len(buffer)
        while not self.done:
            if self._remaining:
                take = min(self._remaining, size - pos)
                out.append(buffer[pos : pos + take])
                pos += take
                self._remaining -= take
                if self._remaining:
                    break
                self._want_crlf = True
            if self._want_crlf:
                if size - pos < 2:
                    break
                pos += 2
                self._want_crlf = False
            line_end = buffer.find(b"\r\n", pos)
            if line_end < 0:
                break
            length = int(buffer[pos:line_end].split(b";", 1)[0], 16)
            pos = line_end + 2
            if length == 0:
                self.done = True
            self._remaining = length
        self._buffer = buffer[pos:]
        return out[0] if len(out) == 1 else b"".join(out)


class _Body:
    """The body of one response, whatever its framing."""

    def __init__(self, head: Head) -> None:
        encoding = head.headers.get("transfer-encoding", "").lower()
        self._chunked = ChunkedDecoder() if "chunked" in encoding else None
        length = head.headers.get("content-length")
        self._left = int(length) if length is not None and self._chunked is None else None
        self.done = self._left == 0

    def feed(self, data: bytes) -> bytes:
        if self._chunked is not None:
            body = self._chunked.feed(data)
            self.done = self._chunked.done
            return body
        if self._left is not None:
            body = data[: self._left]
            self._left -= len(body)
            self.done = self._left == 0
            return body
        return data


async def _read_head(sock: trio.socket.SocketType) -> tuple[Head, bytes]:
    buffer = b""
    while (end := buffer.find(b"\r\n\r\n")) < 0:
        data = await sock.recv(READ_SIZE)
        if not data:
            raise HttpError("connection closed before the response head")
        buffer += data
        if len(buffer) > 65536:
            raise HttpError("response head too large")
    return parse_head(buffer[:end]), buffer[end + 4 :]


@dataclass(slots=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


async def read_response(sock: trio.socket.SocketType) -> Response:
    """One whole response; raises :class:`HttpError` if the connection ends first."""
    head, rest = await _read_head(sock)
    body = _Body(head)
    parts = [body.feed(rest)] if rest or body.done else []
    while not body.done:
        data = await sock.recv(READ_SIZE)
        if not data:
            if "content-length" in head.headers or "transfer-encoding" in head.headers:
                raise HttpError("connection closed mid-body")
            break
        parts.append(body.feed(data))
    return Response(head.status, head.headers, b"".join(parts))


class KeepAliveClient:
    """Requests over one persistent connection, reopened when the server closed it."""

    def __init__(self, host: str, port: int) -> None:
        self._host, self._port = host, port
        self._sock: trio.socket.SocketType | None = None

    async def request(self, raw: bytes) -> Response:
        for attempt in (1, 2):
            fresh = self._sock is None
            if self._sock is None:
                self._sock = await connect(self._host, self._port)
            try:
                await send_all(self._sock, raw)
                response = await read_response(self._sock)
            except (OSError, HttpError) as error:
                self.close()
                # A kept-alive socket the server had already closed: nothing was
                # processed (no byte came back), so sending again is safe once.
                if fresh or attempt == 2 or not _closed_before_reply(error):
                    raise
                continue
            if response.headers.get("connection", "").lower() == "close":
                self.close()
            return response
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _closed_before_reply(error: Exception) -> bool:
    return isinstance(error, ConnectionResetError | BrokenPipeError) or (
        isinstance(error, HttpError) and "before the response head" in str(error)
    )


class EventStream:
    """An open SSE response: yields batches of raw frames as they arrive.

    Frames are the blocks between blank lines, without the final `\\n\\n`. Event
    frames start with `id:` (comments with `:`, `[DONE]` with `data:`).
    """

    def __init__(self, sock: trio.socket.SocketType, head: Head, rest: bytes) -> None:
        self.sock = sock
        self.status = head.status
        self.headers = head.headers
        self._body = _Body(head)
        self._pending = b""
        self.ended = False
        self._first = rest

    @classmethod
    async def open(cls, host: str, port: int, raw_request: bytes) -> EventStream:
        sock = await connect(host, port)
        try:
            await send_all(sock, raw_request)
            head, rest = await _read_head(sock)
        except BaseException:
            sock.close()
            raise
        return cls(sock, head, rest)

    async def frames(self) -> list[bytes]:
        """The next complete frames (at least one), or [] at the end of the response."""
        while True:
            if self._first:
                data, self._first = self._first, b""
            elif self.ended:
                return []
            else:
                data = await self.sock.recv(READ_SIZE)
                if not data:
                    self.ended = True
                    return self._flush()
            body = self._body.feed(data)
            if self._body.done:
                self.ended = True
            if body:
                text = self._pending + body if self._pending else body
                *complete, self._pending = text.split(b"\n\n")
                if complete:
                    return complete
            if self.ended:
                return self._flush()

    def _flush(self) -> list[bytes]:
        leftover, self._pending = self._pending, b""
        return [leftover] if leftover.strip() else []

    async def read_all(self) -> bytes:
        """The rest of the body (for error responses)."""
        parts = []
        while frames := await self.frames():
            parts.append(b"\n\n".join(frames))
        return b"\n\n".join(parts)

    def close(self) -> None:
        self.sock.close()


def event_type(frame: bytes) -> bytes | None:
    """The `event:` of a frame in the contract's layout (`id:` line first), else None."""
    if not frame.startswith(b"id:"):
        return None
    start = frame.find(b"\nevent: ")
    if start < 0:
        return None
    start += 8
    end = frame.find(b"\n", start)
    return frame[start:end] if end >= 0 else frame[start:]


def data_of(frame: bytes) -> bytes:
    start = frame.find(b"data: ")
    if start < 0:
        return b""
    end = frame.find(b"\n", start)
    return frame[start + 6 : end] if end >= 0 else frame[start + 6 :]


DONE_FRAME = b"data: [DONE]"
