"""Several worker processes on one port (`--workers N`), supervised here.

Each worker is a whole server (its own subscriber and sessions) bound with
`SO_REUSEPORT`; they share Redis. SIGTERM/SIGINT is forwarded to every worker,
which drains its own streams; a worker that dies on its own is restarted.
Hypercorn's own multi-worker mode is not used: it kills busy workers on
SIGTERM (docs/design-notes.md#workers-without-hypercorn-w).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from types import FrameType

from .settings import Settings

log = logging.getLogger(__name__)

_POLL_SECONDS = 0.2
_RESTART_DELAY_SECONDS = 1.0
_STOP_MARGIN_SECONDS = 3.0


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind (without listening) a `SO_REUSEPORT` socket so port 0 means one port for all."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._workers: dict[int, subprocess.Popen[bytes]] = {}
        self._stopping = False
        self._metrics_dir: str | None = None

    def _spawn(self, index: int, port: int) -> None:
        env = dict(os.environ)
        if self._metrics_dir is not None:
            env["PROMETHEUS_MULTIPROC_DIR"] = self._metrics_dir
        env.update(
            {
                "AURA_HOST": self._settings.host,
                "AURA_PORT": str(port),
                "AURA_WORKERS": str(self._settings.workers),
                "REDIS_URL": self._settings.redis_url or "",
                "SECRET_KEY": self._settings.secret,
            }
        )
        command = [sys.executable, "-m", "aura_trio", "serve", "--worker-index", str(index)]
        self._workers[index] = subprocess.Popen(command, env=env)
        log.info(
            "worker %d started (pid %d)", index, self._workers[index].pid, extra={"worker": index}
        )

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self._stopping:
            log.info("received %s: stopping workers", signal.Signals(signum).name)
        self._stopping = True

    def run(self, on_ready: Callable[[int], None] | None = None) -> int:
        """Run the workers until a signal; returns the exit status.

        `on_ready` gets the port once the workers are started.
        """
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        reserved = reserve_port(self._settings.host, self._settings.port)
        port = reserved.getsockname()[1]
        if self._settings.metrics:
            # One /metrics for all workers: prometheus-client's multiprocess mode.
            self._metrics_dir = tempfile.mkdtemp(prefix="aura-metrics-")
        try:
            for index in range(self._settings.workers):
                self._spawn(index, port)
            log.info("supervising %d workers on port %d", self._settings.workers, port)
            if on_ready is not None:
                on_ready(port)
            while not self._stopping:
                time.sleep(_POLL_SECONDS)
                for index, process in list(self._workers.items()):
                    code = process.poll()
                    if code is not None and not self._stopping:
                        self._forget_metrics_of(process.pid)
                        log.error(
                            "worker %d exited with %d; restarting",
                            index,
                            code,
                            extra={"worker": index},
                        )
                        time.sleep(_RESTART_DELAY_SECONDS)
                        self._spawn(index, port)
            return self._stop()
        finally:
            reserved.close()
            if self._metrics_dir is not None:
                shutil.rmtree(self._metrics_dir, ignore_errors=True)
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _forget_metrics_of(self, pid: int) -> None:
        if self._metrics_dir is not None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(pid, self._metrics_dir)  # type: ignore[no-untyped-call]

    def _stop(self) -> int:
        for process in self._workers.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self._settings.shutdown_grace_seconds + _STOP_MARGIN_SECONDS
        status = 0
        for index, process in self._workers.items():
            try:
                code = process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error(
                    "worker %d did not stop in time; killing it", index, extra={"worker": index}
                )
                process.kill()
                code = process.wait()
            # A worker still starting up when the signal came dies of it, having served nothing.
            status = status or (0 if code in (0, -signal.SIGTERM) else 1)
        return status
