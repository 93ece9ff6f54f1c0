"""Scenario 4, teardown: clients that go away while waiting for approval.

Latency: W sessions wait, then their clients disconnect one after another at a
steady rate; one poller reads every outstanding request from Redis each
millisecond (one MGET) and notes when it reads `cancelled`.

Leaks: after K connect → `hitl` → disconnect cycles, the server's task count,
thread count and open descriptors, and Redis's connections, are compared with
the baseline taken before them. The baseline is taken after a first batch of
cycles at the same concurrency, so pools (Redis connections, worker threads)
have grown to what that load needs; threads a pool keeps for a while after use
are given up to `settle_seconds` to go. Descriptors are judged without the
server's Redis connections (a pool that is still filling up to its size is not a
leak); Redis connections are reported beside them.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import trio

from ..load import CONNECTION_ERRORS, WAITING_PROMPT, open_until_hitl
from ..measure import Context, Errors, latency_figures

POLL_SECONDS = 0.001
WARMUP_ROUNDS = 10  # cycles per client before the baseline


async def _resources(ctx: Context) -> dict[str, int]:
    sample = ctx.server_sample()  # before our stats request adds a descriptor
    stats = await ctx.server_stats()
    redis_figures = await ctx.redis_figures()
    redis_clients = redis_figures["redis_clients"]
    return {
        "tasks": int(stats["tasks"]),
        "threads": sample.threads,
        "fds": sample.fds,
        "fds_not_redis": sample.fds - redis_clients,
        "redis_clients": redis_clients,
    }


async def run(
    ctx: Context,
    *,
    waiting: int,
    disconnect_rate: float,
    cycles: int,
    cycle_concurrency: int,
    settle_seconds: float,
    quiet_seconds: float,
) -> dict[str, Any]:
    target = ctx.target
    errors = Errors(ctx.status)
    done = [0]

    async def cycle(index: int, count: int) -> None:
        raw = target.stream_request(WAITING_PROMPT, index)
        for _ in range(count):
            try:
                stream, _ = await open_until_hitl(target, raw)
                stream.close()
            except CONNECTION_ERRORS as exc:
                errors.note(exc)
            done[0] += 1
            ctx.status["cycles"] = done[0]

    async def cycles_of(total: int) -> float:
        """`total` cycles over `cycle_concurrency` clients; returns the seconds taken."""
        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            for index in range(cycle_concurrency):
                count = total // cycle_concurrency + (index < total % cycle_concurrency)
                nursery.start_soon(cycle, index, count)
        return trio.current_time() - started

    ctx.status["phase"] = "pre-cycles"
    await cycles_of(WARMUP_ROUNDS * cycle_concurrency)
    await trio.sleep(quiet_seconds)
    baseline = await _resources(ctx)
    done[0] = 0

    # --- latency --------------------------------------------------------------
    ctx.status["phase"] = "latency"
    streams = []
    for index in range(waiting):
        stream, request_id = await open_until_hitl(
            target, target.stream_request(WAITING_PROMPT, index)
        )
        streams.append((stream, request_id))
    closed_at: dict[str, float] = {}
    cancelled_at: dict[str, float] = {}
    other_status: Counter[str] = Counter()

    async def poll() -> None:
        while len(cancelled_at) < len(streams):
            outstanding = [r for r in closed_at if r not in cancelled_at]
            if outstanding:
                keys = [f"hitl:request:{r}" for r in outstanding]

                def read(client: Any, keys: list[str] = keys) -> Any:
                    return client.mget(keys)

                values = await ctx.redis_call(read)
                now = trio.current_time()
                for request_id, raw in zip(outstanding, values, strict=True):
                    status = json.loads(raw)["status"] if raw else "missing"
                    if status == "cancelled":
                        cancelled_at[request_id] = now
                    elif status != "pending":
                        other_status[status] += 1
                        cancelled_at[request_id] = now
            await trio.sleep(POLL_SECONDS)

    ctx.lags.clear()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(poll)
        start = trio.current_time()
        for index, (stream, request_id) in enumerate(streams):
            await trio.sleep_until(start + index / disconnect_rate)
            stream.close()
            closed_at[request_id] = trio.current_time()
            ctx.status["closed"] = index + 1
        with trio.move_on_after(10):
            while len(cancelled_at) < len(streams):
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    latencies = [cancelled_at[r] - closed_at[r] for r in closed_at if r in cancelled_at]
    stalls = ctx.lag_figures()
    not_cancelled = len(streams) - len(latencies) + sum(other_status.values())

    # --- leaks ----------------------------------------------------------------
    ctx.status["phase"] = "cycles"
    cycle_seconds = await cycles_of(cycles)
    ctx.status["phase"] = "settle"
    await trio.sleep(quiet_seconds)
    after = await _resources(ctx)
    settled = after
    deadline = trio.current_time() + settle_seconds
    judged = ("tasks", "threads", "fds_not_redis")
    while any(settled[k] > baseline[k] for k in judged) and trio.current_time() < deadline:
        await trio.sleep(1.0)
        settled = await _resources(ctx)
    leaked = {k: settled[k] - baseline[k] for k in judged if settled[k] > baseline[k]}
    return {
        "waiting": waiting,
        "cycles": cycles,
        **latency_figures(latencies),
        "not_cancelled": not_cancelled,
        "other_status": dict(other_status),
        "cycles_per_s": cycles / cycle_seconds,
        "baseline": baseline,
        "after_quiet": after,
        "settled": settled,
        "leaked": leaked,
        **stalls,
        **errors.figures(more=not_cancelled),
    }
