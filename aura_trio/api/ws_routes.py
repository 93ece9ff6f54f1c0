"""`GET /aura/ws`: the WebSocket transport (docs/websocket.md).

Everything that can refuse the socket happens before `accept`, in the order of a
stream request: `Origin` (403), the token and identity headers (401/403), Redis
(503), admission (429/503). A refusal raises the API's error, which the app's
error handlers answer as the JSON envelope; Quart sends that response instead of
the upgrade (ASGI's `websocket.http.response`), status, headers and body as over
HTTP. Accepted, the socket is a :class:`SessionSocket`.
"""

from __future__ import annotations

import logging

from quart import Quart, websocket
from quart.wrappers import Websocket
from quart_schema import hide

from ..auth import Authenticator
from ..errors import ForbiddenError, UnavailableError
from ..sessions import ws_protocol as wsp
from ..sessions.registry import RETRY_AFTER_SECONDS
from ..sessions.session import SessionServices
from .ws_socket import SessionSocket

log = logging.getLogger(__name__)


class _UpgradeHeaders:
    """The upgrade's headers, with the bearer token of a `bearer.<jwt>` subprotocol as
    `Authorization` when the request has none (browsers cannot set headers)."""

    def __init__(self, ws: Websocket) -> None:
        self._headers = ws.headers
        self._offered = ws.requested_subprotocols

    def get(self, key: str) -> str | None:
        value: str | None = self._headers.get(key)
        if value is None and key.lower() == "authorization":
            token = wsp.subprotocol_token(self._offered)
            return None if token is None else f"Bearer {token}"
        return value


def register_ws_routes(
    app: Quart,
    services: SessionServices,
    authenticator: Authenticator,
    *,
    allowed_origins: frozenset[str] | None,
    send_timeout: float,
) -> None:
    def admit(ws: Websocket) -> SessionSocket:
        """Everything that may refuse the upgrade; raises the API's error."""
        if not wsp.origin_allowed(ws.headers.get("Origin"), allowed_origins):
            raise ForbiddenError("this Origin may not open a WebSocket")
        principal = authenticator(_UpgradeHeaders(ws))
        if not services.bus.connected:
            raise UnavailableError(
                "Redis is unreachable; try again shortly",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        socket = SessionSocket(
            ws, principal, services, start_timeout=send_timeout, reply_timeout=send_timeout
        )
        services.registry.admit(socket)  # the same per-user and process limits as streams
        return socket

    @app.websocket("/aura/ws")
    @hide
    async def aura_ws() -> None:
        """One session over a WebSocket: events out, decisions and `cancel` in."""
        ws: Websocket = websocket._get_current_object()  # type: ignore[attr-defined]
        socket = admit(ws)
        try:
            await ws.accept(subprotocol=wsp.selected_subprotocol(ws.requested_subprotocols))
            try:
                code = await socket.run()
            except Exception:
                log.exception("WebSocket session failed")
                code = wsp.Close.INTERNAL_ERROR
            await ws.close(int(code))
        finally:
            # After the close: a drain waits until every socket has said goodbye.
            services.registry.release(socket)
