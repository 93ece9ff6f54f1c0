"""`python -m bench run ...` and `python -m bench report ...`.

    python -m bench run --target both                 # every scenario, full sizes
    python -m bench run --target aura --scenario roundtrip --scenario streaming
    python -m bench run --target both --preset smoke  # seconds, for a quick look
    python -m bench report --publish                  # re-render the last run

`run` starts a private redis-server and the server(s) for each measurement, drives
the load from this process, prints progress on stderr, and writes
`results.json`, `REPORT.md` and the plots to the results directory
(`bench/results/` by default). `--publish` also writes `bench/REPORT.md` and
copies the plots to `bench/plots/`.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from . import machine, report
from .procs import REPO_ROOT, TARGETS
from .runner import run_matrix
from .scenarios import ONLY_ON, PRESETS, SCENARIOS

RESULTS_DIR = REPO_ROOT / "bench" / "results"
WARMUP_SESSIONS = {"full": 100, "smoke": 5}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="measure, then write the report")
    run.add_argument("--target", choices=[*TARGETS, "both"], default="both")
    run.add_argument(
        "--scenario", action="append", choices=list(SCENARIOS),
        help="repeat to pick several (default: all, in the issue's order)",
    )  # fmt: skip
    run.add_argument("--preset", choices=list(PRESETS), default="full")
    run.add_argument("--rounds", type=int, default=1, help="repeat each measurement (alternating)")
    run.add_argument("--results", type=Path, default=RESULTS_DIR)
    run.add_argument("--publish", action="store_true", help="also write bench/REPORT.md")
    run.add_argument(
        "--profile", action="store_true",
        help="py-spy the server during each scenario (results/work/<label>/profile.*)",
    )  # fmt: skip
    rep = commands.add_parser("report", help="re-render the report from results.json")
    rep.add_argument("--results", type=Path, default=RESULTS_DIR)
    rep.add_argument("--publish", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    if args.command == "run":
        _stop_cleanly_on_signals()
        try:
            return _run(args, argv)
        except BaseException as error:
            if not _only_interrupts(error):
                raise
            print("interrupted: the processes it started are stopped", file=sys.stderr)
            return 130
    return _report(args.results, args.publish)


def _run(args: argparse.Namespace, argv: list[str]) -> int:
    targets = list(TARGETS) if args.target == "both" else [args.target]
    if "peer" in targets:
        _check_peer_installed()
    names = args.scenario or list(SCENARIOS)
    preset = PRESETS[args.preset]
    plan = [(name, SCENARIOS[name], preset[name]) for name in names]
    args.results.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "preset": args.preset,
        "targets": targets,
        "rounds": args.rounds,
        "command": "python -m bench " + " ".join(argv),
        "machine": machine.describe(),
        "load_before": machine.load_snapshot(),
        "runs": [],
    }
    path = args.results / "results.json"

    def save(record: dict[str, Any]) -> None:
        data["runs"].append(record)
        path.write_text(json.dumps(data, indent=1))

    started = time.monotonic()
    run_matrix(
        plan,
        targets,
        args.rounds,
        args.results / "work",
        on_result=save,
        warmup_sessions=WARMUP_SESSIONS[args.preset],
        profile=args.profile,
        only_on=ONLY_ON,
    )
    data["load_after"] = machine.load_snapshot()
    data["elapsed_s"] = time.monotonic() - started
    path.write_text(json.dumps(data, indent=1))
    print(f"results: {path}", file=sys.stderr)
    return _report(args.results, args.publish)


def _report(results: Path, publish: bool) -> int:
    data = json.loads((results / "results.json").read_text())
    written = report.write(data, results, publish_to=REPO_ROOT / "bench" if publish else None)
    for item in written:
        print(f"wrote {item}", file=sys.stderr)
    print(report.summary_text(data))
    return 0 if not report.failures(data) else 1


def _stop_cleanly_on_signals() -> None:
    """SIGINT and SIGTERM end a run through its `finally`s, which stop the Redis and
    server processes it started. (A job started in the background by a shell has
    SIGINT ignored, and SIGTERM would otherwise leave the children behind.)"""

    def as_interrupt(signum: int, frame: object) -> None:
        # As SIGINT, which Trio turns into KeyboardInterrupt at a safe point.
        signal.raise_signal(signal.SIGINT)

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, as_interrupt)


def _only_interrupts(error: BaseException) -> bool:
    if isinstance(error, BaseExceptionGroup):
        return error.split(KeyboardInterrupt)[1] is None
    return isinstance(error, KeyboardInterrupt)


def _check_peer_installed() -> None:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        sys.exit("the peer needs the bench extra: pip install -e '.[bench]'")
