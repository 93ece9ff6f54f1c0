"""The cost of `AURA_REDIS_MIN_REPLICAS`: a request's MULTI/EXEC with and without WAIT.

    python -m bench.replicated_writes [--writes 2000] [--concurrency 1 32] [--round-trip 50]

Starts its own primary and one replica (`--replicaof`) on free loopback ports
(`bench/harness.py`), then for each concurrency writes what opening a HITL request
writes (one MULTI/EXEC of SET, SET, ZADD, XADD) through :class:`Replicated` with
`replicas=0` (the shared pipelined connections, no WAIT) and `replicas=1` (a lent
connection: the transaction and `WAIT 1` as one chunk), and prints the median and
p99 wall time of one write and the writes per second. Bounded: each run is under
a `trio.fail_after`; both servers are stopped in `finally`.

`--round-trip C`: then the whole round trip (the bench's `roundtrip` scenario, C
clients in a closed loop, stream -> hitl -> approve -> [DONE]) against `aura-trio`
on that primary with `AURA_REDIS_MIN_REPLICAS` 0 and then 1, a fresh server each.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import trio

from aura_trio.bus.client import open_redis_client
from aura_trio.bus.replicated import Replicated
from bench import procs
from bench.harness import HOST, RedisServer, running_redis
from bench.load import SECRET, Target
from bench.measure import Context
from bench.runner import warm_up
from bench.scenarios import roundtrip

_FAST_SYNC = ("--repl-diskless-sync-delay", "0")


def _commands(n: int) -> list[tuple[object, ...]]:
    payload = b"x" * 400  # about a request's JSON
    return [
        ("SET", f"bench:request:{n}", payload, "EX", 60),
        ("SET", f"bench:session:{n}", payload[:120], "EX", 60),
        ("ZADD", "bench:pending", 0, f"{n:012d}"),
        ("XADD", "bench:audit", "MAXLEN", "~", 1000, "*", "entry", payload[:200]),
    ]


async def _run(url: str, replicas: int, writes: int, concurrency: int) -> tuple[list[float], float]:
    latencies: list[float] = []
    async with open_redis_client(url, timeout=3.0) as client:
        durable = Replicated(client, replicas=replicas, wait_timeout=1.5)
        await durable.transaction(_commands(-1))  # connected, and a lent one opened
        counter = iter(range(writes))

        async def writer() -> None:
            for n in counter:
                started = time.perf_counter()
                await durable.transaction(_commands(n))  # type: ignore[arg-type]
                latencies.append(time.perf_counter() - started)

        began = time.perf_counter()
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                for _ in range(concurrency):
                    nursery.start_soon(writer)
        return latencies, time.perf_counter() - began


async def _round_trip(ctx: Context, concurrency: int) -> dict[str, object]:
    await warm_up(ctx.target)
    return await roundtrip.run(ctx, concurrency=concurrency, seconds=10.0, warmup=2.0)


def _round_trips(primary: RedisServer, directory: Path, concurrency: int) -> None:
    print(
        f"\n| round trip, C={concurrency} | min-replicas | sessions/s | p50 ms | p99 ms | errors |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for replicas in (0, 1):
        env = procs.server_env(primary.url, SECRET, {"AURA_REDIS_MIN_REPLICAS": str(replicas)})
        log_path = directory / f"server-{replicas}.log"
        with procs.run_server("aura", env, log_path) as server:
            ctx = Context(
                target=Target("aura", HOST, server.port),
                server=server,
                redis_server=primary,
                label=f"roundtrip min-replicas={replicas}",
            )
            try:
                result = trio.run(_round_trip, ctx, concurrency)
            finally:
                ctx.close()
        times = result["session_time"]
        assert isinstance(times, dict)
        print(
            f"| aura | {replicas} | {result['sessions_per_s']:.0f} | {times['p50_ms']:.1f} "
            f"| {times['p99_ms']:.1f} | {result['errors']} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--writes", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--round-trip", type=int, metavar="C", help="also the round trip at C")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="aura-bench-wait-") as directory,
        running_redis(Path(directory) / "primary", *_FAST_SYNC) as primary,
        running_redis(
            Path(directory) / "replica", *_FAST_SYNC, "--replicaof", HOST, str(primary.port)
        ) as replica,
    ):
        raw = replica.client()
        deadline = time.monotonic() + 15
        while raw.info("replication").get("master_link_status") != "up":
            if time.monotonic() > deadline:
                raise TimeoutError("the replica did not sync")
            time.sleep(0.05)  # another process's state: bounded polling
        print("| callers | min-replicas | median ms | p99 ms | writes/s |")
        print("|---:|---:|---:|---:|---:|")
        for concurrency in args.concurrency:
            for replicas in (0, 1):
                latencies, took = trio.run(_run, primary.url, replicas, args.writes, concurrency)
                latencies.sort()
                p99 = latencies[int(len(latencies) * 0.99) - 1]
                print(
                    f"| {concurrency} | {replicas} | {statistics.median(latencies) * 1000:.3f} "
                    f"| {p99 * 1000:.3f} | {len(latencies) / took:,.0f} |"
                )
        if args.round_trip:
            _round_trips(primary, Path(directory), args.round_trip)


if __name__ == "__main__":
    main()
