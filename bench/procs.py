"""The processes a run needs: a private redis-server and the server under test.

Started and stopped by :mod:`bench.harness` (shared with the tests). Resource
figures come from `/proc` (Linux), so the aura half of the bench needs nothing
beyond the runtime and test dependencies.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import harness
from .harness import HOST

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


@contextmanager
def run_redis(directory: Path) -> Iterator[harness.RedisServer]:
    """A fresh redis-server (no persistence) for one measurement."""
    with harness.running_redis(directory, "--maxclients", "19000") as server:
        yield server


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


@contextmanager
def run_server(target: str, env: dict[str, str], log_path: Path) -> Iterator[harness.ServerProcess]:
    """Start `target` on port 0 (its port read from its log); SIGTERM (then KILL) on exit."""
    with harness.running_server(
        server_command(target), env=env, log_path=log_path, cwd=REPO_ROOT
    ) as server:
        yield server
