"""The approval console (docs/approvals.md#the-console): one page and its two files,
shipped in the package. Loading them needs no token; every call the page makes
carries the token the person enters."""

from __future__ import annotations

from importlib.resources import files

from quart import Quart, Response
from quart_schema import hide
from werkzeug.exceptions import NotFound

# Nothing from another origin, no inline script or style, no framing, no forms posted.
# `connect-src 'self'` covers the page's own WebSocket (ws: and wss: of its host).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_TYPES = {
    "console.html": "text/html; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}


def _headers() -> dict[str, str]:
    return {
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }


def register_console_routes(app: Quart) -> None:
    folder = files("aura_trio") / "console"
    shipped = {name: (folder / name).read_bytes() for name in _TYPES}

    def serve(name: str) -> Response:
        return Response(shipped[name], content_type=_TYPES[name], headers=_headers())

    @app.get("/aura/console")
    @hide
    async def console_page() -> Response:
        return serve("console.html")

    @app.get("/aura/console/<name>")
    @hide
    async def console_file(name: str) -> Response:
        if name == "console.html" or name not in shipped:
            raise NotFound()  # as any unknown path
        return serve(name)
