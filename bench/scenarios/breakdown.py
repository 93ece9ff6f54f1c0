"""Where a round trip's server CPU goes: scenario 3's closed loop, profiled.

C clients do stream → `hitl` → approve → `[DONE]` as in `roundtrip`, while py-spy
samples the server (`--gil`: only what holds the GIL, i.e. costs CPU) over the
measured window. The samples are sorted into layers (HTTP stack, the app's
routes, Redis client, session, logging, scheduler: `bench.profile.layers`), so
that with the window's server CPU per round trip each layer's share reads in ms
per round trip. Profiling slows the server a little, so the throughput of this
run is not the one to quote: `roundtrip` measures that without a profiler.

Without py-spy (it comes with the bench extra) the run is measured and says so.
"""

from __future__ import annotations

from typing import Any

import trio

from .. import profile
from ..measure import Context
from . import roundtrip

TOP_FUNCTIONS = 15


async def run(ctx: Context, *, concurrency: int, seconds: float, warmup: float) -> dict[str, Any]:
    out = ctx.server.log_path.parent / "breakdown"
    profiler: list[profile.Profiler] = []

    async def start_profiler() -> None:
        await trio.sleep(warmup)  # as the closed loop opens its window
        if profile.py_spy() is not None:
            profiler.append(profile.Profiler(ctx.server.pid, out))

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(start_profiler)
            result = await roundtrip.run(
                ctx, concurrency=concurrency, seconds=seconds, warmup=warmup
            )
    except BaseException:
        for running in profiler:
            running.stop()
        raise
    result.pop("session_times_ms", None)
    result["server_cpu_ms_per_round_trip"] = (
        1000 * result["server_cpu_s"] / max(1, result["completed"])
    )
    result["gc_ms_per_round_trip"] = result["gc_ms"] / max(1, result["completed"])
    if not profiler:
        result["profile"] = {"skipped": "py-spy is not installed (pip install -e '.[bench]')"}
        return result
    summary = profiler[0].stop()
    stacks = out.with_suffix(".stacks")
    collapsed = stacks.read_text() if stacks.exists() else ""
    result["profile"] = {
        **profile.layers(collapsed),
        "top_self": profile.top_self(collapsed, TOP_FUNCTIONS),
        "files": [str(stacks), str(summary)],
    }
    return result
