"""`REPORT.md` from `results.json`: targets vs reached, aura vs the peer, details.

With several rounds every figure is the median over them. `bench/ANALYSIS.md`
(what the profiles showed, what changed, why a figure is where it is) is
appended as written. Plots need matplotlib; without it the report says so.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from . import cpu_report, plots
from .figures import Data, Result, figures, goals, round_goals, runs_of, transports

ANALYSIS = Path(__file__).with_name("ANALYSIS.md")
FLEET = Path(__file__).with_name("FLEET.md")  # `python -m bench.fleet --publish`, its own run


def _mark(met: bool | None) -> str:
    return {True: "✅ met", False: "❌ missed", None: "–"}[met]


def _versus(ratio: float | None) -> str:
    if ratio is None:
        return "–"
    if abs(ratio - 1) < 0.005:
        return "even"
    return f"{ratio:.2f}× " + ("ahead" if ratio > 1 else "**behind**")


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _machine(data: Data) -> list[str]:
    m = data["machine"]
    redis_version = m["redis_server"].split(" sha=")[0]
    lines = _table(
        ["CPU", "cores", "RAM", "kernel", "OS", "Python", "Redis", "fd limit"],
        [[m["cpu"], str(m["cores"]), f"{m['ram_gib']} GiB", m["kernel"], m["os"], m["python"],
          redis_version, f"{m['fd_limit']:,}"]],
    )  # fmt: skip
    packages = ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v != "not installed")
    lines += ["", f"Packages: {packages}.", ""]
    before, after = data.get("load_before"), data.get("load_after")
    if before and after:
        avg = ", ".join(f"{x:.2f}" for x in before["loadavg"])
        avg_after = ", ".join(f"{x:.2f}" for x in after["loadavg"])
        lines.append(f"Load average before the run: {avg}; after: {avg_after}.")
        busy = [p for p in before["busiest"] if p["cpu_pct"] >= 5]
        if busy:
            shown = "; ".join(f"`{p['command']}` {p['cpu_pct']:.0f}%" for p in busy)
            lines.append(f"Busiest processes when it started: {shown}.")
        lines.append("")
    return lines


def _goals(data: Data) -> list[str]:
    targets = data["targets"]
    rows = [
        [goal.scenario, goal.text, *(goal.reached(data, t) for t in targets), _mark(goal.met(data))]
        for goal in goals()
        if any(runs_of(data, goal.scenario, t, {}) for t in targets)
    ]
    return _table(["scenario", "target", *targets, "aura"], rows)


def _round_goals(data: Data) -> list[str]:
    rows = [
        [goal.scenario, goal.text, goal.reached(data, "aura"), goal.reached(data, "peer"),
         _mark(goal.met(data)) if goal.met(data) is not None else ""]
        for goal in round_goals(data)
        if runs_of(data, goal.scenario, "aura", {})
    ]  # fmt: skip
    return _table(["scenario", "target", "aura", "peer", "aura"], rows)


def _comparison(data: Data) -> list[str]:
    rows = [
        [f.scenario, f.name, f.text(data, "aura"), f.text(data, "peer"), _versus(f.advantage(data))]
        for f in figures(data)
        if f.value(data, "aura") is not None or f.value(data, "peer") is not None
    ]
    return _table(["scenario", "figure", "aura", "peer", "aura vs peer"], rows)


# --- per-scenario details: one row per measurement -------------------------------------


def _gc(r: Result) -> str:
    """The garbage collector's share of the window: time, full collections, longest pause."""
    if "gc_ms" not in r:
        return "–"
    share = r["gc_ms"] / 10 / r["wall_s"]
    return f"{share:.1f}% ({r['gc_full']} full, max {r['gc_max_pause_ms']:,.0f} ms)"


def _lag(r: Result) -> str:
    """How much the load generator's own loop stalled: a machine-wide hiccup shows here."""
    if "client_lag_max_ms" not in r:
        return "–"
    return f"max {r['client_lag_max_ms']:.0f} ms, {r['client_lags_over_20ms']} > 20 ms"


def _idle_rows(target: str, r: Result) -> list[list[str]]:
    return [
        [target, f"{p['sessions']:,}", f"{p['rss'] / 1024**2:.1f} MB",
         f"{p['rss_per_session'] / 1024:.1f} KB", f"{p['server_cpu_pct']:.1f}%", _gc(p),
         f"{p['client_cpu_pct']:.1f}%", str(p["redis_clients"]),
         f"{p['redis_used_memory'] / 1024**2:.1f} MB", f"{p['heartbeats_in_window']:,}",
         str(r["errors"] + r["ended_early"])]
        for p in r["points"]
    ]  # fmt: skip


def _approval_rows(target: str, r: Result) -> list[list[str]]:
    lat = r["latency"]
    return [[target, f"{r['sessions']:,}", f"{r['rate']:.0f}/s", f"{lat['p50_ms']:.2f} ms",
             f"{lat['p99_ms']:.2f} ms", f"{lat['max_ms']:.2f} ms",
             str(r["event_before_response"]), _from_sent(r), str(r["errors"]),
             f"{r['server_cpu_pct']:.0f}%",
             _gc(r), f"{r['client_cpu_pct']:.0f}%", _lag(r)]]  # fmt: skip


def _from_sent(r: Result) -> str:
    if "from_sent" not in r:
        return "–"
    return f"{r['from_sent']['p50_ms']:.2f} / {r['from_sent']['p99_ms']:.2f} ms"


def _roundtrip_rows(target: str, r: Result) -> list[list[str]]:
    st = r["session_time"]
    per_session = 1000 * r["server_cpu_s"] / max(1, r["completed"])
    return [[target, str(r["concurrency"]), f"{r['sessions_per_s']:.0f}",
             f"{st['p50_ms']:.1f} ms", f"{st['p99_ms']:.1f} ms", str(r["errors"]),
             f"{r['server_cpu_pct']:.0f}%", _gc(r), f"{per_session:.2f} ms",
             f"{r['client_cpu_pct']:.0f}%", f"{r['redis_cpu_pct']:.0f}%"]]  # fmt: skip


def _teardown_rows(target: str, r: Result) -> list[list[str]]:
    lat, before, after = r["latency"], r["baseline"], r["settled"]
    moved = [
        f"{before[k]} → {after[k]}" for k in ("tasks", "threads", "fds_not_redis", "redis_clients")
    ]
    return [[target, f"{lat['p50_ms']:.2f} ms", f"{lat['p99_ms']:.2f} ms",
             f"{lat['max_ms']:.2f} ms", str(r["not_cancelled"]), f"{r['cycles_per_s']:.0f}",
             *moved, str(r["errors"]), _lag(r)]]  # fmt: skip


def _streaming_rows(target: str, r: Result) -> list[list[str]]:
    return [[target, f"{r['sessions']} × {r['words']:,}", f"{r['events_per_s']:,.0f}",
             f"{r['server_cpu_us_per_event']:.1f} µs", f"{r['server_cpu_pct']:.0f}%", _gc(r),
             f"{r['client_cpu_pct']:.0f}%", str(r["errors"])]]  # fmt: skip


_ROUNDTRIP_HEAD = ["target", "C", "sessions/s", "p50", "p99", "errors", "server CPU",
                   "of which GC", "server CPU/session", "client CPU", "Redis CPU"]  # fmt: skip
_STREAMING_HEAD = ["target", "sessions × words", "events/s", "server CPU/event", "server CPU",
                   "of which GC", "client CPU", "errors"]  # fmt: skip

_DETAILS: list[tuple[str, str, list[str], Callable[[str, Result], list[list[str]]]]] = [
    ("idle", "1. Idle fleet",
     ["target", "sessions", "server RSS", "RSS/session", "server CPU", "of which GC", "client CPU",
      "Redis clients", "Redis memory", "heartbeats in window", "errors"], _idle_rows),
    ("approval", "2. Approval latency",
     ["target", "waiting", "approvals", "p50", "p99", "max", "event before response",
      "sent → event p50 / p99", "errors", "server CPU", "of which GC", "client CPU",
      "client stalls"], _approval_rows),
    ("roundtrip", "3. Round-trip throughput", _ROUNDTRIP_HEAD, _roundtrip_rows),
    ("teardown", "4. Teardown",
     ["target", "p50", "p99", "max", "not cancelled", "cycles/s", "tasks", "threads",
      "fds (not Redis)", "Redis clients", "errors", "client stalls"], _teardown_rows),
    ("streaming", "5. Streaming throughput", _STREAMING_HEAD, _streaming_rows),
    ("ws_roundtrip", "3w. Round-trip throughput over the WebSocket (approved on the socket)",
     _ROUNDTRIP_HEAD, _roundtrip_rows),
    ("ws_streaming", "5w. Streaming throughput over the WebSocket", _STREAMING_HEAD,
     _streaming_rows),
]  # fmt: skip


def _transports(data: Data) -> list[str]:
    rows = [
        [name, sse.text(data, "aura"), ws.text(data, "aura")]
        for name, sse, ws in transports(data)
        if ws.value(data, "aura") is not None
    ]
    intro = (
        "Over SSE the approval is a `POST`, over the WebSocket a message on the socket; "
        "the WebSocket load (trio-websocket) costs the client more CPU than the SSE load."
    )
    title = "## aura over SSE vs over the WebSocket"
    if not rows:
        return []
    return [title, "", intro, "", *_table(["figure", "SSE", "WebSocket"], rows), ""]


def _details(data: Data) -> list[str]:
    lines = []
    failed = [run for run in data["runs"] if "failed" in run["result"]]
    if failed:
        lines += ["### Failed measurements", ""]
        lines += [f"- **{run['label']}**: {run['result']['failed']}" for run in failed] + [""]
    for scenario, title, head, rows_of in _DETAILS:
        rows = [
            row
            for run in data["runs"]
            if run["scenario"] == scenario and "failed" not in run["result"]
            for row in rows_of(f"{run['target']} r{run['round']}", run["result"])
        ]
        if rows:
            lines += [f"### {title}", "", *_table(head, rows), ""]
    return lines


def render(data: Data, plot_files: list[str], plot_note: str, plot_prefix: str) -> str:
    m = data["machine"]
    dirty = " (with uncommitted changes)" if m["dirty"] else ""
    medians = " (medians over the rounds)" if data["rounds"] > 1 else ""
    lines = [
        "# aura-trio benchmark report",
        "",
        f"Produced by `{data['command']}` (preset `{data['preset']}`, {data['rounds']} "
        f"round(s), {data.get('elapsed_s', 0) / 60:.0f} min) at commit `{m['commit']}`{dirty}, "
        f"started {data['started']}. Every figure below comes from this one run{medians}.",
        "",
        "Each measurement gets a fresh `redis-server` and a fresh server process (one worker); "
        "the Trio load generator runs in its own process. Both services: event delay 0, "
        "heartbeat 15 s, HITL timeout 300 s.",
        "",
        "## Machine",
        "",
        *_machine(data),
        "## Targets (issue 3) vs reached",
        "",
        *_goals(data),
        "",
    ]
    if set(data["targets"]) >= {"aura", "peer"}:
        lines += [
            "## Targets (issues 12 and 13) vs reached",
            "",
            *_round_goals(data),
            "",
            "## aura vs the asyncio peer",
            "",
            "“aura vs peer” is how many times better aura does on that figure "
            "(peer ÷ aura where lower is better): above 1 is ahead.",
            "",
            *_comparison(data),
            "",
        ]
    lines += [*_transports(data)]
    floor, breakdown = cpu_report.floor(data), cpu_report.breakdown(data)
    if floor:
        lines += ["## The HTTP floor: server CPU per request", "", *floor]
    if breakdown:
        lines += ["## Where a round trip's server CPU goes", "", *breakdown]
    lines += ["## Details", "", *_details(data)]
    if plot_files:
        lines += ["## Plots", "", *(f"![{n}]({plot_prefix}{n})" for n in plot_files), ""]
    elif plot_note:
        lines += ["## Plots", "", plot_note, ""]
    if FLEET.exists():
        lines += [FLEET.read_text().rstrip(), ""]
    if ANALYSIS.exists():
        lines += [ANALYSIS.read_text().rstrip(), ""]
    return "\n".join(lines)


def write(data: Data, results: Path, publish_to: Path | None = None) -> list[Path]:
    """Write `REPORT.md` and the plots to `results` (and to `publish_to` when given)."""
    plot_files, note = plots.draw(data, results)
    written = [results / name for name in plot_files]
    (results / "REPORT.md").write_text(render(data, plot_files, note, ""))
    written.append(results / "REPORT.md")
    if publish_to is not None:
        (publish_to / "plots").mkdir(exist_ok=True)
        for name in plot_files:
            shutil.copyfile(results / name, publish_to / "plots" / name)
            written.append(publish_to / "plots" / name)
        (publish_to / "REPORT.md").write_text(render(data, plot_files, note, "plots/"))
        written.append(publish_to / "REPORT.md")
    return written


def summary_text(data: Data) -> str:
    lines = ["", "Targets (aura):"]
    for goal in goals():
        if runs_of(data, goal.scenario, "aura", {}):
            lines.append(f"  {_mark(goal.met(data)):10} {goal.text}: {goal.reached(data, 'aura')}")
    if set(data["targets"]) >= {"aura", "peer"}:
        lines.append("aura vs peer (above 1: aura ahead):")
        for f in figures(data):
            ratio = f.advantage(data)
            shown = f"{ratio:.2f}×" if ratio is not None else "–"
            lines.append(
                f"  {shown:>7}  {f.scenario:9} {f.name}: "
                f"{f.text(data, 'aura')} vs {f.text(data, 'peer')}"
            )
    return "\n".join(lines)


def failures(data: Data) -> list[str]:
    return [run["label"] for run in data["runs"] if "failed" in run["result"]]


def headline(scenario: str, r: Result) -> str:
    """One line per measurement, printed while a run goes on."""
    if scenario == "idle":
        points = "; ".join(
            f"{p['sessions']:,} waiting: {p['rss_per_session'] / 1024:.1f} KB/session, "
            f"cpu {p['server_cpu_pct']:.1f}% (gc {_gc(p)}), redis clients {p['redis_clients']}"
            for p in r["points"]
        )
        return f"{points}; errors {r['errors'] + r['ended_early']}"
    if scenario in ("approval", "teardown"):
        lat = r["latency"]
        text = f"p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms, max {lat['max_ms']:.2f} ms"
        text += f" (client stalls: {_lag(r)})"
        if scenario == "teardown":
            text += f"; {r['cycles_per_s']:.0f} cycles/s; leaked {r['leaked'] or 'nothing'}"
        return f"{text}; errors {r['errors']}"
    if scenario == "breakdown":
        profile = r["profile"]
        shares = (
            ", ".join(
                f"{name} {100 * n / max(1, profile['samples']):.0f}%"
                for name, n in profile["layers"].items()
                if n
            )
            if "layers" in profile
            else profile["skipped"]
        )
        return (f"{r['server_cpu_ms_per_round_trip']:.2f} ms server CPU per round trip "
                f"({r['sessions_per_s']:.0f}/s, errors {r['errors']}): {shares}")  # fmt: skip
    if scenario == "floor":
        return (
            "; ".join(
                f"{row['name']} ({row['mode']}) {row['server_cpu_us_per_request']:,.0f} µs"
                for row in r["rows"]
            )
            + f"; errors {r['errors']}"
        )
    if scenario in ("roundtrip", "ws_roundtrip"):
        return (f"{r['sessions_per_s']:.0f} sessions/s, p99 {r['session_time']['p99_ms']:.0f} ms, "
                f"errors {r['errors']}, server cpu {r['server_cpu_pct']:.0f}%, "
                f"client cpu {r['client_cpu_pct']:.0f}%")  # fmt: skip
    return (f"{r['events_per_s']:,.0f} events/s, {r['server_cpu_us_per_event']:.1f} µs cpu/event, "
            f"client cpu {r['client_cpu_pct']:.0f}%, errors {r['errors']}")  # fmt: skip
