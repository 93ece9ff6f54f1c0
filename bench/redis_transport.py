"""CPU per Redis command: the Trio-native client (aura_trio.bus) vs redis-py in threads.

    python -m bench.redis_transport [--commands 20000] [--rounds 3]

(As a module from the repository's root: run as a file, bench/http.py would
shadow the standard library's `http`.)

Starts its own redis-server on a free loopback port (no persistence), then for 1
and for 32 concurrent callers measures `time.process_time()` (this process, all
threads) per `GET` of a small key, with:

- `bus`: :func:`aura_trio.bus.client.open_redis_client` (2 connections, hiredis);
- `to_thread`: what aura_trio.redis_bus does today, redis-py's sync client in
  `trio.to_thread.run_sync` under a limiter of 16 (its pool's size);
- `sync direct`: redis-py's sync client in a plain loop, no Trio, no threads: one
  caller only, to calibrate the machine.

Rounds alternate the clients; the table shows the median round. Bounded: every
measurement runs under a `trio.fail_after`, and Redis is killed at the end.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import redis
import trio

from aura_trio.bus.client import open_redis_client
from aura_trio.embedded_redis import find_server_binary

KEY = "bench:key"
VALUE = b"x" * 64
CALLERS = (1, 32)
BOUND_SECONDS = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis(directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    process = subprocess.Popen(
        [find_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(directory)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while True:
        try:
            if redis.Redis(port=port, socket_timeout=1).ping():
                return process, port
        except redis.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise
            time.sleep(0.02)


Get = Callable[[], Awaitable[object]]


async def cpu_per_command(get: Get, callers: int, commands: int) -> tuple[float, float]:
    """(CPU µs, wall µs) per command, `commands` split among `callers` tasks."""
    each = commands // callers

    async def caller() -> None:
        for _ in range(each):
            await get()

    for _ in range(min(200, each)):  # warm up: connections open, caches hot
        await get()
    cpu, wall = time.process_time(), time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(callers):
            nursery.start_soon(caller)
    done = each * callers
    return (time.process_time() - cpu) / done * 1e6, (time.perf_counter() - wall) / done * 1e6


async def measure_bus(port: int, callers: int, commands: int) -> tuple[float, float]:
    async with open_redis_client(f"redis://127.0.0.1:{port}/0", connections=2) as client:

        async def get() -> object:
            return await client.execute("GET", KEY)

        return await cpu_per_command(get, callers, commands)


async def measure_to_thread(port: int, callers: int, commands: int) -> tuple[float, float]:
    pool = redis.BlockingConnectionPool(  # type: ignore[no-untyped-call]
        host="127.0.0.1", port=port, max_connections=16, timeout=3, protocol=2
    )
    client = redis.Redis(connection_pool=pool)
    limiter = trio.CapacityLimiter(16)
    try:

        async def get() -> object:
            return await trio.to_thread.run_sync(
                client.get, KEY, limiter=limiter, abandon_on_cancel=True
            )

        return await cpu_per_command(get, callers, commands)
    finally:
        pool.disconnect()


def measure_sync_direct(port: int, commands: int) -> tuple[float, float]:
    client = redis.Redis(port=port, protocol=2)
    try:
        for _ in range(200):
            client.get(KEY)
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(commands):
            client.get(KEY)
        return (
            (time.process_time() - cpu) / commands * 1e6,
            (time.perf_counter() - wall) / commands * 1e6,
        )
    finally:
        client.close()


async def run_rounds(port: int, commands: int, rounds: int) -> dict[tuple[str, int], list[float]]:
    results: dict[tuple[str, int], list[float]] = {}
    for round_ in range(rounds):
        order = [("bus", measure_bus), ("to_thread", measure_to_thread)]
        if round_ % 2:
            order.reverse()
        for callers in CALLERS:
            # One caller is slow per command: fewer of them keep the run short.
            n = commands if callers > 1 else max(500, commands // 5)
            for name, measure in order:
                with trio.fail_after(BOUND_SECONDS):
                    cpu, wall = await measure(port, callers, n)
                results.setdefault((name, callers), []).append(cpu)
                results.setdefault((f"{name} wall", callers), []).append(wall)
                print(f"  round {round_ + 1}: {name:9} {callers:2} callers: "
                      f"{cpu:7.1f} µs CPU, {wall:7.1f} µs wall per command",
                      file=sys.stderr)  # fmt: skip
        cpu, wall = measure_sync_direct(port, max(500, commands // 5))
        results.setdefault(("sync direct", 1), []).append(cpu)
        results.setdefault(("sync direct wall", 1), []).append(wall)
    return results


def table(results: dict[tuple[str, int], list[float]]) -> str:
    lines = [
        "| client | callers | CPU µs/command | wall µs/command |",
        "|---|---:|---:|---:|",
    ]
    for name in ("bus", "to_thread", "sync direct"):
        for callers in CALLERS:
            if (name, callers) not in results:
                continue
            cpu = statistics.median(results[(name, callers)])
            wall = statistics.median(results[(f"{name} wall", callers)])
            lines.append(f"| {name} | {callers} | {cpu:.1f} | {wall:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--commands", type=int, default=20000, help="per 32-caller measurement")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="aura-bench-redis-") as directory:
        process, port = start_redis(Path(directory))
        try:
            redis.Redis(port=port).set(KEY, VALUE)
            results = trio.run(run_rounds, port, args.commands, args.rounds)
        finally:
            process.kill()
            process.wait()
    print(table(results))


if __name__ == "__main__":
    main()
