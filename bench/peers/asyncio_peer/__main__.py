"""`python -m bench.peers.asyncio_peer --host 127.0.0.1 --port 0`: uvicorn, one process.

uvloop + httptools (`uvicorn[standard]`), no access log. The socket is bound
here so that `--port 0` works; its address is logged as the same JSON line
`aura-trio serve` writes (`{"msg": "listening on http://HOST:PORT"}`).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys

import uvicorn

from .app import Settings, create_app

BACKLOG = 2048  # as aura's listen backlog


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.asyncio_peer")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    args = parser.parse_args(argv)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(BACKLOG)
    config = uvicorn.Config(
        create_app(Settings.from_env()),
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
        timeout_keep_alive=5,
        backlog=BACKLOG,
    )
    host, port = sock.getsockname()[:2]
    print(json.dumps({"msg": f"listening on http://{host}:{port}"}), file=sys.stderr, flush=True)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
