"""Running the real `aura-trio` command as a child process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .helpers import SECRET


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    log_path: Path
    port: int

    def logs(self) -> list[dict]:
        entries = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                entries.append(json.loads(line))
            except ValueError:
                entries.append({"raw": line})
        return entries

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)


def _wait_for_port(
    process: subprocess.Popen[bytes], log_path: Path, within: float, listeners: int
) -> int:
    """The port from the `listening on http://host:port` lines, once `listeners` logged it."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        ports = []
        for line in log_path.read_text(errors="replace").splitlines():
            try:
                message = json.loads(line).get("msg", "")
            except ValueError:
                continue
            if message.startswith("listening on http://"):
                ports.append(int(message.rsplit(":", 1)[1]))
        if len(ports) >= listeners:
            return ports[0]
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}: {log_path.read_text()}")
        time.sleep(0.05)
    raise TimeoutError(f"server did not start: {log_path.read_text()}")


def _wait_for_connect(
    process: subprocess.Popen[bytes], log_path: Path, port: int, within: float
) -> int:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return port
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}: {log_path.read_text()}")
        time.sleep(0.05)
    raise TimeoutError(f"server did not start: {log_path.read_text()}")


@contextmanager
def run_server(
    tmp_path: Path,
    *args: str,
    env: dict[str, str] | None = None,
    name: str = "server",
    port: int = 0,
) -> Iterator[ServerProcess]:
    """`python -m aura_trio serve --host 127.0.0.1 --port PORT ...`; SIGTERM on exit.

    With port 0 the port is read from the INFO log line `listening on ...`; pass a free
    port when the log level hides that line.
    """
    log_path = tmp_path / f"{name}.log"
    environment = {
        **os.environ,
        "SECRET_KEY": SECRET,
        "AURA_EVENT_DELAY_SECONDS": "0",
        **(env or {}),
    }
    command = [sys.executable, "-m", "aura_trio", "serve", "--host", "127.0.0.1"]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [*command, "--port", str(port), *args],
            stdout=log_file,
            stderr=log_file,
            env=environment,
        )
    server = ServerProcess(process, log_path, 0)
    try:
        if port:
            server.port = _wait_for_connect(process, log_path, port, within=20)
        else:
            workers = int(args[args.index("--workers") + 1]) if "--workers" in args else 1
            server.port = _wait_for_port(process, log_path, within=20, listeners=workers)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
