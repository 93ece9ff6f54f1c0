"""Scenario 1, idle fleet: N sessions open and waiting for approval, heartbeats on.

Sessions are opened up to each level in turn (e.g. 1k, 5k, 9k); at each level the
server's RSS, Redis's clients and memory are read, then CPU is measured over an
idle window of one heartbeat period, so every session heartbeats once in it.
"""

from __future__ import annotations

from typing import Any

import trio

from ..load import CONNECTION_ERRORS, WAITING_PROMPT, open_until_hitl
from ..measure import Context, CpuMeter, Errors


async def run(
    ctx: Context,
    *,
    levels: list[int],
    idle_seconds: float,
    open_concurrency: int,
    ramp_every: int,
    quiet_seconds: float,
) -> dict[str, Any]:
    target = ctx.target
    errors = Errors(ctx.status)
    waiting = [0]
    heartbeats = [0]
    ended_early = [0]
    ramp: list[tuple[int, int]] = []
    opening = trio.Semaphore(open_concurrency)
    ctx.status["waiting"] = 0

    async def hold(index: int, opened: trio.Event) -> None:
        try:
            async with opening:
                stream, _ = await open_until_hitl(
                    target, target.stream_request(WAITING_PROMPT, index)
                )
        except CONNECTION_ERRORS as error:
            errors.note(error)
            opened.set()
            return
        waiting[0] += 1
        ctx.status["waiting"] = waiting[0]
        opened.set()
        try:
            while frames := await stream.frames():
                heartbeats[0] += sum(1 for f in frames if f == b": heartbeat")
            ended_early[0] += 1
        except OSError:
            ended_early[0] += 1
        finally:
            stream.close()

    base_sample = ctx.server_sample()
    base_redis = await ctx.redis_figures()
    points = []
    async with trio.open_nursery() as nursery:
        opened_count = 0
        for level in levels:
            while opened_count < level:
                batch = []
                for _ in range(min(ramp_every, level - opened_count)):
                    opened = trio.Event()
                    nursery.start_soon(hold, opened_count, opened)
                    batch.append(opened)
                    opened_count += 1
                for opened in batch:
                    await opened.wait()
                ramp.append((waiting[0], ctx.server_sample().rss))
            await trio.sleep(quiet_seconds)
            sample = ctx.server_sample()
            redis_now = await ctx.redis_figures()
            meter = CpuMeter(ctx)
            beats_before = heartbeats[0]
            await meter.start()
            await trio.sleep(idle_seconds)
            cpu = await meter.stop()
            n = waiting[0] - ended_early[0]
            points.append(
                {
                    "sessions": n,
                    "rss": sample.rss,
                    "rss_per_session": (sample.rss - base_sample.rss) / max(1, n),
                    "fds": sample.fds,
                    "threads": sample.threads,
                    "heartbeats_in_window": heartbeats[0] - beats_before,
                    **redis_now,
                    "redis_memory_per_session": (
                        redis_now["redis_used_memory"] - base_redis["redis_used_memory"]
                    )
                    / max(1, n),
                    **cpu,
                }
            )
        nursery.cancel_scope.cancel()
    return {
        "levels": levels,
        "baseline": {"rss": base_sample.rss, "fds": base_sample.fds, **base_redis},
        "points": points,
        "ramp": ramp,
        **errors.figures(),
        "ended_early": ended_early[0],
    }
