"""The machine and software a run measured, for the report."""

from __future__ import annotations

import os
import platform
import resource
import subprocess
from importlib import metadata
from typing import Any

from aura_trio.embedded_redis import find_server_binary

from .procs import REPO_ROOT

PACKAGES = (
    "aura-trio", "trio", "quart-trio", "quart", "hypercorn", "h11", "redis", "pyjwt",
    "fastapi", "starlette", "uvicorn", "uvloop", "httptools", "anyio",
)  # fmt: skip


def _first(path: str, prefix: str) -> str:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(prefix):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def _run(*command: str) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def describe() -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    mem_kb = _first("/proc/meminfo", "MemTotal").split()[0]
    return {
        "cpu": _first("/proc/cpuinfo", "model name"),
        "cores": os.cpu_count(),
        "ram_gib": round(int(mem_kb) / 1024**2, 1) if mem_kb.isdigit() else "?",
        "kernel": f"{platform.system()} {platform.release()}",
        "os": _os_name(),
        "python": platform.python_version(),
        "fd_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "redis_server": _run(find_server_binary(), "--version"),
        "packages": versions,
        "commit": _run("git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"),
        "dirty": bool(_run("git", "-C", str(REPO_ROOT), "status", "--porcelain")),
    }


def _os_name() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "?"


def load_snapshot() -> dict[str, Any]:
    """Load average and the busiest other processes right now (noise on a shared machine)."""
    top = _run("top", "-bn1", "-w", "200")
    lines = top.splitlines()
    header = next((i for i, line in enumerate(lines) if line.lstrip().startswith("PID")), None)
    busiest = []
    if header is not None:
        for line in lines[header + 1 : header + 6]:
            fields = line.split(None, 11)
            if len(fields) == 12 and fields[8].replace(".", "").isdigit():
                busiest.append({"cpu_pct": float(fields[8]), "command": fields[11][:60]})
    return {"loadavg": os.getloadavg(), "busiest": busiest}
