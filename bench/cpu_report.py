"""The report's CPU sections: a round trip's server CPU by layer (`breakdown`) and
the HTTP floor (`floor`). Medians over the rounds, as everywhere in the report."""

from __future__ import annotations

import statistics
from typing import Any

from .figures import Data, Result, runs_of
from .profile import LAYERS


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _profiled(data: Data, target: str) -> list[Result]:
    return [r for r in runs_of(data, "breakdown", target, {}) if "layers" in r["profile"]]


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f} ms"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}%"


def layer_ms(result: Result, layer: str, key: str = "layers") -> float:
    """A layer's share of the samples of one profiled run, in ms of server CPU per round trip."""
    profile = result["profile"]
    share = profile[key].get(layer, 0) / max(1, profile["samples"])
    return float(result["server_cpu_ms_per_round_trip"]) * share


def breakdown(data: Data) -> list[str]:
    targets = [t for t in data["targets"] if _profiled(data, t)]
    if not targets:
        skipped = [
            r["profile"]["skipped"]
            for t in data["targets"]
            for r in runs_of(data, "breakdown", t, {})
            if "skipped" in r["profile"]
        ]
        return [f"Not profiled: {skipped[0]}.", ""] if skipped else []
    results = {t: _profiled(data, t) for t in targets}

    def cells(read: Any) -> list[str]:
        out = []
        for t in targets:
            ms = _median([read(r) for r in results[t]])
            total = _median([r["server_cpu_ms_per_round_trip"] for r in results[t]])
            out += [_pct(None if ms is None or not total else 100 * ms / total), _ms(ms)]
        return out

    head = ["layer"] + [f"{t} {what}" for t in targets for what in ("share", "per round trip")]
    rows = [[layer, *cells(lambda r, x=layer: layer_ms(r, x))] for layer in LAYERS]
    callers = sorted(
        {c for t in targets for r in results[t] for c in r["profile"]["scheduler_for"]}
    )
    rows += [
        [f"↳ scheduler work made by: {c}",
         *cells(lambda r, x=c: layer_ms(r, x, "scheduler_for"))]
        for c in callers
    ]  # fmt: skip
    total_row = ["**server CPU per round trip**"]
    gc_row = ["of which in the garbage collector (all layers)"]
    rate_row = ["round trips/s while profiled"]
    for t in targets:
        total_row += ["100%", _ms(_median([r["server_cpu_ms_per_round_trip"] for r in results[t]]))]
        gc_row += ["", _ms(_median([r["gc_ms_per_round_trip"] for r in results[t]]))]
        rate_row += ["", f"{_median([r['sessions_per_s'] for r in results[t]]):.0f}"]
    concurrency = results[targets[0]][0]["concurrency"]
    samples = ", ".join(
        f"{t} {sum(r['profile']['samples'] for r in results[t]):,}" for t in targets
    )
    lines = [
        f"Round trips (stream → `hitl` → approve → `[DONE]`) by {concurrency} clients in a "
        "closed loop, the server sampled by py-spy (`--gil`, 200/s) over the measured window "
        f"({samples} samples). Each sample counts for the layer of its innermost frame that has "
        "one; the standard library, JSON, jsonschema, pydantic and the rest of Trio count for "
        "their caller (`bench/profile.py`). The scheduler's samples are split again by the "
        "layer whose code made that scheduler work (↳ rows). Shares × the window's server CPU "
        "per round trip give ms; the profiler slows the server somewhat, so throughput here is "
        "not the one to quote.",
        "",
        *_table(head, [*rows, total_row, gc_row, rate_row]),
        "",
    ]
    for t in targets:
        top = results[t][0]["profile"].get("top_self", [])[:10]
        if top:
            shown = "; ".join(f"`{name}` {100 * share:.1f}%" for name, share in top)
            lines += [f"Busiest functions (own time), {t}, round 1: {shown}.", ""]
    return lines


def floor_rows(result: Result) -> dict[str, dict[str, Any]]:
    return {row["key"]: row for row in result["rows"]}


def floor(data: Data) -> list[str]:
    keyed: dict[str, dict[str, list[float]]] = {}
    names: dict[str, str] = {}
    for t in data["targets"]:
        for r in runs_of(data, "floor", t, {}):
            for row in r["rows"]:
                key = f"{t}:{row['key']}"
                names[key] = row["name"]
                figures = keyed.setdefault(key, {})
                figures.setdefault(row["mode"], []).append(row["server_cpu_us_per_request"])
    if not keyed:
        return []
    modes = ("new connection", "keep-alive")
    rows = [
        [names[key], *(_us(_median(keyed[key].get(mode, []))) for mode in modes)] for key in keyed
    ]
    first = next(r for t in data["targets"] for r in runs_of(data, "floor", t, {}))
    return [
        f"Server CPU per request (from `/proc`, over {first['seconds']:g} s windows), "
        f"{first['concurrency']} clients in a closed loop. *New connection*: each request on "
        "a connection of its own, closed by the client after the response (as a stream "
        "request); *keep-alive*: requests one after another on each client's connection (as "
        'the approvals). The bare stacks answer `GET /health` with `{"status":"UP"}` and '
        "nothing else (`bench/peers/bare.py`).",
        "",
        *_table(["stack and route", *modes], rows),
        "",
    ]


def _us(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f} µs"
