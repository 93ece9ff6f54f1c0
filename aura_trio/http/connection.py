"""Quart-Trio's connection, fixed to close: docs/design-notes.md#closing-connections-on-quart-trio

quart-trio 0.12 cancels a request as soon as Hypercorn reports the client gone,
and Hypercorn reports that *during* the app's final send when it closes the
connection (`Connection: close`, HTTP/1.0) — which cancels Hypercorn's own close
half-way: connections were never closed and keep-alive never timed out. The
final send is shielded here.

The body is also entered before the response starts, so a streaming body that
owns resources (a session) is always exited, whatever happens to the send.

And the request is handled in the task Hypercorn started for it: quart-trio
starts two more per request (one to read the request's messages, one to handle
it). On aura's own server not even the reader: its messages are delivered to the
request (`request_inbox.py`).
"""

from __future__ import annotations

from typing import cast

import trio
from hypercorn.typing import (
    ASGIReceiveCallable,
    ASGISendCallable,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
)
from quart.utils import encode_headers
from quart.wrappers import Request, Response
from quart_trio.asgi import TrioASGIHTTPConnection

from .request_inbox import RequestInbox


class ClosingHTTPConnection(TrioASGIHTTPConnection):
    async def __call__(self, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        request = self._create_request_from_scope(send)
        if isinstance(receive, RequestInbox):
            with trio.CancelScope() as scope:  # cancelled when the client goes away
                receive.bind(request, scope)
                try:
                    await self._handle_and_respond(request, send)
                finally:
                    receive.unbind()
            return
        async with trio.open_nursery() as nursery:
            # The reader cancels the nursery (and so the handling) when the client
            # goes away; the handling cancels it (the reader) when the response is sent.
            nursery.start_soon(self.handle_messages, nursery, request, receive)
            await self.handle_request(nursery, request, send)

    async def _handle_and_respond(self, request: Request, send: ASGISendCallable) -> None:
        # quart-trio's handle_request, without the nursery it cancels at the end.
        response = await self.app.handle_request(request)
        if isinstance(response, Response) and response.timeout != Ellipsis:
            timeout = cast(float | None, response.timeout)
        else:
            timeout = self.app.config["RESPONSE_TIMEOUT"]
        if timeout is None:  # a stream: no scope held for its whole life
            await self._send_response(send, response)
        else:
            with trio.move_on_after(timeout):
                await self._send_response(send, response)

    async def _send_response(self, send: ASGISendCallable, response: object) -> None:
        if not isinstance(response, Response):
            await super()._send_response(send, response)  # type: ignore[arg-type]
            return
        async with response.response as body:
            await send(
                cast(
                    HTTPResponseStartEvent,
                    {
                        "type": "http.response.start",
                        "status": response.status_code,
                        "headers": encode_headers(response.headers),
                    },
                )
            )

            async def write(data: bytes) -> None:
                await send(
                    cast(
                        HTTPResponseBodyEvent,
                        {"type": "http.response.body", "body": data, "more_body": True},
                    )
                )

            # A streaming body that may also send chunks itself, from its own tasks.
            write_through = getattr(body, "write_through", None)
            if write_through is not None:
                write_through(write)
            async for data in body:
                await write(data.encode() if isinstance(data, str) else data)
        with trio.CancelScope(shield=True):
            await send(
                cast(
                    HTTPResponseBodyEvent,
                    {"type": "http.response.body", "body": b"", "more_body": False},
                )
            )
