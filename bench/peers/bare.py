"""Bare HTTP stacks for the `floor` scenario: `GET /health` and nothing else.

    python -m bench.peers.bare --stack hypercorn-trio --host 127.0.0.1 --port 0

Each answers `GET /health` with `{"status":"UP"}` (application/json), so what a
request costs is the stack's own floor:

- `hypercorn-trio`: Quart-Trio on Hypercorn's trio worker (`hypercorn.trio.serve`,
  default config);
- `aura-server`: the same app on aura's server (`aura_trio.http.server.serve`:
  its `TCPServer` subclass, the send bound) and its Quart-Trio connection class,
  configured as `aura-trio serve` configures them, without aura's routes;
- `hypercorn-asyncio`: Quart on Hypercorn's asyncio worker;
- `uvicorn-fastapi`: FastAPI on uvicorn (uvloop, httptools), as the peer runs.

The socket is bound here (port 0 works) and its address logged as the JSON line
the bench waits for (`{"msg": "listening on http://HOST:PORT"}`).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from typing import Any

STACKS = ("hypercorn-trio", "aura-server", "hypercorn-asyncio", "uvicorn-fastapi")
BACKLOG = 2048
BODY = b'{"status":"UP"}'


def _listening(sock: socket.socket) -> None:
    host, port = sock.getsockname()[:2]
    print(json.dumps({"msg": f"listening on http://{host}:{port}"}), file=sys.stderr, flush=True)


def _hypercorn_config(sock: socket.socket) -> Any:
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"fd://{sock.fileno()}"]
    config.backlog = BACKLOG
    config.accesslog = None
    return config


def _quart_trio_app() -> Any:
    from quart import Response
    from quart_trio import QuartTrio

    app = QuartTrio(__name__, static_folder=None)

    @app.get("/health")
    async def health() -> Response:
        return Response(BODY, content_type="application/json")

    return app


def hypercorn_trio(sock: socket.socket) -> None:
    import trio
    from hypercorn.trio import serve

    app = _quart_trio_app()
    config = _hypercorn_config(sock)
    _listening(sock)
    trio.run(serve, app, config)


def aura_server(sock: socket.socket) -> None:
    import trio

    from aura_trio.http.connection import ClosingHTTPConnection
    from aura_trio.http.server import SendBound, make_config, serve

    app = _quart_trio_app()
    app.asgi_http_class = ClosingHTTPConnection
    app.config["RESPONSE_TIMEOUT"] = None
    host, port = sock.getsockname()[:2]
    config = make_config(
        host=host, port=port, backlog=BACKLOG, keep_alive_seconds=5.0, reuse_port=False
    )

    async def main() -> None:
        never = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: serve(
                    app,
                    config,
                    send_bound=SendBound(30.0),
                    shutdown_trigger=never.wait,
                    sockets=[sock],
                    task_status=task_status,
                )
            )
            _listening(sock)

    trio.run(main)


def hypercorn_asyncio(sock: socket.socket) -> None:
    import asyncio

    from hypercorn.asyncio import serve
    from quart import Quart, Response

    app = Quart(__name__, static_folder=None)

    @app.get("/health")
    async def health() -> Response:
        return Response(BODY, content_type="application/json")

    config = _hypercorn_config(sock)
    _listening(sock)
    asyncio.run(serve(app, config))


def uvicorn_fastapi(sock: socket.socket) -> None:
    import uvicorn
    from fastapi import FastAPI
    from fastapi.responses import Response

    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/health")
    async def health() -> Response:
        return Response(BODY, media_type="application/json")

    config = uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
        timeout_keep_alive=5,
        backlog=BACKLOG,
    )
    _listening(sock)
    uvicorn.Server(config).run(sockets=[sock])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.bare")
    parser.add_argument("--stack", choices=STACKS, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(BACKLOG)
    runners = {
        "hypercorn-trio": hypercorn_trio,
        "aura-server": aura_server,
        "hypercorn-asyncio": hypercorn_asyncio,
        "uvicorn-fastapi": uvicorn_fastapi,
    }
    runners[args.stack](sock)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
