"""What every scenario does to a server: open streams, wait for `hitl`, approve."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from urllib.parse import quote

import trio

from aura_trio import mint_token

from .http import (
    DONE_FRAME,
    EventStream,
    HttpError,
    KeepAliveClient,
    Response,
    build_request,
    data_of,
    event_type,
)

SECRET = "bench-secret-that-is-long-enough-for-hs256!!"
TENANT = "bench"
USERS = 16
WAITING_PROMPT = "please merge PR 42"


class SessionError(Exception):
    """A stream did not go as the contract says (status, missing event, early end)."""


@dataclass
class Target:
    """A running server under test, and the credentials the load uses on it."""

    name: str
    host: str
    port: int
    tokens: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.tokens:
            self.tokens = [
                mint_token(SECRET, sub=f"bench-user-{i}", tenant_id=TENANT, ttl_seconds=6 * 3600)
                for i in range(USERS)
            ]
        self._stream_get: dict[tuple[str, int], bytes] = {}

    @property
    def authority(self) -> str:
        return f"{self.host}:{self.port}"

    def _headers(self, user: int) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.tokens[user % USERS]}",
            "X-Tenant-ID": TENANT,
        }

    def stream_request(self, prompt: str, user: int = 0) -> bytes:
        """`GET /aura/test/stream?message=...`, built once per (prompt, user)."""
        key = (prompt, user % USERS)
        raw = self._stream_get.get(key)
        if raw is None:
            headers = {"Accept": "text/event-stream", **self._headers(user)}
            target = f"/aura/test/stream?message={quote(prompt)}"
            raw = self._stream_get[key] = build_request("GET", target, self.authority, headers)
        return raw

    def stream_post_request(self, prompt: str, user: int = 0) -> bytes:
        body = json.dumps({"prompt": prompt}, ensure_ascii=False).encode()
        headers = {
            "Accept": "text/event-stream",
            "Content-Type": "application/json",
            **self._headers(user),
        }
        return build_request("POST", "/aura/test/stream", self.authority, headers, body)

    def approve_request(self, request_id: str, user: int = 0) -> bytes:
        return build_request(
            "POST", f"/aura/hitl/approve/{request_id}", self.authority, self._headers(user)
        )

    def get_request(self, target: str, *, close: bool = False) -> bytes:
        """A plain GET; `close` asks the server to close the connection after it."""
        return build_request(
            "GET", target, self.authority, {"Connection": "close"} if close else {}
        )

    async def open_stream(self, raw_request: bytes) -> EventStream:
        stream = await EventStream.open(self.host, self.port, raw_request)
        if stream.status != 200:
            body = await stream.read_all()
            stream.close()
            raise SessionError(f"stream answered {stream.status}: {body[:200]!r}")
        return stream

    def approver(self) -> Approver:
        return Approver(self)


class Approver:
    """Approvals over one kept-alive connection, as a Gateway would send them."""

    def __init__(self, target: Target) -> None:
        self._target = target
        self._client = KeepAliveClient(target.host, target.port)

    async def approve(self, request_id: str, user: int = 0) -> Response:
        response = await self._client.request(self._target.approve_request(request_id, user))
        if response.status != 200:
            raise SessionError(f"approve answered {response.status}: {response.body[:200]!r}")
        return response

    def close(self) -> None:
        self._client.close()


async def open_until_hitl(target: Target, raw_request: bytes) -> tuple[EventStream, str]:
    """Open a stream and read it up to its `hitl` event; returns it and the requestId."""
    stream = await target.open_stream(raw_request)
    try:
        request_id, _ = await read_until_hitl(stream)
    except BaseException:
        stream.close()
        raise
    return stream, request_id


async def read_until_hitl(stream: EventStream) -> tuple[str, int]:
    """Read up to the `hitl` event: its requestId, and how many events came with it."""
    events = 0
    while frames := await stream.frames():
        for frame in frames:
            kind = event_type(frame)
            if kind is None:
                continue
            events += 1
            if kind == b"hitl":
                return json.loads(data_of(frame))["data"]["requestId"], events
            if kind == b"error":
                raise SessionError(f"error event before hitl: {data_of(frame)[:200]!r}")
    raise SessionError("stream ended before the hitl event")


async def read_to_done(stream: EventStream) -> tuple[int, float | None]:
    """Read to `[DONE]`: events received, and when the first of them arrived.

    Raises :class:`SessionError` on an `error` event or an end without `[DONE]`.
    """
    events, first_at = 0, None
    while frames := await stream.frames():
        for frame in frames:
            if frame.startswith(b"id:"):
                if first_at is None:
                    first_at = trio.current_time()
                events += 1
                if frame.find(b"\nevent: error\n") >= 0:
                    raise SessionError(f"error event: {data_of(frame)[:200]!r}")
            elif frame == DONE_FRAME:
                return events, first_at
    raise SessionError("stream ended without [DONE]")


async def wait_for_close(stream: EventStream) -> None:
    """After `[DONE]`: the response must end (chunked terminator or EOF)."""
    if not stream.ended and await stream.frames():
        raise SessionError("frames after [DONE]")


CONNECTION_ERRORS = (OSError, HttpError, SessionError, trio.BrokenResourceError)
