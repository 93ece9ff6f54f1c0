"""Runs scenarios against targets: a fresh Redis and a fresh server per measurement.

With several targets, each scenario runs against all of them before the next
scenario starts, and the order alternates from round to round (aura, peer;
peer, aura; ...), so slow drift on a shared machine hits both alike.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from . import procs
from .load import CONNECTION_ERRORS, SECRET, WAITING_PROMPT, Target, open_until_hitl, read_to_done
from .measure import Context
from .profile import Profiler

Scenario = Callable[..., Awaitable[dict[str, Any]]]

WARMUP_SESSIONS = 100
_WARMUP_CONCURRENCY = 10


async def warm_up(target: Target, sessions: int = WARMUP_SESSIONS) -> None:
    """Full round trips, so imports, pools and caches exist before anything is measured."""
    remaining = [sessions]

    async def worker(index: int) -> None:
        approver = target.approver()
        try:
            while remaining[0] > 0:
                remaining[0] -= 1
                stream, request_id = await open_until_hitl(
                    target, target.stream_request(WAITING_PROMPT, index)
                )
                try:
                    await approver.approve(request_id, index)
                    await read_to_done(stream)
                finally:
                    stream.close()
        finally:
            approver.close()

    async with trio.open_nursery() as nursery:
        for index in range(min(_WARMUP_CONCURRENCY, sessions)):
            nursery.start_soon(worker, index)


async def _measure(
    scenario: Scenario,
    ctx: Context,
    params: dict[str, Any],
    warmup_sessions: int,
    profile_to: Path | None,
) -> dict[str, Any]:
    await warm_up(ctx.target, warmup_sessions)
    await trio.sleep(0.2)  # let the warm-up's sessions finish their cleanup
    profiler = Profiler(ctx.server.pid, profile_to) if profile_to is not None else None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ctx.show_progress)
        nursery.start_soon(ctx.watch_lag)
        try:
            result = await scenario(ctx, **params)
        finally:
            nursery.cancel_scope.cancel()
            if profiler is not None:
                result_profile = profiler.stop()
    if profiler is not None:
        # The breakdown scenario profiles itself, under "profile": keep its figures.
        result["profile_stacks" if "profile" in result else "profile"] = str(result_profile)
    return result


def measure(
    scenario: Scenario,
    target_name: str,
    params: dict[str, Any],
    *,
    work_dir: Path,
    label: str,
    warmup_sessions: int = WARMUP_SESSIONS,
    server_env: dict[str, str] | None = None,
    profile: bool = False,
) -> dict[str, Any]:
    """One scenario against one target, with its own Redis and server processes."""
    run_dir = work_dir / label.replace(" ", "_").replace("/", "-")
    with procs.run_redis(run_dir / "redis") as redis_server:
        env = procs.server_env(redis_server.url, SECRET, server_env)
        with procs.run_server(target_name, env, run_dir / "server.log") as server:
            ctx = Context(
                target=Target(target_name, procs.HOST, server.port),
                server=server,
                redis_server=redis_server,
                label=label,
            )
            started = time.monotonic()
            try:
                profile_to = run_dir / "profile" if profile else None
                result = trio.run(_measure, scenario, ctx, params, warmup_sessions, profile_to)
            except CONNECTION_ERRORS as error:
                # A run that could not even warm up is a result too: report it.
                result = {"failed": f"{type(error).__name__}: {error}"}
            finally:
                ctx.close()
            if server.process.poll() is not None:
                result["failed"] = f"server exited with {server.process.returncode}"
            result["elapsed_s"] = time.monotonic() - started
            return result


def run_matrix(
    plan: list[tuple[str, Scenario, list[dict[str, Any]]]],
    targets: list[str],
    rounds: int,
    work_dir: Path,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    warmup_sessions: int = WARMUP_SESSIONS,
    profile: bool = False,
    only_on: dict[str, tuple[str, ...]] | None = None,
) -> list[dict[str, Any]]:
    """Every (scenario, variant) against every target (of `only_on[scenario]`, when
    listed there), `rounds` times, alternating order."""
    results = []
    for name, scenario, variants in plan:
        for params in variants:
            for round_index in range(rounds):
                order = targets if round_index % 2 == 0 else list(reversed(targets))
                for target_name in order:
                    if only_on is not None and target_name not in only_on.get(name, order):
                        continue
                    label = f"{name} {_describe(params)} {target_name} r{round_index + 1}"
                    print(f"▶ {label}", file=sys.stderr, flush=True)
                    load_before = os.getloadavg()
                    result = measure(
                        scenario,
                        target_name,
                        params,
                        work_dir=work_dir,
                        label=label,
                        warmup_sessions=warmup_sessions,
                        profile=profile,
                    )
                    record = {
                        "label": label,
                        "loadavg_before": load_before,
                        "scenario": name,
                        "target": target_name,
                        "round": round_index + 1,
                        "params": params,
                        "result": result,
                    }
                    print(f"  {_headline(name, result)}", file=sys.stderr, flush=True)
                    results.append(record)
                    if on_result is not None:
                        on_result(record)
    return results


def _describe(params: dict[str, Any]) -> str:
    keys = [k for k in ("concurrency", "sessions", "levels") if k in params]
    return " ".join(f"{k}={params[k]}" for k in keys) or "-"


def _headline(name: str, result: dict[str, Any]) -> str:
    if "failed" in result:
        return f"FAILED: {result['failed']}"
    from .report import headline

    return headline(name, result)
