"""`python -m bench.peers.asyncio_peer --host 127.0.0.1 --port 0`: uvicorn, one process
(`--workers N`: N processes sharing the socket, as a team would pre-fork them).

uvloop + httptools (`uvicorn[standard]`), no access log. The socket is bound
here so that `--port 0` works; its address is logged as the same JSON line
`aura-trio serve` writes (`{"msg": "listening on http://HOST:PORT"}`), once per
process. SIGTERM to the first process stops it, then the others.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import socket
import sys

import uvicorn

from .app import Settings, create_app

BACKLOG = 2048  # as aura's listen backlog


def _serve(sock: socket.socket) -> None:
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


def _die_with_parent() -> None:
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.asyncio_peer")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(BACKLOG)
    children = []
    for _ in range(args.workers - 1):
        pid = os.fork()
        if pid == 0:
            _die_with_parent()
            _serve(sock)
            os._exit(0)
        children.append(pid)
    _serve(sock)
    for pid in children:
        os.kill(pid, signal.SIGTERM)
    for pid in children:
        os.waitpid(pid, 0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
