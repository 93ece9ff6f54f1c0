"""One accepted WebSocket (docs/websocket.md): its `start`, then its session, with a
reader task for the client's messages in the session's nursery.

    WebSocket handler (ws_routes.py): accept ── SessionSocket.run ── close(code)
    ├── before `start`: read messages (≤ AURA_SEND_TIMEOUT_SECONDS, else 1008)
    └── transport scope  ← cancelled by a protocol violation (1003 / 1008 / 1009)
        ├── sends the session's frames (what queued up: one socket write)
        └── open_session nursery: Session.run
            └── session scope: agent, heartbeat, signal-waiter, reader

The handler is the only task that writes to the socket: the reader's answers
(`ack`, `error`) go through the session's outbox, in line with the events
(docs/design-notes.md#websocket-one-writer-batched).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from quart.wrappers import Websocket

from ..agents import StreamRequest
from ..auth import Principal
from ..channel import Channel
from ..errors import ApiError, StoreUnavailable, ValidationError
from ..hitl import records as hitl
from ..http.websocket import SessionWebsocket
from ..sessions import endings
from ..sessions import ws_protocol as wsp
from ..sessions.endings import Ending
from ..sessions.session import OUTBOX_FRAMES, Session, SessionServices, open_session
from .hitl_routes import apply_decision
from .models import StreamBody, parse
from .requests import with_context_headers

log = logging.getLogger(__name__)

Reply = Callable[[str], Awaitable[None]]


class SessionSocket:
    """A socket's state: counted by the registry from the upgrade on, so that a drain
    ends it (`finish`) before or after its session started."""

    def __init__(
        self,
        websocket: Websocket,
        principal: Principal,
        services: SessionServices,
        *,
        start_timeout: float,
        reply_timeout: float,
    ) -> None:
        self.user_id = principal.user_id
        self._ws = websocket
        self._principal = principal
        self._services = services
        self._start_timeout = start_timeout
        self._reply_timeout = reply_timeout
        self._rate = wsp.MessageRate(trio.current_time())
        self._waiting = trio.CancelScope()
        self._transport = trio.CancelScope()
        self._violation: wsp.ProtocolViolation | None = None
        self._ending: Ending | None = None
        self.session: Session[str] | None = None

    def finish(self, ending: Ending) -> None:
        """End the socket's session with `ending`, or, before `start`, the socket."""
        if self.session is not None:
            self.session.finish(ending)
        elif self._ending is None:
            self._ending = ending
            self._waiting.cancel()

    async def run(self) -> wsp.Close:
        """Serve the socket until its session ends; returns the close code to send."""
        start = await self._wait_for_start()
        if start is None:
            return await self._end_before_start()
        session = self.session = Session(
            request=start[0], principal=self._principal, services=self._services,
            framing=wsp.WS, last_event_id=start[1],
        )  # fmt: skip
        if self._ending is not None:
            session.finish(self._ending)
        with self._transport:
            async with open_session(session, self._read) as frames:
                async for frame in frames:
                    await self._send([frame, *_queued(frames)])
        if self._violation is not None:
            return self._violation.code
        if session.ending is not None and session.ending.kind == "shutdown":
            return wsp.Close.GOING_AWAY
        return wsp.Close.NORMAL

    async def _send(self, frames: list[str]) -> None:
        if isinstance(self._ws, SessionWebsocket):
            await self._ws.send_texts(frames)  # one socket write
        else:
            for frame in frames:
                await self._ws.send(frame)

    # --- before `start` --------------------------------------------------------------

    async def _wait_for_start(self) -> tuple[StreamRequest, int] | None:
        """The first valid `start`; None when the socket must close instead."""
        with self._waiting, trio.move_on_after(self._start_timeout) as waited:
            while True:
                try:
                    message = await self._next(self._ws.send)
                except wsp.ProtocolViolation as violation:
                    self._violation = violation
                    return None
                if isinstance(message, wsp.Start):
                    try:
                        return self._stream_request(message), message.last_event_id
                    except ValidationError as error:
                        await self._ws.send(_refusal(error))
                elif message is not None:
                    await self._ws.send(
                        _refusal(ValidationError("the first message must be start"))
                    )
        if waited.cancelled_caught and self._ending is None:
            self._violation = wsp.ProtocolViolation(wsp.Close.POLICY_VIOLATION, "no start in time")
        return None

    def _stream_request(self, start: wsp.Start) -> StreamRequest:
        """As `POST /aura/test/stream` reads its body and headers."""
        body = parse(StreamBody, start.body)
        context = with_context_headers(body.context or {}, self._ws.headers)
        return StreamRequest(prompt=body.prompt, context=context, thread_id=body.thread_id)

    async def _end_before_start(self) -> wsp.Close:
        if self._violation is not None:
            return self._violation.code
        # Drained before the session began: its ending's events (ids from 1), then done.
        assert self._ending is not None
        for number, (event_type, data) in enumerate(self._ending.events(""), start=1):
            await self._ws.send(wsp.WS.event(number, event_type, data))
        await self._ws.send(wsp.DONE)
        return wsp.Close.GOING_AWAY if self._ending.kind == "shutdown" else wsp.Close.NORMAL

    # --- the reader: a task of the session -------------------------------------------

    async def _read(self) -> None:
        session = self.session
        assert session is not None
        try:
            while True:
                message = await self._next(self._answer)
                if isinstance(message, wsp.Cancel):
                    session.finish(endings.CANCELLED)
                    return
                if isinstance(message, wsp.Decide):
                    await self._decide(message)
                elif isinstance(message, wsp.Start):
                    await self._answer(_refusal(ValidationError("start was already sent")))
        except wsp.ProtocolViolation as violation:
            self._violation = violation
            self._transport.cancel()

    async def _answer(self, text: str) -> None:
        """Queue an answer; a client that takes none of it for the send timeout while
        still sending breaks the protocol (and would otherwise hold the reader)."""
        assert self.session is not None
        with trio.move_on_after(self._reply_timeout):
            await self.session.reply(text)
            return
        raise wsp.ProtocolViolation(wsp.Close.POLICY_VIOLATION, "answers are not being read")

    async def _decide(self, message: wsp.Decide) -> None:
        """The HTTP API's decision (same compare-and-set, tenant checks and errors)."""
        decision: hitl.Decision = hitl.APPROVED if message.action == "approve" else hitl.REJECTED
        try:
            data = await apply_decision(
                self._services.store, self._principal, message.request_id, decision, message.body
            )
        except ApiError as error:
            await self._answer(_refusal(error, message.request_id))
        except StoreUnavailable as error:
            log.warning("Redis call failed: %s", error)
            await self._answer(
                wsp.error_message(
                    503, "REDIS_UNAVAILABLE", "Redis is unreachable; try again shortly",
                    message.request_id,
                )
            )  # fmt: skip
        else:
            await self._answer(wsp.ack_message(message.action, message.request_id, data["status"]))

    # --- every message ---------------------------------------------------------------

    async def _next(self, reply: Reply) -> wsp.ClientMessage | None:
        """The next client message; None when it was refused (answered with `error`).

        Raises:
            ProtocolViolation: binary, too big, or over the flood rate.
        """
        raw: Any = await self._ws.receive()
        if not self._rate.allow(trio.current_time()):
            raise wsp.ProtocolViolation(wsp.Close.POLICY_VIOLATION, "too many messages")
        try:
            return wsp.parse_client_message(raw)
        except ValidationError as error:
            await reply(_refusal(error))
            return None


def _queued(frames: Channel[str]) -> list[str]:
    """What else the session has already queued (sent in the same write)."""
    queued: list[str] = []
    while len(queued) < OUTBOX_FRAMES:
        try:
            queued.append(frames.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            break
    return queued


def _refusal(error: ApiError, request_id: str | None = None) -> str:
    return wsp.error_message(error.status_code, error.error_code, error.message, request_id)
