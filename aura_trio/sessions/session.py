"""One session = one nursery (docs/contract.md#one-session-one-nursery).

    transport task (the SSE response body, or the WebSocket handler)
    └── open_session nursery
        └── Session.run ─ cleanup (once, shielded) ─ last events ─ done
            └── session nursery: its scope cancelled by any ending
                ├── agent           emits events, awaits approvals (the nursery's own task)
                ├── heartbeat task  a heartbeat when idle
                ├── signal-waiter   this session's Redis signals
                └── companions      the transport's own tasks (WebSocket: the reader)

The session writes encoded frames into a bounded outbox; the transport only
receives them and sends them on. It never yields inside the nursery (see
docs/design-notes.md#never-yield-inside-a-nursery), and a client that stops reading
makes the agent wait instead of the server buffer.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Generic

import trio

from ..agents import Agent, StreamRequest
from ..auth import Principal
from ..bus.redis_bus import RedisBus
from ..channel import Channel
from ..errors import StoreUnavailable
from ..hitl import records as hitl
from ..hitl.edits import check_schema
from ..hitl.records import HitlRequest
from ..hitl.store import HitlStore
from ..hitl.waiter import Approved, Rejected, SignalWaiter, TimedOut
from ..ids import new_request_id, new_session_id
from ..metrics import Metrics
from . import endings, events
from .framing import Frame, Framing
from .grain_clock import GrainClock
from .registry import SessionRegistry

log = logging.getLogger(__name__)

OUTBOX_FRAMES = 64
CLEANUP_SECONDS = 5.0
HEARTBEAT_GRAIN_SECONDS = 0.1


@dataclass(frozen=True, slots=True)
class SessionServices:
    """What every session of one app uses."""

    agent: Agent
    bus: RedisBus
    store: HitlStore
    registry: SessionRegistry
    metrics: Metrics
    heartbeat_seconds: float
    hitl_timeout_seconds: float
    # What the heartbeats sleep on (`heartbeat_clock(heartbeat_seconds)`).
    heartbeat_clock: GrainClock


Companion = Callable[[], Awaitable[None]]


class _Ended(BaseException):
    """Unwinds the agent once a decision ended its session (an agent's `except
    Exception` cannot swallow it)."""

    def __init__(self, ending: endings.Ending) -> None:
        super().__init__(ending.kind)
        self.ending = ending


class Session(Generic[Frame]):
    """A stream's state and tasks; also the :class:`AgentContext` its agent sees."""

    def __init__(
        self,
        *,
        request: StreamRequest,
        principal: Principal,
        services: SessionServices,
        framing: Framing[Frame],
        last_event_id: int = 0,
    ) -> None:
        self.session_id = new_session_id()
        self.user_id = principal.user_id
        self.tenant_id = principal.tenant_id
        self.request = request
        self._services = services
        self._store = services.store
        self._metrics = services.metrics
        self._framing: Framing[Frame] = framing
        self._log = {"sessionId": self.session_id, "tenantId": self.tenant_id}
        self._started = trio.current_time()
        self._next_id = last_event_id + 1
        # Sent into by the session's tasks, received from by its transport.
        self._outbox: Channel[Frame] = Channel(OUTBOX_FRAMES)
        self.frames: Channel[Frame] = self._outbox
        if framing.connected is not None:
            self._outbox.send_nowait(framing.connected)
        self._last_write = trio.current_time()
        # How its transport writes a frame itself, when it has a way (see `write_through`).
        self._write_through: Callable[[Frame], Awaitable[None]] | None = None
        # The session nursery's scope, once it runs.
        self._scope: trio.CancelScope | None = None
        self._waiter: SignalWaiter | None = None
        self._asked_at = 0.0
        self._opened: list[str] = []
        self.ending: endings.Ending | None = None
        self._last_decision: tuple[str, str] | None = None  # (request id, outcome)

    def finish(self, ending: endings.Ending) -> None:
        """End the session with `ending` (the first one wins) and cancel its tasks."""
        if self.ending is None:
            self.ending = ending
        if self._scope is not None:
            self._scope.cancel()

    async def run(self, *companions: Companion) -> None:
        """Run the tasks until an ending, then send its last events and the end frame.

        `companions` (a transport's tasks) run under the session scope too. Cancelled
        from outside when the client goes away: cleanup still runs, once.
        """
        self._metrics.open_sessions.inc()
        log.debug("session started", extra=self._log)
        async with self._outbox:
            try:
                await self._run_tasks(companions)
            finally:
                self._write_through = None  # the transport's: no reference back to it
                with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_SECONDS):
                    await self._cleanup()
            for event in self.ending.events(self.session_id) if self.ending else ():
                await self.emit(event)
            await self._write(self._framing.done)

    async def _run_tasks(self, companions: tuple[Companion, ...]) -> None:
        with self._services.bus.subscribe(self.session_id) as subscription:
            self._waiter = SignalWaiter(
                subscription, self._store, on_lag=self._metrics.subscriber_lag.observe
            )
            try:
                async with trio.open_nursery() as nursery:
                    self._scope = nursery.cancel_scope
                    if self.ending is not None:  # finished before it ran (a drain)
                        nursery.cancel_scope.cancel()
                    nursery.start_soon(self._heartbeat, name=_HEARTBEAT_TASK)
                    nursery.start_soon(self._waiter.run, name=_WAITER_TASK)
                    for companion in companions:
                        nursery.start_soon(companion)
                    # In the nursery's own task: a task (~1.3 KB) less per session.
                    await self._run_agent()
            except Exception:
                log.exception("session failed", extra=self._log)
                self.finish(endings.INTERNAL)

    async def _run_agent(self) -> None:
        try:
            await self.emit(events.start(self.session_id))
            await self._services.agent.run(self)
        except _Ended as ended:
            self.finish(ended.ending)
        except Exception:
            log.exception("agent failed", extra=self._log)
            self.finish(endings.INTERNAL)
        else:
            self.finish(endings.COMPLETED)

    async def _heartbeat(self) -> None:
        interval = self._services.heartbeat_seconds
        # On a shared grain: the heartbeats due within one grain wake together.
        clock = self._services.heartbeat_clock
        while True:
            await clock.sleep_until(self._last_write + interval)
            if trio.current_time() >= self._last_write + interval:
                await self._beat()

    async def _beat(self) -> None:
        write_through = self._write_through
        if write_through is None or not self._outbox.receiver_waiting:
            await self._write(self._framing.heartbeat)
            return
        # The transport has sent every frame and waits for the next: the beat goes
        # out from this task, and the transport's task is not woken for it (nearly
        # every frame of a waiting session is a beat). A frame queued meanwhile is
        # written after it: the connection's writes keep their order.
        await trio.lowlevel.checkpoint_if_cancelled()
        self._last_write = trio.current_time()
        await write_through(self._framing.heartbeat)

    def write_through(self, write: Callable[[Frame], Awaitable[None]]) -> None:
        """Let the session send its heartbeats with `write` while the transport waits
        for frames (the response has started, and `write` keeps the transport's order)."""
        self._write_through = write

    async def _cleanup(self) -> None:
        self._services.registry.release(self)
        ending = self.ending.kind if self.ending else "disconnected"
        self._metrics.open_sessions.dec()
        self._metrics.sessions.labels(ending).inc()
        try:
            pending = self._waiter.abandon() if self._waiter else None
            if pending is not None:
                settled = await self._store.settle(pending, hitl.CANCELLED, via=self._cancel_via())
                if settled is not None and settled.status == hitl.CANCELLED:
                    self._decided(pending, hitl.CANCELLED)
            self._store.disown(self._opened)
        except StoreUnavailable as error:
            log.warning("could not cancel a pending HITL request: %s", error, extra=self._log)
        finally:
            # One line per session at INFO, with its last request's outcome: each line
            # costs a record, JSON and a write (docs/design-notes.md#where-http-cpu-goes);
            # every transition of a request is in its tenant's audit stream anyway.
            if log.isEnabledFor(logging.INFO):
                self._log_ended(ending)

    def _log_ended(self, ending: str) -> None:
        took = trio.current_time() - self._started
        last = self._last_decision
        if last is None:
            log.info("session ended: %s after %.3f s", ending, took, extra=self._log)
            return
        request_id, outcome = last
        log.info(
            "session ended: %s after %.3f s; HITL request %s",
            ending,
            took,
            outcome,
            extra={**self._log, "requestId": request_id},
        )

    def _cancel_via(self) -> hitl.Via:
        """Why a request still pending at cleanup is cancelled."""
        if self.ending is None:
            return "disconnect"
        return "shutdown" if self.ending.kind == "shutdown" else "cancel"

    def _decided(self, request_id: str, kind: str) -> None:
        self._metrics.decisions.labels(kind).inc()
        self._metrics.hitl_wait.observe(trio.current_time() - self._asked_at)
        self._last_decision = (request_id, kind)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("HITL request %s", kind, extra={**self._log, "requestId": request_id})

    async def _write(self, frame: Frame) -> None:
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

    async def reply(self, frame: Frame) -> None:
        """Send a transport's own frame (a WebSocket `ack`) in line with the events:
        queued even if the session was cancelled a moment ago (no checkpoint first),
        so the answer to a decision that ends the session precedes the last events."""
        try:
            self._outbox.send_nowait(frame)
        except trio.WouldBlock:
            await self._outbox.send(frame)
        self._last_write = trio.current_time()

    # --- AgentContext ---------------------------------------------------------

    async def emit(self, event: events.Event) -> None:
        event_type, data = event
        frame = self._framing.event(self._next_id, event_type, data)
        self._next_id += 1
        await self._write(frame)
        self._metrics.event_sent(event_type)

    async def request_approval(
        self,
        action_type: str,
        tool_args: dict[str, Any],
        message: str,
        context: dict[str, Any],
        *,
        editable: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        waiter = self._waiter
        assert waiter is not None, "only the agent task asks for approval"
        request = self._new_request(action_type, tool_args, message, context, editable)
        waiter.expect(request.request_id)
        self._asked_at = trio.current_time()
        self._opened.append(request.request_id)
        await self._store.open_request(request)
        await self.emit(
            events.tool_execution(action_type, tool_args, "pending", requires_approval=True)
        )
        await self.emit(
            events.hitl(
                request.request_id, self.session_id, action_type, message, context,
                request.expires_at,
            )
        )  # fmt: skip
        if log.isEnabledFor(logging.DEBUG):
            log.debug("HITL request asked", extra={**self._log, "requestId": request.request_id})
        deadline = trio.current_time() + self._services.hitl_timeout_seconds
        match await waiter.decision(request.request_id, deadline=deadline):
            case Approved(args=approved_args):
                self._decided(request.request_id, hitl.APPROVED)
                return tool_args if approved_args is None else approved_args
            case Rejected(reason=reason):
                self._decided(request.request_id, hitl.REJECTED)
                raise _Ended(endings.rejected(reason))
            case TimedOut():
                self._decided(request.request_id, hitl.TIMEOUT)
                raise _Ended(endings.timed_out(request.request_id))

    def _new_request(
        self,
        action_type: str,
        tool_args: dict[str, Any],
        message: str,
        context: dict[str, Any],
        editable: dict[str, Any] | None,
    ) -> HitlRequest:
        created_at = events.now()
        return HitlRequest(
            request_id=new_request_id(),
            session_id=self.session_id,
            action_type=action_type,
            message=message,
            context=context,
            status=hitl.PENDING,
            user_id=self.user_id,
            tenant_id=self.tenant_id,
            created_at=created_at,
            expires_at=created_at + math.ceil(self._services.hitl_timeout_seconds),
            args=tool_args,
            editable_args=None if editable is None else check_schema(editable),
        )


def heartbeat_clock(heartbeat_seconds: float) -> GrainClock:
    """The clock of a process's heartbeats: a grain of a tenth of the interval, at
    most HEARTBEAT_GRAIN_SECONDS (a beat is at most that late)."""
    return GrainClock(min(HEARTBEAT_GRAIN_SECONDS, heartbeat_seconds / 10))


def _task_name(function: Callable[..., object]) -> str:
    return f"{function.__module__}.{function.__qualname__}"  # as trio names a task


# Given, a task's name is one shared string; else trio builds one per task.
_HEARTBEAT_TASK = _task_name(Session._heartbeat)
_WAITER_TASK = _task_name(SignalWaiter.run)
_SESSION_TASK = _task_name(Session.run)


@asynccontextmanager
async def open_session(
    session: Session[Frame], *companions: Companion
) -> AsyncIterator[Channel[Frame]]:
    """Run `session` (and its `companions`, see :meth:`Session.run`) in a nursery of
    its own; yields the channel of its frames.

    Leaving the block early (the client went away, a send failed) cancels the
    session, whose cleanup then runs. A lone exception from the nursery is raised
    as itself, not inside a group.
    """
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.run, *companions, name=_SESSION_TASK)
            try:
                yield session.frames
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from group
        raise
