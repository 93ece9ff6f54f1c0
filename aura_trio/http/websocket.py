"""Quart-Trio's WebSocket connection, for sessions: drained after the close, and
several messages per socket write.

* **Drained.** Hypercorn hands client messages to a bounded queue that only the app
  empties. With it full and the app finished, Hypercorn's read loop, and the close
  handshake behind it, waited forever (seen with a client that flooded, then got a
  1008). What a client sends after the app closed is taken and dropped, until it is
  gone or for at most `DRAIN_SECONDS`.
* **Batched.** Each `websocket.send` is one ASGI message, one wsproto frame and one
  socket write (~60 µs of Trio and Hypercorn work, docs/design-notes.md#where-http-cpu-goes).
  :meth:`SessionWebsocket.send_texts` frames several messages with the
  connection's own wsproto state and writes them at once, as an SSE body joins its
  queued frames; with any other ASGI server it sends them one by one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

import trio
from hypercorn.protocol.events import Data
from hypercorn.protocol.ws_stream import ASGIWebsocketState, WSStream
from hypercorn.typing import ASGISendCallable
from quart.asgi import ASGIWebsocketConnection
from quart.wrappers import Websocket
from quart_trio.asgi import TrioASGIWebsocketConnection
from quart_trio.wrappers.websocket import TrioWebsocket
from wsproto.events import TextMessage
from wsproto.utilities import LocalProtocolError

DRAIN_SECONDS = 5.0


class SessionWebsocket(TrioWebsocket):
    """Quart-Trio's websocket, plus :meth:`send_texts`."""

    _send_batch: Callable[[list[str]], Awaitable[None]] | None = None

    async def send_texts(self, texts: list[str]) -> None:
        """Send `texts` as text messages, in order, in one socket write when possible."""
        if self._send_batch is None or len(texts) == 1:
            for text in texts:
                await self.send(text)
        else:
            await self._send_batch(texts)


class SessionWebsocketConnection(TrioASGIWebsocketConnection):
    """Installed as the app's `asgi_websocket_class` (with `websocket_class` =
    :class:`SessionWebsocket`)."""

    def _create_websocket_from_scope(self, send: ASGISendCallable) -> Websocket:
        websocket = super()._create_websocket_from_scope(send)
        stream = getattr(send, "__self__", None)
        if isinstance(websocket, SessionWebsocket) and isinstance(stream, WSStream):
            websocket._send_batch = partial(_send_batch, stream)
        return websocket

    async def handle_websocket(  # type: ignore[override]
        self, nursery: trio.Nursery, websocket: Websocket, send: ASGISendCallable
    ) -> None:
        await ASGIWebsocketConnection.handle_websocket(self, websocket, send)
        if self._accepted:
            with trio.move_on_after(DRAIN_SECONDS):
                while True:  # until handle_messages sees the disconnect and cancels us
                    await self.receive_channel.receive()
        nursery.cancel_scope.cancel()


async def _send_batch(stream: WSStream, texts: list[str]) -> None:
    """What `WSStream.app_send` does for one `websocket.send`, for several at once."""
    if stream.closed or stream.state != ASGIWebsocketState.CONNECTED:
        return  # as app_send: the client is gone, or the socket closing
    try:
        data = b"".join(stream.connection.send(TextMessage(data=text)) for text in texts)
    except LocalProtocolError:
        return
    await stream.send(Data(stream_id=stream.stream_id, data=data))
