"""Quart-Trio's connection, fixed to close: docs/design-notes.md#closing-connections-on-quart-trio

quart-trio 0.12 cancels a request as soon as Hypercorn reports the client gone,
and Hypercorn reports that *during* the app's final send when it closes the
connection (`Connection: close`, HTTP/1.0) — which cancels Hypercorn's own close
half-way: connections were never closed and keep-alive never timed out. The
final send is shielded here.

The body is also entered before the response starts, so a streaming body that
owns resources (a session) is always exited, whatever happens to the send.

WebSockets: what a client sends after the app closed is taken and dropped.
"""

from __future__ import annotations

from typing import cast

import trio
from hypercorn.typing import ASGISendCallable, HTTPResponseBodyEvent, HTTPResponseStartEvent
from quart.asgi import ASGIWebsocketConnection
from quart.utils import encode_headers
from quart.wrappers import Response, Websocket
from quart_trio.asgi import TrioASGIHTTPConnection, TrioASGIWebsocketConnection

DRAIN_SECONDS = 5.0


class ClosingHTTPConnection(TrioASGIHTTPConnection):
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
            async for data in body:
                await send(
                    cast(
                        HTTPResponseBodyEvent,
                        {
                            "type": "http.response.body",
                            "body": data.encode() if isinstance(data, str) else data,
                            "more_body": True,
                        },
                    )
                )
        with trio.CancelScope(shield=True):
            await send(
                cast(
                    HTTPResponseBodyEvent,
                    {"type": "http.response.body", "body": b"", "more_body": False},
                )
            )


class DrainingWebsocketConnection(TrioASGIWebsocketConnection):
    """Quart-Trio's WebSocket connection, taking what the client still sends after
    the app closed the socket, until the client is gone (at most `DRAIN_SECONDS`).

    Hypercorn hands client messages to a bounded queue that only the app empties;
    with it full and no one reading, Hypercorn's read loop, and the close handshake
    behind it, waited forever (a client that floods, then gets a 1008).
    """

    async def handle_websocket(  # type: ignore[override]
        self, nursery: trio.Nursery, websocket: Websocket, send: ASGISendCallable
    ) -> None:
        await ASGIWebsocketConnection.handle_websocket(self, websocket, send)
        if self._accepted:
            with trio.move_on_after(DRAIN_SECONDS):
                while True:  # until handle_messages sees the disconnect and cancels us
                    await self.receive_channel.receive()
        nursery.cancel_scope.cancel()
