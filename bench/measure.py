"""What a scenario measures with: the server's and Redis's resources, the
client's own CPU, latency percentiles, and a progress line while it runs."""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
import trio

from . import harness, procs
from .http import KeepAliveClient
from .load import Target

LAG_PROBE_SECONDS = 0.005

# redis-py's sync client runs in threads (as in aura); one thread is plenty here.
_REDIS_LIMITER = trio.CapacityLimiter(1)


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0..100), nearest-rank on sorted data; nan if empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summarize_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p99/max (and count) of durations in seconds, as milliseconds."""
    return {
        "n": len(seconds),
        "p50_ms": percentile(seconds, 50) * 1000,
        "p99_ms": percentile(seconds, 99) * 1000,
        "max_ms": max(seconds) * 1000 if seconds else math.nan,
    }


def latency_figures(seconds: Sequence[float]) -> dict[str, Any]:
    """The summary of some durations, and all of them in ms (for the plots)."""
    return {"latency": summarize_ms(seconds), "latencies_ms": [x * 1000 for x in seconds]}


class Errors:
    """What went wrong in a scenario, by kind; the total shows in the progress line."""

    def __init__(self, status: dict[str, Any]) -> None:
        self._kinds: Counter[str] = Counter()
        self._status = status
        status["errors"] = 0

    def note(self, error: BaseException) -> None:
        self._kinds[f"{type(error).__name__}: {str(error)[:80]}"] += 1
        self._status["errors"] = self._kinds.total()

    def figures(self, more: int = 0) -> dict[str, Any]:
        """`errors` (plus `more` found otherwise) and the commonest kinds."""
        return {
            "errors": self._kinds.total() + more,
            "error_kinds": dict(self._kinds.most_common(5)),
        }


@dataclass
class Window:
    """Whether the measured window is open; clients count only what happens in it."""

    open: bool = False


async def closed_loop(
    ctx: Context,
    clients: int,
    client: Callable[[int], Awaitable[None]],
    window: Window,
    *,
    warmup: float,
    seconds: float,
) -> dict[str, Any]:
    """Run `client(0..clients-1)`, open `window` after `warmup` for `seconds`, then
    cancel them all; returns the window's CPU figures (:class:`CpuMeter`)."""
    meter = CpuMeter(ctx)
    async with trio.open_nursery() as nursery:
        for index in range(clients):
            nursery.start_soon(client, index)
        await trio.sleep(warmup)
        window.open = True
        await meter.start()
        await trio.sleep(seconds)
        window.open = False
        cpu = await meter.stop()
        nursery.cancel_scope.cancel()
    return cpu


@dataclass
class Context:
    """One server under test, its Redis, and a way to report progress."""

    target: Target
    server: harness.ServerProcess
    redis_server: harness.RedisServer
    label: str
    progress_every: float = 2.0
    status: dict[str, Any] = field(default_factory=dict)
    lags: list[float] = field(default_factory=list)
    _redis: redis.Redis | None = None

    # --- the server -----------------------------------------------------------

    def server_sample(self) -> procs.ProcSample:
        return procs.sample(self.server.pid)

    async def server_stats(self, query: str = "") -> dict[str, Any]:
        """`GET /bench/stats`: live task count (and threads) inside the server."""
        client = KeepAliveClient(self.target.host, self.target.port)
        target = "/bench/stats" + (f"?{query}" if query else "")
        try:
            # Connection: close, so probing leaves no idle connection behind to count.
            response = await client.request(self.target.get_request(target, close=True))
        finally:
            client.close()
        stats: dict[str, Any] = json.loads(response.body)
        return stats

    # --- Redis ----------------------------------------------------------------

    async def redis_call(self, fn: Callable[[redis.Redis], Any]) -> Any:
        if self._redis is None:
            self._redis = self.redis_server.client(timeout=10)
        client = self._redis
        return await trio.to_thread.run_sync(lambda: fn(client), limiter=_REDIS_LIMITER)

    async def redis_figures(self) -> dict[str, int]:
        """Clients connected to Redis (not counting ours) and its memory."""

        def read(client: redis.Redis) -> dict[str, int]:
            clients = client.client_list()
            memory = client.info("memory")
            return {
                "redis_clients": len(clients) - 1,
                "redis_pubsub_clients": sum(1 for c in clients if int(c.get("sub", 0)) > 0),
                "redis_used_memory": int(memory["used_memory"]),
            }

        figures: dict[str, int] = await self.redis_call(read)
        return figures

    def redis_cpu(self) -> float:
        return procs.sample(self.redis_server.process.pid).cpu

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()

    # --- the machine ----------------------------------------------------------

    async def watch_lag(self) -> None:
        """Note how late this process wakes from short sleeps, until cancelled.

        The load generator is mostly idle in the latency windows, so a late wake-up
        there means the machine stalled everyone (other tenants, steal), not that
        the server was slow. Windows reset it (:class:`CpuMeter`).
        """
        while True:
            before = trio.current_time()
            await trio.sleep(LAG_PROBE_SECONDS)
            self.lags.append(trio.current_time() - before - LAG_PROBE_SECONDS)

    def lag_figures(self) -> dict[str, float]:
        return {
            "client_lag_max_ms": 1000 * max(self.lags, default=0.0),
            "client_lags_over_20ms": sum(1 for lag in self.lags if lag > 0.020),
        }

    # --- progress -------------------------------------------------------------

    async def show_progress(self) -> None:
        """Print `status` every few seconds until cancelled."""
        start = trio.current_time()
        while True:
            await trio.sleep(self.progress_every)
            shown = " ".join(f"{k}={_fmt(v)}" for k, v in self.status.items())
            print(f"  [{self.label}] {trio.current_time() - start:5.1f}s {shown}", file=sys.stderr)


def _fmt(value: Any) -> str:
    return f"{value:.1f}" if isinstance(value, float) else str(value)


class CpuMeter:
    """CPU used by the server, Redis and this client between start() and stop(),
    and the server's garbage-collector pauses in that window."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    async def start(self) -> None:
        await self._ctx.server_stats("gctrace=on")
        self._ctx.lags.clear()
        self._t0 = trio.current_time()
        self._server0 = self._ctx.server_sample().cpu
        self._client0 = procs.self_cpu()
        self._redis0 = self._ctx.redis_cpu()

    async def stop(self) -> dict[str, Any]:
        wall = trio.current_time() - self._t0
        server = self._ctx.server_sample().cpu - self._server0
        client = procs.self_cpu() - self._client0
        redis_cpu = self._ctx.redis_cpu() - self._redis0
        pauses = (await self._ctx.server_stats("gctrace=get"))["gc_pauses"]
        generations = [pauses.get(str(g), {}) for g in (0, 1, 2)]
        return {
            "wall_s": wall,
            "server_cpu_s": server,
            "server_cpu_pct": 100 * server / wall,
            "client_cpu_pct": 100 * client / wall,
            "redis_cpu_pct": 100 * redis_cpu / wall,
            "gc_ms": sum(g.get("total_ms", 0.0) for g in generations),
            "gc_max_pause_ms": max((g.get("max_ms", 0.0) for g in generations), default=0.0),
            "gc_full": generations[2].get("count", 0),
            "gc_tracked_objects": pauses.get("tracked_objects"),
            **self._ctx.lag_figures(),
        }
