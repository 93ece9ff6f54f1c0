"""`--profile`: py-spy on the server while a scenario runs (after the warm-up).

Writes the raw collapsed stacks (`<label>.stacks`, loadable in speedscope) and a
summary of the busiest functions (`<label>.top.txt`). Samples only the thread
holding the GIL (`--gil`): what costs CPU in Python, not what waits.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

RATE = 200


class Profiler:
    def __init__(self, pid: int, out: Path) -> None:
        self._out = out
        binary = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
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
