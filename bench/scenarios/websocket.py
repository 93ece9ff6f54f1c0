"""Scenarios 3 and 5 over the WebSocket transport (aura only: the peer has none).

* `ws_roundtrip`: C clients in a closed loop, each opening `GET /aura/ws`, sending
  `start`, reading to the `hitl` event, approving **on the same socket**, and
  reading the `ack`, the rest, `done` and the close (1000).
* `ws_streaming`: S clients streaming sessions of ~W `content` events each (a
  prompt of W one-letter words); events/s and server CPU per event.

The client is aura_trio.client's (trio-websocket), so the client's CPU share is
larger than with the SSE scenarios' raw sockets: read the "client CPU" column.
"""

from __future__ import annotations

import json
from typing import Any

import trio
import trio_websocket

from aura_trio import client

from ..load import CONNECTION_ERRORS, TENANT, WAITING_PROMPT, SessionError, Target
from ..measure import Context, Errors, Window, closed_loop, summarize_ms

WS_ERRORS = (*CONNECTION_ERRORS, trio_websocket.HandshakeError, trio_websocket.ConnectionClosed)
EVENT = '{"type":"event"'
DONE = '{"type":"done"}'
_OPTIONS = {"message_queue_size": 64, "receive_buffer_size": 65536}


def _headers(target: Target, user: int) -> dict[str, str]:
    return {"Authorization": f"Bearer {target.tokens[user % len(target.tokens)]}",
            "X-Tenant-ID": TENANT}  # fmt: skip


async def _until_hitl(ws: trio_websocket.WebSocketConnection) -> str:
    """Read to the `hitl` event; its requestId."""
    while True:
        message = await ws.get_message()
        assert isinstance(message, str)
        if '"event":"hitl"' in message:
            request_id: str = json.loads(message)["data"]["data"]["requestId"]
            return request_id
        if '"event":"error"' in message:
            raise SessionError(f"error event before hitl: {message[:200]}")


async def _to_close(
    ws: trio_websocket.WebSocketConnection,
    window: Window | None = None,
    tally: list[int] | None = None,
) -> None:
    """Read to `done` and the close that must follow it. With a `window`, count into
    `tally` the events read while it is open (and let `error` events pass).

    Raises :class:`SessionError` on an `error` event (without a window) or message,
    or a close other than 1000 after `done`.
    """
    done = False
    try:
        while True:
            message = await ws.get_message()
            assert isinstance(message, str)
            if message.startswith(EVENT):
                if window is None:
                    if '"event":"error"' in message:
                        raise SessionError(f"error event: {message[:200]}")
                elif window.open and tally is not None:
                    tally[0] += 1
            elif message == DONE:
                done = True
            elif message.startswith('{"type":"error"'):
                raise SessionError(f"refused: {message[:200]}")
    except trio_websocket.ConnectionClosed as closed:
        code = closed.reason.code if closed.reason else None
        if not done or code != 1000:
            raise SessionError(f"closed with {code} {'after' if done else 'before'} done") from None


async def roundtrip(
    ctx: Context, *, concurrency: int, seconds: float, warmup: float
) -> dict[str, Any]:
    target = ctx.target
    session_times: list[float] = []
    errors = Errors(ctx.status)
    window = Window()
    start = json.dumps({"type": "start", "prompt": WAITING_PROMPT})
    ctx.status.update(C=concurrency, done=0)

    async def one_client(index: int) -> None:
        headers = _headers(target, index)
        while True:
            started = trio.current_time()
            try:
                async with client.open_ws(target.host, target.port, headers=headers) as ws:
                    await ws.ws.send_message(start)
                    request_id = await _until_hitl(ws.ws)
                    await ws.decide("approve", request_id)
                    await _to_close(ws.ws)
            except WS_ERRORS as error:
                errors.note(error)
                await trio.sleep(0.05)
                continue
            if window.open:
                session_times.append(trio.current_time() - started)
                ctx.status["done"] = len(session_times)

    cpu = await closed_loop(ctx, concurrency, one_client, window, warmup=warmup, seconds=seconds)
    return {
        "concurrency": concurrency,
        "completed": len(session_times),
        "sessions_per_s": len(session_times) / cpu["wall_s"],
        "session_time": summarize_ms(session_times),
        "session_times_ms": [t * 1000 for t in session_times],
        **errors.figures(),
        **cpu,
    }


async def streaming(
    ctx: Context, *, sessions: int, words: int, seconds: float, warmup: float
) -> dict[str, Any]:
    target = ctx.target
    start = json.dumps({"type": "start", "prompt": " ".join(["a"] * words)})
    errors = Errors(ctx.status)
    window = Window()
    counted, completed = [0], [0]
    ctx.status["events"] = 0

    async def one_client(index: int) -> None:
        headers = _headers(target, index)
        while True:
            try:
                async with client.open_ws(
                    target.host, target.port, headers=headers, **_OPTIONS
                ) as ws:
                    await ws.ws.send_message(start)
                    await _to_close(ws.ws, window, counted)
            except WS_ERRORS as error:
                errors.note(error)
                await trio.sleep(0.05)
                continue
            if window.open:
                completed[0] += 1
            ctx.status["events"] = counted[0]

    cpu = await closed_loop(ctx, sessions, one_client, window, warmup=warmup, seconds=seconds)
    return {
        "sessions": sessions,
        "words": words,
        "events": counted[0],
        "completed_sessions": completed[0],
        "events_per_s": counted[0] / cpu["wall_s"],
        "server_cpu_us_per_event": 1e6 * cpu["server_cpu_s"] / max(1, counted[0]),
        **errors.figures(),
        **cpu,
    }
