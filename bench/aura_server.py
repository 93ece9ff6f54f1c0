"""`aura-trio serve` for the bench: the same app, plus one read-only route.

`GET /bench/stats` answers what only the process itself knows: its live Trio
task count and open sessions (`?names=1`: the tasks by name, to find a leak;
`?memory=base|diff`: tracemalloc snapshots, with PYTHONTRACEMALLOC set).
Everything else is served by the unchanged app from :func:`aura_trio.create_app`,
on the same runner as `aura-trio serve`.

    python -m bench.aura_server --host 127.0.0.1 --port 0
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import logging
import os
import threading
import tracemalloc
from collections import Counter

import trio
from quart import Response, request

from aura_trio import Settings, create_app, serve_until_signal, state_of
from aura_trio.collector import freeze_start_up_objects
from aura_trio.logs import configure_logging
from aura_trio.metrics import live_tasks

from . import gctrace

_baseline: list[tracemalloc.Snapshot] = []
_old_ids: set[int] = set()


def promoted(what: str, top: int = 40) -> dict[str, int]:
    """`start`: collect, then remember the oldest generation; `diff`: what reached
    the oldest generation since, by type (what makes full collections come back)."""
    if what == "start":
        gc.collect()
        _old_ids.clear()
        _old_ids.update(id(o) for o in gc.get_objects(generation=2))
        return {}
    fresh = Counter(
        f"{type(o).__module__}.{type(o).__qualname__}"
        for o in gc.get_objects(generation=2)
        if id(o) not in _old_ids
    )
    return dict(fresh.most_common(top))


# werkzeug's route matcher is a closure that calls itself: one small cycle per
# request matched, freed by the next young collection (not a session's).
_PER_REQUEST_CYCLES = ("werkzeug.routing.matcher.StateMachineMatcher.match.<locals>._match",)


def _name(o: object) -> str:
    name = f"{type(o).__module__}.{type(o).__qualname__}"
    return f"{name} {o.__module__}.{o.__qualname__}" if inspect.isfunction(o) else name


def garbage_by_type(*, frozen_too: bool, top: int = 40) -> dict[str, int]:
    """What the collector would free now, by type: objects only a reference cycle
    keeps alive (each finished session should leave none), less the per-request
    cycles of `_PER_REQUEST_CYCLES` (counted under `per-request cycles`). With
    BENCH_GC_SAVEALL set, also what every collection found since the last call.

    With `frozen_too` (the collector policy freezes what survives), frozen objects
    are looked at too, and afterwards what is alive is frozen again, so a later
    `frozen` count is what is alive: garbage the server's own collections kept for
    this census would otherwise be frozen by that policy and, once let go, stay
    frozen for ever (gc.garbage is a root for `gc.freeze()`).
    """
    previous = gc.get_debug()
    if frozen_too:
        gc.unfreeze()  # frozen cyclic garbage is never collected
    gc.set_debug(previous | gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        return _census(gc.garbage, top)
    finally:
        gc.set_debug(previous & ~gc.DEBUG_SAVEALL)
        gc.garbage.clear()
        gc.collect()
        gc.set_debug(previous)
        if frozen_too:
            gc.freeze()


def _census(found: list[object], top: int) -> dict[str, int]:
    garbage = {id(o): o for o in found}
    roots = [
        o
        for o in found
        if inspect.isfunction(o) and f"{o.__module__}.{o.__qualname__}" in _PER_REQUEST_CYCLES
    ]
    expected: set[int] = set()
    while roots:  # what those closures reach among the garbage
        o = roots.pop()
        if id(o) not in expected:
            expected.add(id(o))
            roots.extend(r for r in gc.get_referents(o) if id(r) in garbage)
    names = Counter(_name(o) for key, o in garbage.items() if key not in expected)
    if expected:
        names["per-request cycles"] = len(expected)
    return dict(names.most_common(top))


def memory_diff(what: str, top: int = 40) -> list[str]:
    """`base`: remember a tracemalloc snapshot; `diff` / `files`: what was allocated
    since, by line / by file.

    Needs the server started with PYTHONTRACEMALLOC=N (diagnostics only: it is slow).
    """
    if not tracemalloc.is_tracing():
        return ["start the server with PYTHONTRACEMALLOC=1"]
    snapshot = tracemalloc.take_snapshot()
    if what == "base" or not _baseline:
        _baseline[:] = [snapshot]
        return []
    key = "filename" if what == "files" else "lineno"
    stats = snapshot.compare_to(_baseline[0], key)
    return [str(stat) for stat in stats[:top]]


async def _serve(settings: Settings) -> None:
    app = create_app(settings)
    state = state_of(app)

    @app.get("/bench/stats")
    async def stats() -> Response:
        tasks = list(live_tasks())
        # First: it frees cyclic garbage, which the counts below then leave out.
        garbage = (
            garbage_by_type(frozen_too=settings.gc_freeze_seconds > 0)
            if request.args.get("garbage")
            else None
        )
        body: dict[str, object] = {
            "tasks": len(tasks),
            "threads": threading.active_count(),
            "sessions": len(state.registry),
            "subscriptions": state.bus.subscription_count,
            "frozen": gc.get_freeze_count(),
        }
        if request.args.get("names"):
            body["names"] = Counter(task.name for task in tasks)
        if request.args.get("gc"):
            body["gc_collected"] = gc.collect()
            body["gc_counts"] = gc.get_count()
            body["gc_objects"] = len(gc.get_objects())
        if request.args.get("types"):
            body["types"] = Counter(
                f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects()
            )
        if garbage is not None:
            body["garbage"] = garbage
        if request.args.get("promoted"):
            body["promoted"] = promoted(request.args["promoted"])
        if request.args.get("gctrace"):
            body["gc_pauses"] = gctrace.trace(request.args["gctrace"])
        if request.args.get("memory"):
            body["memory"] = memory_diff(request.args["memory"])
        return Response(json.dumps(body), content_type="application/json")

    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve_until_signal, app)
        # The same line `aura-trio serve` logs; the bench reads the port from it.
        logging.getLogger("bench").warning("listening on %s", " ".join(binds))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.aura_server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    settings = Settings.from_env(host=args.host, port=args.port)
    settings.check_secret()
    configure_logging(settings.log_level)
    freeze_start_up_objects()  # the same policy as `aura-trio serve`
    if os.environ.get("BENCH_GC_SAVEALL"):
        # Cyclic garbage is kept for `?garbage=1`, whichever collection finds it first.
        gc.set_debug(gc.DEBUG_SAVEALL)
    trio.run(_serve, settings)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
