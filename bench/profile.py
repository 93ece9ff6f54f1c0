"""`--profile`: py-spy on the server while a scenario runs (after the warm-up).

Writes the raw collapsed stacks (`<label>.stacks`, loadable in speedscope) and a
summary of the busiest functions (`<label>.top.txt`). Samples only the thread
holding the GIL (`--gil`): what costs CPU in Python, not what waits.

:func:`layers` sorts the samples of a profile into the layers of a server (HTTP,
Redis, session, logging, scheduler): the `breakdown` scenario and the report use it.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

RATE = 200


def py_spy() -> str | None:
    """Where py-spy is (the bench extra installs it), or None."""
    beside = Path(sys.executable).with_name("py-spy")
    return shutil.which("py-spy") or (str(beside) if beside.exists() else None)


class Profiler:
    def __init__(self, pid: int, out: Path) -> None:
        self._out = out
        binary = py_spy() or "py-spy"
        self._process = subprocess.Popen(
            [binary, "record", "-p", str(pid), "-r", str(RATE), "--gil", "-f", "raw",
             "-o", str(out.with_suffix(".stacks"))],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def stop(self) -> Path:
        """Stop sampling; write and return the summary."""
        self._process.send_signal(signal.SIGINT)
        try:
            self._process.wait(30)
        except subprocess.TimeoutExpired:
            self._process.kill()
        summary = self._out.with_suffix(".top.txt")
        stacks = self._out.with_suffix(".stacks")
        summary.write_text(summarize(stacks.read_text()) if stacks.exists() else "no samples\n")
        return summary


def summarize(collapsed: str, rows: int = 40) -> str:
    """Self and inclusive shares of each function in py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    if not total:
        return "no samples\n"
    lines = [f"{total} samples at {RATE}/s with the GIL held", "", "self:"]
    lines += [f"{100 * n / total:5.1f}%  {name}" for name, n in own.most_common(rows)]
    lines += ["", "inclusive:"]
    lines += [f"{100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(rows * 2)]
    return "\n".join(lines) + "\n"


# --- samples by layer ----------------------------------------------------------------

HTTP = "HTTP stack"
ROUTES = "app: routes, auth, envelopes"
REDIS = "Redis client"
SESSION = "session (agent, HITL, framing)"
LOGGING = "logging"
SCHEDULER = "scheduler (Trio core / asyncio loop)"
OTHER = "other"
LAYERS = (HTTP, ROUTES, REDIS, SESSION, LOGGING, SCHEDULER, OTHER)

# By the top-level package (or module) of a frame's file, as py-spy names it.
_PACKAGES = {
    **dict.fromkeys(
        ("hypercorn", "h11", "h2", "wsproto", "quart", "quart_trio", "quart_schema",
         "werkzeug", "flask", "blinker", "uvicorn", "httptools", "starlette", "fastapi",
         "anyio", "sniffio"),
        HTTP,
    ),
    **dict.fromkeys(("hiredis", "redis", "async_timeout"), REDIS),
    "logging": LOGGING,
    **dict.fromkeys(("asyncio", "uvloop"), SCHEDULER),
}  # fmt: skip
# aura_trio by subpackage or module.
_AURA = {
    "api": ROUTES,
    # Our subclasses of Hypercorn's connection handler and Quart-Trio's connection.
    "http": HTTP,
    "auth.py": ROUTES,
    "app.py": ROUTES,
    "errors.py": ROUTES,
    "bus": REDIS,
    "sessions": SESSION,
    "hitl": SESSION,
    "agents": SESSION,
    "ids.py": SESSION,
    "metrics.py": SESSION,
    "logs.py": LOGGING,
}
_PEER_APP = "bench/peers/asyncio_peer/app.py"


def frame_layer(frame: str) -> str | None:
    """The layer of one py-spy frame (`function (path:line)`), or None for code that
    works for whoever calls it (the standard library, JSON, jsonschema, pydantic, the
    rest of Trio): its samples go to the nearest caller that has a layer."""
    function, _, where = frame.rpartition(" (")
    path = where.rsplit(":", 1)[0]
    if path.startswith("<attrs generated methods "):
        # attrs' generated __init__/__eq__ of a class: the class's package decides.
        path = path.removeprefix("<attrs generated methods ").replace(".", "/")
    top, _, rest = path.partition("/")
    if top == "trio":
        return SCHEDULER if rest.startswith("_core") else None
    if top == "aura_trio":
        return _AURA.get(rest.split("/", 1)[0])
    if path == _PEER_APP:
        # The peer is one module: its layers are its classes.
        if function.startswith("HitlManager."):
            return REDIS
        if function.startswith("Session.") or function == "sse_body":
            return SESSION
        if function.startswith(("create_app.", "authenticate", "ApiError.", "envelope")):
            return ROUTES
        return None
    return _PACKAGES.get(top.removesuffix(".py"))


def top_self(collapsed: str, rows: int) -> list[tuple[str, float]]:
    """The functions with the most samples of their own, with their share (0..1)."""
    own: Counter[str] = Counter()
    total = 0
    for frames, n in _samples(collapsed):
        own[frames[-1]] += n
        total += n
    return [(name, n / total) for name, n in own.most_common(rows)] if total else []


def _samples(collapsed: str) -> Iterator[tuple[list[str], int]]:
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if count.isdigit() and stack:
            yield stack.split(";"), int(count)


def layers(collapsed: str) -> dict[str, object]:
    """Samples by layer, from py-spy's collapsed stacks (root first, leaf last).

    A sample counts for the layer of its innermost frame that has one
    (:func:`frame_layer`). Scheduler samples are also told apart by the layer of
    the code that made the scheduler work (`scheduler_for`: the nearest caller
    outside the scheduler; `loop` when there is none: the event loop itself).
    """
    by_layer: Counter[str] = Counter()
    scheduler_for: Counter[str] = Counter()
    total = 0
    for frames, n in _samples(collapsed):
        total += n
        found = [layer for layer in map(frame_layer, reversed(frames)) if layer is not None]
        layer = found[0] if found else OTHER
        by_layer[layer] += n
        if layer == SCHEDULER:
            caller = next((f for f in found if f != SCHEDULER), "loop")
            scheduler_for[caller] += n
    return {
        "samples": total,
        "layers": {name: by_layer[name] for name in LAYERS},
        "scheduler_for": dict(scheduler_for.most_common()),
    }
