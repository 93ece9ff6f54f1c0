"""One SSE session = one nursery (CONTRACT 3.6).

    request task (quart-trio; cancelled when the client goes away)
    └── SessionBody nursery
        └── Session.run ─ cleanup (once, shielded) ─ last events ─ [DONE]
            └── session scope: cancelled by any ending
                ├── agent task      emits events, awaits approvals
                ├── heartbeat task  `: heartbeat` when idle
                └── signal-waiter   this session's Redis signals

The response body only receives frames from the session's bounded outbox and
yields them: it never yields inside the nursery (PITFALLS 3), and a client that
stops reading makes the agent wait instead of the server buffer.
"""

from __future__ import annotations

import logging
import math
from contextlib import AbstractAsyncContextManager
from types import TracebackType

import trio
from quart.wrappers.response import ResponseBody

from ..agents import StreamRequest
from ..auth import Principal
from ..errors import StoreUnavailable
from ..hitl import records as hitl
from ..hitl.waiter import SignalWaiter
from ..ids import new_request_id, new_session_id
from ..state import AuraState
from . import endings, events, sse

log = logging.getLogger(__name__)

OUTBOX_FRAMES = 64
CLEANUP_SECONDS = 5.0


class Session:
    """A stream's state and tasks; also the :class:`AgentContext` its agent sees."""

    def __init__(
        self,
        *,
        request: StreamRequest,
        principal: Principal,
        state: AuraState,
        last_event_id: int = 0,
    ) -> None:
        self.session_id = new_session_id()
        self.user_id = principal.user_id
        self.tenant_id = principal.tenant_id
        self.request = request
        self._agent = state.agent
        self._bus = state.bus
        self._store = state.store
        self._registry = state.registry
        self._settings = state.settings
        self._metrics = state.metrics
        self._log = {"sessionId": self.session_id, "tenantId": self.tenant_id}
        self._started = trio.current_time()
        self._next_id = last_event_id + 1
        self._outbox, self.frames = trio.open_memory_channel[bytes](OUTBOX_FRAMES)
        self._outbox.send_nowait(sse.CONNECTED)
        self._last_write = trio.current_time()
        self._scope = trio.CancelScope()
        self._waiter: SignalWaiter | None = None
        self._asked_at = 0.0
        self._opened: list[str] = []
        self.ending: endings.Ending | None = None
        self.closed = trio.Event()

    def finish(self, ending: endings.Ending) -> None:
        """End the session with `ending` (the first one wins) and cancel its tasks."""
        if self.ending is None:
            self.ending = ending
        self._scope.cancel()

    async def run(self) -> None:
        """Run the tasks until an ending, then send its last events and `[DONE]`.

        Cancelled from outside when the client goes away: cleanup still runs, once.
        """
        self._metrics.open_sessions.inc()
        log.debug("session started", extra=self._log)
        async with self._outbox:
            try:
                await self._run_tasks()
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_SECONDS):
                    await self._cleanup()
            for event in self.ending.events(self.session_id) if self.ending else ():
                await self.emit(event)
            await self._write(sse.DONE)

    async def _run_tasks(self) -> None:
        with self._bus.subscribe(self.session_id) as subscription:
            self._waiter = SignalWaiter(subscription, self._store, self._rejected)
            try:
                with self._scope:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._run_agent)
                        nursery.start_soon(self._heartbeat)
                        nursery.start_soon(self._waiter.run)
            except Exception:
                log.exception("session failed", extra=self._log)
                self.finish(endings.INTERNAL)

    async def _run_agent(self) -> None:
        try:
            await self.emit(events.start(self.session_id))
            await self._agent.run(self)
        except Exception:
            log.exception("agent failed", extra=self._log)
            self.finish(endings.INTERNAL)
        else:
            self.finish(endings.COMPLETED)

    async def _heartbeat(self) -> None:
        interval = self._settings.heartbeat_seconds
        while True:
            await trio.sleep_until(self._last_write + interval)
            if trio.current_time() >= self._last_write + interval:
                await self._write(sse.HEARTBEAT)

    async def _cleanup(self) -> None:
        self._registry.release(self)
        ending = self.ending.kind if self.ending else "disconnected"
        self._metrics.open_sessions.dec()
        self._metrics.sessions.labels(ending).inc()
        log.info(
            "session ended: %s after %.3f s",
            ending,
            trio.current_time() - self._started,
            extra=self._log,
        )
        try:
            pending = self._waiter.forget() if self._waiter else None
            if pending is not None and (
                await self._store.settle(pending, hitl.CANCELLED) == hitl.CANCELLED
            ):
                self._decided(pending, hitl.CANCELLED)
            self._store.disown(self._opened)
        except StoreUnavailable as error:
            log.warning("could not cancel a pending HITL request: %s", error, extra=self._log)
        finally:
            self.closed.set()

    def _decided(self, request_id: str, kind: str) -> None:
        self._metrics.decisions.labels(kind).inc()
        self._metrics.hitl_wait.observe(trio.current_time() - self._asked_at)
        log.info("HITL request %s", kind, extra={**self._log, "requestId": request_id})

    def _rejected(self, request_id: str, reason: str) -> None:
        self._decided(request_id, hitl.REJECTED)
        self.finish(endings.rejected(reason))

    async def _write(self, frame: bytes) -> None:
        # Only wait when the outbox is full. Yielding on every frame (as `send`
        # does) woke the body for each one: ~3 frames per socket write, and each
        # write costs ~60 µs in the ASGI/HTTP layers. Frames emitted in a burst now
        # go out together; a cancelled session still stops here at once.
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self._outbox.send_nowait(frame)
        except trio.WouldBlock:
            await self._outbox.send(frame)
        self._last_write = trio.current_time()

    # --- AgentContext ---------------------------------------------------------

    async def emit(self, event: events.Event) -> None:
        event_type, data = event
        frame = sse.encode_event(self._next_id, event_type, data)
        self._next_id += 1
        await self._write(frame)
        self._metrics.event_sent(event_type)

    async def request_approval(
        self,
        action_type: str,
        tool_args: dict[str, object],
        message: str,
        context: dict[str, object],
    ) -> None:
        assert self._waiter is not None, "only the agent task asks for approval"
        request_id = new_request_id()
        approved = self._waiter.expect(request_id)
        self._asked_at = trio.current_time()
        self._opened.append(request_id)
        created_at = events.now()
        expires_at = created_at + math.ceil(self._settings.hitl_timeout_seconds)
        await self._store.open_request(
            hitl.new_request(
                request_id=request_id,
                session_id=self.session_id,
                action_type=action_type,
                message=message,
                context=context,
                user_id=self.user_id,
                tenant_id=self.tenant_id,
                created_at=created_at,
                expires_at=expires_at,
            )
        )
        await self.emit(
            events.tool_execution(action_type, tool_args, "pending", requires_approval=True)
        )
        await self.emit(
            events.hitl(request_id, self.session_id, action_type, message, context, expires_at)
        )
        log.info("HITL request asked", extra={**self._log, "requestId": request_id})
        with trio.move_on_after(self._settings.hitl_timeout_seconds):
            await approved.wait()
        if not approved.is_set():
            await self._time_out(request_id)
        if not approved.is_set():
            await trio.sleep_forever()  # the session's scope is cancelled: never returns
        self._decided(request_id, hitl.APPROVED)

    async def _time_out(self, request_id: str) -> None:
        assert self._waiter is not None
        try:
            stored = await self._store.settle(request_id, hitl.TIMEOUT)
        except StoreUnavailable as error:
            log.warning("could not mark a HITL request timed out: %s", error)
            stored = hitl.TIMEOUT
        if stored in (hitl.APPROVED, hitl.REJECTED):
            # A decision was stored just before the deadline: it is not lost.
            self._waiter.resolve(request_id, stored, None)  # type: ignore[arg-type]
        elif self._waiter.forget() == request_id:
            self._decided(request_id, hitl.TIMEOUT)
            self.finish(endings.timed_out(request_id))


class SessionBody(ResponseBody):
    """The response body of a stream: starts the session, yields its frames.

    Entered before the response starts; leaving it early (the client went away,
    the send failed) cancels the session, whose cleanup then runs.
    """

    def __init__(self, session: Session) -> None:
        self._session = session
        self._nursery_manager: AbstractAsyncContextManager[trio.Nursery] | None = None
        self._nursery: trio.Nursery | None = None

    async def __aenter__(self) -> SessionBody:
        self._nursery_manager = trio.open_nursery()
        self._nursery = await self._nursery_manager.__aenter__()
        self._nursery.start_soon(self._session.run)
        return self

    async def __aexit__(  # type: ignore[override]
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        assert self._nursery is not None and self._nursery_manager is not None
        self._nursery.cancel_scope.cancel()
        return bool(await self._nursery_manager.__aexit__(exc_type, exc_value, tb))

    def __aiter__(self) -> SessionBody:
        return self

    async def __anext__(self) -> bytes:
        frames = self._session.frames
        try:
            batch = [await frames.receive()]
        except trio.EndOfChannel:
            raise StopAsyncIteration from None
        # Whatever else is already queued goes out in the same write.
        while len(batch) < OUTBOX_FRAMES:
            try:
                batch.append(frames.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        return batch[0] if len(batch) == 1 else b"".join(batch)
