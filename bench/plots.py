"""PNG plots for the report: memory vs sessions, and latency distributions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLORS = {"aura": "#1f77b4", "peer": "#d62728"}


def draw(data: dict[str, Any], out: Path) -> tuple[list[str], str]:
    """Draw what the results allow; returns (file names, a note when none could be drawn)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib import ticker
    except ImportError:
        return [], "No plots: matplotlib is not installed (`pip install -e '.[bench]'`)."
    files = []
    runs = [r for r in data["runs"] if "failed" not in r["result"]]

    idle = [r for r in runs if r["scenario"] == "idle"]
    if idle:
        fig, ax = plt.subplots(figsize=(7, 4))
        for run in _first_round(idle):
            points = run["result"]["ramp"]
            ax.plot([n for n, _ in points], [rss / 1024**2 for _, rss in points],
                    marker=".", label=run["target"], color=COLORS.get(run["target"]))  # fmt: skip
        ax.set_xlabel("open sessions waiting for approval")
        ax.set_ylabel("server RSS (MB)")
        ax.set_title("Idle fleet: server memory vs sessions")
        ax.grid(alpha=0.3)
        ax.legend()
        files.append(_save(fig, out, "memory_vs_sessions.png"))

    panels = [
        ("approval", "latencies_ms", "approve response → next event (ms; event first: 0)"),
        ("teardown", "latencies_ms", "disconnect → 'cancelled' in Redis (ms)"),
        ("roundtrip", "session_times_ms", "round-trip session time (ms)"),
    ]
    panels = [p for p in panels if any(r["scenario"] == p[0] for r in runs)]
    if panels:
        fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
        for ax, (scenario, key, title) in zip(axes[0], panels, strict=True):
            chosen = [r for r in _first_round([r for r in runs if r["scenario"] == scenario])]
            if scenario == "roundtrip":
                top = max(r["params"]["concurrency"] for r in chosen)
                chosen = [r for r in chosen if r["params"]["concurrency"] == top]
                title += f", C={top}"
            for run in chosen:
                values = sorted(run["result"].get(key, []))
                if not values:
                    continue
                fractions = [(i + 1) / len(values) for i in range(len(values))]
                ax.plot(values, fractions, label=run["target"], color=COLORS.get(run["target"]))
            ax.set_xscale("log")
            plain = ticker.FuncFormatter(lambda v, _: f"{v:g}")
            ax.xaxis.set_major_formatter(plain)
            low, high = ax.get_xlim()
            # Minor ticks get labels only where they do not crowd (a narrow range).
            narrow = low > 0 and high / low < 30
            ax.xaxis.set_minor_formatter(plain if narrow else ticker.NullFormatter())
            ax.set_xlabel(title)
            ax.set_ylabel("fraction ≤ x")
            ax.grid(alpha=0.3, which="both")
            ax.legend()
        fig.suptitle("Latency distributions (CDF)")
        files.append(_save(fig, out, "latency_distributions.png"))
    return files, ""


def _first_round(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in runs if r["round"] == 1]


def _save(fig: Any, out: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(out / name, dpi=90)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return name
