"""Pauses of the garbage collector, timed from inside a server (diagnostics).

Both servers expose it on `GET /bench/stats?gctrace=on|get`.
"""

from __future__ import annotations

import gc
import time
from typing import Any

_pauses: list[tuple[int, float, float]] = []
_started: list[float] = []
_origin = time.monotonic()


def _on_gc(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _started[:] = [time.perf_counter()]
    elif _started:
        _pauses.append((info["generation"], time.perf_counter() - _started[0], time.monotonic()))


def trace(what: str) -> dict[str, Any]:
    """`on`: time every collection from now; `get`: pauses by generation, and the
    full collections with when they ended (seconds since `on`)."""
    global _origin
    if what == "on":
        _pauses.clear()
        _origin = time.monotonic()
        if _on_gc not in gc.callbacks:
            gc.callbacks.append(_on_gc)
        return {}
    result: dict[str, Any] = {"tracked_objects": len(gc.get_objects())}
    for generation in (0, 1, 2):
        times = sorted(t for g, t, _ in _pauses if g == generation)
        if times:
            result[str(generation)] = {
                "count": len(times),
                "max_ms": round(1000 * times[-1], 1),
                "total_ms": round(1000 * sum(times), 1),
            }
    result["full"] = [(round(at - _origin, 1), round(1000 * t)) for g, t, at in _pauses if g == 2]
    return result
