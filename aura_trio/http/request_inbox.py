"""A request's ASGI messages handed to it directly, without a task or a channel.

Hypercorn's trio worker gives every request a memory channel of its messages, and
quart-trio a task (and a nursery) that reads them into the request's body and
cancels the handling when the client goes away. A waiting stream kept all three
for its whole life: ~5.5 KB of its ~53 KB. Here Hypercorn's `app_put` is the
inbox's :meth:`RequestInbox.put`: a body chunk is appended to the request at once,
a disconnect cancels the handling's scope. Quart's body is unbounded but for its
`MAX_CONTENT_LENGTH` either way (quart-trio's reader drained the channel as fast
as it filled), so no back-pressure is lost.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio
from hypercorn.trio.task_group import TaskGroup
from hypercorn.trio.task_group import _handle as handle_app
from hypercorn.typing import AppWrapper, ASGIReceiveEvent, ASGISendEvent, Scope
from quart.wrappers import Request


class RequestInbox:
    """Where Hypercorn puts one HTTP request's messages; bound to the request once
    the app has made it, and unbound when the request is done."""

    __slots__ = ("_pending", "_request", "_scope", "disconnected")

    def __init__(self) -> None:
        self._pending: list[ASGIReceiveEvent] | None = None
        self._request: Request | None = None
        self._scope: trio.CancelScope | None = None
        self.disconnected = False

    async def put(self, message: ASGIReceiveEvent) -> None:
        self._deliver(message)

    async def __call__(self) -> ASGIReceiveEvent:
        raise RuntimeError("a request's messages are delivered to it, not received")

    def bind(self, request: Request, scope: trio.CancelScope) -> None:
        """Deliver to `request` from now on (what came before too); a disconnect
        cancels `scope`."""
        self._request, self._scope = request, scope
        pending, self._pending = self._pending, None
        for message in pending or ():
            self._deliver(message)
        if self.disconnected:
            scope.cancel()

    def unbind(self) -> None:
        self._request = self._scope = None

    def _deliver(self, message: ASGIReceiveEvent) -> None:
        if message["type"] == "http.disconnect":
            self.disconnected = True
            if self._scope is not None:
                self._scope.cancel()
            return
        request = self._request
        if request is None:
            if not self.disconnected:
                if self._pending is None:
                    self._pending = []
                self._pending.append(message)
            return
        if message["type"] == "http.request":
            request.body.append(message.get("body", b""))
            if not message.get("more_body", False):
                request.body.set_complete()


class DirectTaskGroup(TaskGroup):
    """Hypercorn's task group of a connection, handing HTTP requests a
    :class:`RequestInbox` instead of a channel (WebSockets keep theirs)."""

    async def spawn_app(
        self,
        app: AppWrapper,
        config: Any,
        scope: Scope,
        send: Callable[[ASGISendEvent | None], Awaitable[None]],
    ) -> Callable[[ASGIReceiveEvent], Awaitable[None]]:
        if scope["type"] != "http":
            return await super().spawn_app(app, config, scope, send)
        inbox = RequestInbox()
        assert self._nursery is not None
        self._nursery.start_soon(
            handle_app,
            app,
            config,
            scope,
            inbox,
            send,
            trio.to_thread.run_sync,
            trio.from_thread.run,
        )
        return inbox.put
