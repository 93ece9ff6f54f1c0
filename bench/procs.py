"""The processes a run needs: a private redis-server and the server under test.

Each is a child process on a free loopback port, stopped (SIGTERM, then KILL)
on exit. Resource figures come from `/proc` (Linux), so the aura half of the
bench needs nothing beyond the runtime and test dependencies.
"""

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

import redis

from aura_trio.embedded_redis import find_server_binary

HOST = "127.0.0.1"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, slots=True)
class ProcSample:
    """One reading of a process: memory in bytes, CPU in seconds."""

    rss: int
    cpu: float
    threads: int
    fds: int


def sample(pid: int) -> ProcSample:
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    # Fields after the command: state is [0]; utime, stime are [11], [12]; threads [17].
    cpu = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    threads = int(fields[17])
    with open(f"/proc/{pid}/statm", "rb") as f:
        rss = int(f.read().split()[1]) * _PAGE
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return ProcSample(rss=rss, cpu=cpu, threads=threads, fds=fds)


def self_cpu() -> float:
    """CPU seconds of this process (all its threads)."""
    times = os.times()
    return times.user + times.system


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class Redis:
    process: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host=HOST, port=self.port, socket_timeout=10)


@contextmanager
def run_redis(directory: Path) -> Iterator[Redis]:
    """A fresh redis-server (no persistence) for one measurement."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    process = subprocess.Popen(
        [find_server_binary(), "--port", str(port), "--bind", HOST, "--save", "",
         "--appendonly", "no", "--maxclients", "19000", "--dir", str(directory),
         "--logfile", str(directory / "redis.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    server = Redis(process, port)
    try:
        deadline = time.monotonic() + 10
        client = server.client()
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        client.close()
        yield server
    finally:
        _stop(process, 5)


TARGETS = ("aura", "peer")


def server_command(target: str) -> list[str]:
    """A target, or `bare-<stack>`: a bare stack of `bench.peers.bare` (the `floor` scenario)."""
    if target.startswith("bare-"):
        stack = ["--stack", target.removeprefix("bare-")]
        return [sys.executable, "-m", "bench.peers.bare", *stack, "--host", HOST, "--port", "0"]
    module = {"aura": "bench.aura_server", "peer": "bench.peers.asyncio_peer"}[target]
    return [sys.executable, "-m", module, "--host", HOST, "--port", "0"]


def server_env(redis_url: str, secret: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The same settings for both servers (the peer reads the names aura reads)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "REDIS_URL": redis_url,
        "SECRET_KEY": secret,
        "AURA_EVENT_DELAY_SECONDS": "0",
        "AURA_HEARTBEAT_SECONDS": "15",
        "AURA_HITL_TIMEOUT_SECONDS": "300",
        # The bench spreads sessions over a few users; the per-user cap is not measured.
        "AURA_MAX_STREAMS_PER_USER": "100000",
        "AURA_MAX_SESSIONS": "19000",
        "AURA_LOG_LEVEL": "WARNING",
    }
    env.update(extra or {})
    return env


@dataclass
class Server:
    target: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def sample(self) -> ProcSample:
        return sample(self.pid)


@contextmanager
def run_server(target: str, env: dict[str, str], log_path: Path) -> Iterator[Server]:
    """Start `target` on a free port; SIGTERM (then KILL) on exit."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            server_command(target),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO_ROOT,
        )
    try:
        port = _wait_for_port(process, log_path, within=30)
        yield Server(target, process, port, log_path)
    finally:
        _stop(process, 15)


def _wait_for_port(process: subprocess.Popen[bytes], log_path: Path, within: float) -> int:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for line in log_path.read_text(errors="replace").splitlines():
            try:
                message = json.loads(line).get("msg", "")
            except (ValueError, AttributeError):
                continue
            if message.startswith("listening on http://"):
                return int(message.split()[2].rsplit(":", 1)[1])
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log_path.read_text()}")
        time.sleep(0.05)
    raise TimeoutError(f"server did not start:\n{log_path.read_text()}")


def _stop(process: subprocess.Popen[bytes], within: float) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(within)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
