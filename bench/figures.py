"""The figures a report compares, and the targets of issue 3, read from `results.json`.

A figure is one number per target: a function of one scenario's result, taken
as the median over the rounds that ran.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Result = dict[str, Any]
Data = dict[str, Any]


def runs_of(data: Data, scenario: str, target: str, params: dict[str, Any]) -> list[Result]:
    """Results of `scenario` on `target` whose parameters include `params`."""
    return [
        run["result"]
        for run in data["runs"]
        if run["scenario"] == scenario
        and run["target"] == target
        and "failed" not in run["result"]
        and all(run["params"].get(k) == v for k, v in params.items())
    ]


def variants(data: Data, scenario: str, key: str) -> list[Any]:
    """The values parameter `key` took in `scenario`'s runs, in run order."""
    seen: list[Any] = []
    for run in data["runs"]:
        if run["scenario"] == scenario and run["params"].get(key) not in seen:
            seen.append(run["params"].get(key))
    return seen


def idle_point(result: Result, sessions: int) -> Result | None:
    """The idle measurement taken at level `sessions` (or the last level below it)."""
    below = [i for i, level in enumerate(result["levels"]) if level <= sessions] or [0]
    points = result["points"]
    return points[below[-1]] if below[-1] < len(points) else None


def _at_level(level: int, key: str, scale: float = 1.0) -> Callable[[Result], float | None]:
    def read(result: Result) -> float | None:
        point = idle_point(result, level)
        return None if point is None else point[key] / scale

    return read


@dataclass(frozen=True)
class Figure:
    scenario: str
    name: str
    read: Callable[[Result], float | None]
    unit: str = ""
    higher_is_better: bool = False
    digits: int = 1
    params: dict[str, Any] = field(default_factory=dict)

    def value(self, data: Data, target: str) -> float | None:
        values = [self.read(r) for r in runs_of(data, self.scenario, target, self.params)]
        numbers = [v for v in values if v is not None and not math.isnan(v)]
        return statistics.median(numbers) if numbers else None

    def text(self, data: Data, target: str) -> str:
        return fmt(self.value(data, target), self.digits, self.unit)

    def advantage(self, data: Data) -> float | None:
        """How many times better aura is than the peer (above 1: ahead)."""
        aura, peer = self.value(data, "aura"), self.value(data, "peer")
        if aura is None or peer is None:
            return None
        better, worse = (aura, peer) if self.higher_is_better else (peer, aura)
        if worse == 0:
            return None if better == 0 else math.inf
        return better / worse


def _latency(quantile: str) -> Callable[[Result], float | None]:
    return lambda result: float(result["latency"][f"{quantile}_ms"])


def _from_sent(quantile: str) -> Callable[[Result], float | None]:
    # Absent from results of runs before it was measured.
    return lambda result: (
        float(result["from_sent"][f"{quantile}_ms"]) if "from_sent" in result else None
    )


def fmt(value: float | None, digits: int = 1, unit: str = "") -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f} {unit}".strip()


def idle_levels(data: Data) -> list[int]:
    for run in data["runs"]:
        if run["scenario"] == "idle":
            return list(run["params"]["levels"])
    return []


def figures(data: Data) -> list[Figure]:
    """Everything compared between aura and the peer, in the issue's order."""
    out = []
    levels = idle_levels(data)
    for level in levels:
        out.append(Figure("idle", f"server RSS per waiting session at {level:,}",
                          _at_level(level, "rss_per_session", 1024), "KB"))  # fmt: skip
    if levels:
        top = max(levels)
        out += [
            Figure("idle", f"server CPU while {top:,} sessions idle (heartbeats on)",
                   _at_level(top, "server_cpu_pct"), "% of a core"),
            Figure("idle", f"Redis connections at {top:,}", _at_level(top, "redis_clients"),
                   digits=0),
            Figure("idle", f"Redis memory at {top:,}",
                   _at_level(top, "redis_used_memory", 1024**2), "MB"),
        ]  # fmt: skip
    for q in ("p50", "p99", "max"):
        out.append(Figure("approval", f"approval → next event {q}", _latency(q), "ms", digits=2))
    for q in ("p50", "p99"):
        out.append(Figure("approval", f"approve sent → next event {q}", _from_sent(q), "ms",
                          digits=2))  # fmt: skip
    for c in variants(data, "roundtrip", "concurrency"):
        p = {"concurrency": c}
        out += [
            Figure("roundtrip", f"completed sessions/s at C={c}", lambda r: r["sessions_per_s"],
                   "/s", higher_is_better=True, digits=0, params=p),
            Figure("roundtrip", f"p99 session time at C={c}",
                   lambda r: r["session_time"]["p99_ms"], "ms", params=p),
            Figure("roundtrip", f"errors at C={c}", lambda r: r["errors"], digits=0, params=p),
        ]  # fmt: skip
    out += [
        Figure("teardown", "disconnect → `cancelled` in Redis p50",
               lambda r: r["latency"]["p50_ms"], "ms", digits=2),
        Figure("teardown", "disconnect → `cancelled` in Redis p99",
               lambda r: r["latency"]["p99_ms"], "ms", digits=2),
        Figure("teardown", "connect → hitl → disconnect cycles/s", lambda r: r["cycles_per_s"],
               "/s", higher_is_better=True, digits=0),
        Figure("streaming", "events/s (one worker process)", lambda r: r["events_per_s"], "/s",
               higher_is_better=True, digits=0),
        Figure("streaming", "server CPU per event", lambda r: r["server_cpu_us_per_event"], "µs"),
    ]  # fmt: skip
    return out


def transports(data: Data) -> list[tuple[str, Figure, Figure]]:
    """aura's figures over SSE and over the WebSocket, side by side: (name, SSE, WebSocket)."""
    out = []
    for c in variants(data, "ws_roundtrip", "concurrency"):
        p = {"concurrency": c}
        for name, read, unit, higher in (
            (f"round trips/s at C={c}", lambda r: r["sessions_per_s"], "/s", True),
            (f"p99 round trip at C={c}", lambda r: r["session_time"]["p99_ms"], "ms", False),
            (f"server CPU per round trip at C={c}",
             lambda r: 1000 * r["server_cpu_s"] / max(1, r["completed"]), "ms", False),
        ):  # fmt: skip
            out.append((name, Figure("roundtrip", name, read, unit, higher, 2, p),
                        Figure("ws_roundtrip", name, read, unit, higher, 2, p)))  # fmt: skip
    if variants(data, "ws_streaming", "words"):
        for name, read, unit, higher in (
            ("events/s", lambda r: r["events_per_s"], "/s", True),
            ("server CPU per event", lambda r: r["server_cpu_us_per_event"], "µs", False),
        ):
            out.append((name, Figure("streaming", name, read, unit, higher, 1),
                        Figure("ws_streaming", name, read, unit, higher, 1)))  # fmt: skip
    return out


# --- targets -------------------------------------------------------------------------


@dataclass(frozen=True)
class Goal:
    """A target of issue 3: met or not is decided on aura's figures."""

    scenario: str
    text: str
    reached: Callable[[Data, str], str]
    met: Callable[[Data], bool | None]


def _limit(figure: Figure, limit: float) -> Callable[[Data], bool | None]:
    def met(data: Data) -> bool | None:
        value = figure.value(data, "aura")
        if value is None:
            return None
        return value >= limit if figure.higher_is_better else value <= limit

    return met


def _redis_counts(data: Data, target: str) -> list[float | None]:
    return [
        Figure("idle", "", _at_level(level, "redis_clients")).value(data, target)
        for level in idle_levels(data)
    ]


def _redis_text(data: Data, target: str) -> str:
    counts = _redis_counts(data, target)
    if not counts or None in counts:
        return "–"
    shown = " / ".join(f"{c:.0f}" for c in counts if c is not None)
    return f"{shown} at {' / '.join(f'{n:,}' for n in idle_levels(data))} sessions"


def _redis_met(data: Data) -> bool | None:
    counts = _redis_counts(data, "aura")
    if not counts or None in counts:
        return None
    # A pool that fills up to its size is still bounded: what matters is no growth with N.
    return all(c is not None and c <= 17 for c in counts)


def _throughput(data: Data) -> Figure:
    top = max(variants(data, "roundtrip", "concurrency") or [0])
    return Figure("roundtrip", "", lambda r: r["sessions_per_s"], "/s", True, 0,
                  {"concurrency": top})  # fmt: skip


def _throughput_text(data: Data, target: str) -> str:
    figure = _throughput(data)
    errors = Figure("roundtrip", "", lambda r: r["errors"], params=figure.params)
    text = (f"{figure.text(data, target)} at C={figure.params['concurrency']}, "
            f"{fmt(errors.value(data, target), 0)} errors")  # fmt: skip
    ratio = figure.advantage(data)
    if target == "aura" and ratio is not None:
        text += f" (**{ratio:.2f}×** the peer)"
    return text


def _throughput_met(data: Data) -> bool | None:
    figure = _throughput(data)
    ratio = figure.advantage(data)
    errors = Figure("roundtrip", "", lambda r: r["errors"], params=figure.params)
    if ratio is None:
        return None
    return ratio >= 1.5 and errors.value(data, "aura") == 0


def _teardown(data: Data, target: str) -> Result | None:
    results = runs_of(data, "teardown", target, {})
    return results[len(results) // 2] if results else None


def _leak_text(data: Data, target: str) -> str:
    r = _teardown(data, target)
    if r is None:
        return "–"
    names = {"tasks": "tasks", "threads": "threads", "fds_not_redis": "fds (not Redis)",
             "redis_clients": "Redis connections"}  # fmt: skip
    moved = ", ".join(f"{n} {r['baseline'][k]}→{r['settled'][k]}" for k, n in names.items())
    return f"{'LEAK' if r['leaked'] else 'no leak'} after {r['cycles']:,} cycles ({moved})"


def _leak_met(data: Data) -> bool | None:
    results = runs_of(data, "teardown", "aura", {})
    if not results:
        return None
    return all(not r["leaked"] and r["settled"]["redis_clients"] <= 17 for r in results)


def goals() -> list[Goal]:
    rss5k = Figure("idle", "", _at_level(5000, "rss_per_session", 1024), "KB")
    approval = Figure("approval", "", lambda r: r["latency"]["p99_ms"], "ms", digits=2)
    teardown = Figure("teardown", "", lambda r: r["latency"]["p99_ms"], "ms", digits=2)
    streaming = Figure("streaming", "", lambda r: r["events_per_s"], "/s", True, 0)
    return [
        Goal("idle", "≤ 40 KB server RSS per waiting session at 5k sessions",
             rss5k.text, _limit(rss5k, 40)),
        Goal("idle", "Redis connections bounded (≤ 16 + 1 subscriber) whatever N is",
             _redis_text, _redis_met),
        Goal("approval", "approval → next event p99 ≤ 10 ms at 1,000 waiting sessions",
             approval.text, _limit(approval, 10)),
        Goal("roundtrip", "round-trip throughput ≥ 1.5× the peer's at C = 200, zero errors",
             _throughput_text, _throughput_met),
        Goal("teardown", "teardown p99 ≤ 50 ms", teardown.text, _limit(teardown, 50)),
        Goal("teardown", "no leak after 10k connect/disconnect cycles (tasks, threads, fds back "
             "to baseline; Redis connections within the pool)", _leak_text, _leak_met),
        Goal("streaming", "≥ 20,000 events/s per worker", streaming.text,
             _limit(streaming, 20000)),
    ]  # fmt: skip


# --- the targets of issues 12 and 13: aura against the peer -------------------------


def _versus_peer(*figures_: Figure) -> Callable[[Data], bool | None]:
    """Met when aura does at least as well as the peer on every one of `figures_`."""

    def met(data: Data) -> bool | None:
        ratios = [f.advantage(data) for f in figures_]
        if None in ratios:
            return None
        return all(r is not None and r >= 1.0 for r in ratios)

    return met


def _joined(*figures_: Figure) -> Callable[[Data, str], str]:
    return lambda data, target: " / ".join(f.text(data, target) for f in figures_)


def _longest_pause(data: Data, level: int, target: str) -> float | None:
    """The longest collector pause of any round at `level` sessions."""
    values = [_at_level(level, "gc_max_pause_ms")(r) for r in runs_of(data, "idle", target, {})]
    numbers = [v for v in values if v is not None]
    return max(numbers) if numbers else None


def _longest_pause_text(level: int) -> Callable[[Data, str], str]:
    def text(data: Data, target: str) -> str:
        longest = _longest_pause(data, level, target)
        return "–" if longest is None else fmt(longest, 0, "ms") + " (longest of the rounds)"

    return text


def _longest_pause_met(level: int) -> Callable[[Data], bool | None]:
    def met(data: Data) -> bool | None:
        longest = _longest_pause(data, level, "aura")
        return None if longest is None else longest <= 50

    return met


def _threads_text(data: Data, target: str) -> str:
    r = _teardown(data, target)
    if r is None:
        return "–"
    before, after = r["baseline"]["threads"], r["settled"]["threads"]
    return f"{after} in all after the teardown cycles ({before} before)"


def _threads_met(data: Data) -> bool | None:
    r = _teardown(data, "aura")
    return None if r is None else r["settled"]["threads"] == 1 and r["baseline"]["threads"] == 1


def round_goals(data: Data) -> list[Goal]:
    """Issue 12 (Redis without threads) and issue 13 (no stalls at scale)."""
    top = max(idle_levels(data) or [9000])
    idle_cpu = Figure("idle", "", _at_level(top, "server_cpu_pct"), "% of a core")
    rss5k = Figure("idle", "", _at_level(5000, "rss_per_session", 1024), "KB")
    p50 = Figure("approval", "", _latency("p50"), "ms", digits=2)
    p99 = Figure("approval", "", _latency("p99"), "ms", digits=2)
    sent50, sent99 = (Figure("approval", "", _from_sent(q), "ms", digits=2) for q in ("p50", "p99"))
    throughput = [
        Figure("roundtrip", "", lambda r: r["sessions_per_s"], "/s", True, 0, {"concurrency": c})
        for c in variants(data, "roundtrip", "concurrency")
    ]
    errors = [
        Figure("roundtrip", "", lambda r: r["errors"], digits=0, params=f.params)
        for f in throughput
    ]

    def throughput_met(data: Data) -> bool | None:
        met = _versus_peer(*throughput)(data)
        return None if met is None else met and all(e.value(data, "aura") == 0 for e in errors)

    return [
        Goal("idle", f"longest collector pause at {top:,} idle sessions ≤ 50 ms",
             _longest_pause_text(top), _longest_pause_met(top)),
        Goal("idle", f"server CPU while {top:,} sessions idle ≤ the peer's",
             idle_cpu.text, _versus_peer(idle_cpu)),
        Goal("idle", "server RSS per waiting session at 5k ≤ 40 KB", rss5k.text,
             _limit(rss5k, 40)),
        Goal("approval", "approval response → next event p50 / p99 ≤ the peer's at 1,000 "
             "waiting", _joined(p50, p99), _versus_peer(p50, p99)),
        Goal("approval", "(not a target) approve sent → next event p50 / p99",
             _joined(sent50, sent99), lambda data: None),
        Goal("roundtrip", "round trip ≥ 1.0× the peer at C = "
             + " and ".join(str(f.params["concurrency"]) for f in throughput) + ", zero errors",
             _joined(*throughput), throughput_met),
        Goal("teardown", "server threads under load: none for Redis", _threads_text,
             _threads_met),
    ]  # fmt: skip
