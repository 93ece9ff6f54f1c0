"""The scenarios, and their sizes.

The five of issue 3, two of them again over the WebSocket, then `breakdown` (a
round trip under py-spy: server CPU by layer) and `floor` (server CPU per request
of the bare HTTP stacks beside the services' own routes). `full` is what
`bench/REPORT.md` is made with; `smoke` is the same machinery with tiny numbers,
for the test suite. `ONLY_ON`: scenarios a target cannot run (the peer has no
WebSocket).
"""

from __future__ import annotations

from typing import Any

from ..runner import Scenario
from . import approval, breakdown, floor, idle, roundtrip, streaming, teardown, websocket

SCENARIOS: dict[str, Scenario] = {
    "idle": idle.run,
    "approval": approval.run,
    "roundtrip": roundtrip.run,
    "breakdown": breakdown.run,
    "floor": floor.run,
    "teardown": teardown.run,
    "streaming": streaming.run,
    "ws_roundtrip": websocket.roundtrip,
    "ws_streaming": websocket.streaming,
}

ONLY_ON: dict[str, tuple[str, ...]] = {"ws_roundtrip": ("aura",), "ws_streaming": ("aura",)}

PRESETS: dict[str, dict[str, list[dict[str, Any]]]] = {
    "full": {
        "idle": [
            {"levels": [1000, 5000, 9000], "idle_seconds": 15.0,
             "open_concurrency": 200, "ramp_every": 500, "quiet_seconds": 2.0},
        ],
        "approval": [
            {"sessions": 1000, "rate": 100.0, "open_concurrency": 200, "quiet_seconds": 1.0},
        ],
        "roundtrip": [
            {"concurrency": 50, "seconds": 15.0, "warmup": 3.0},
            {"concurrency": 200, "seconds": 15.0, "warmup": 3.0},
        ],
        "breakdown": [{"concurrency": 50, "seconds": 10.0, "warmup": 3.0}],
        "floor": [{"concurrency": 16, "seconds": 3.0, "warmup": 1.0}],
        "teardown": [
            {"waiting": 200, "disconnect_rate": 50.0, "cycles": 10000,
             "cycle_concurrency": 100, "settle_seconds": 15.0, "quiet_seconds": 1.0},
        ],
        "streaming": [{"sessions": 8, "words": 8000, "seconds": 10.0, "warmup": 2.0}],
        "ws_roundtrip": [
            {"concurrency": 50, "seconds": 15.0, "warmup": 3.0},
            {"concurrency": 200, "seconds": 15.0, "warmup": 3.0},
        ],
        "ws_streaming": [{"sessions": 8, "words": 8000, "seconds": 10.0, "warmup": 2.0}],
    },
    "smoke": {
        "idle": [
            {"levels": [5, 10], "idle_seconds": 0.2, "open_concurrency": 5, "ramp_every": 5,
             "quiet_seconds": 0.1},
        ],
        "approval": [{"sessions": 10, "rate": 50.0, "open_concurrency": 5, "quiet_seconds": 0.1}],
        "roundtrip": [{"concurrency": 4, "seconds": 0.5, "warmup": 0.1}],
        "breakdown": [{"concurrency": 4, "seconds": 0.5, "warmup": 0.1}],
        "floor": [{"concurrency": 2, "seconds": 0.3, "warmup": 0.1}],
        "teardown": [
            {"waiting": 5, "disconnect_rate": 50.0, "cycles": 20,
             "cycle_concurrency": 4, "settle_seconds": 0.5, "quiet_seconds": 0.1},
        ],
        "streaming": [{"sessions": 2, "words": 200, "seconds": 0.5, "warmup": 0.1}],
        "ws_roundtrip": [{"concurrency": 4, "seconds": 0.5, "warmup": 0.1}],
        "ws_streaming": [{"sessions": 2, "words": 200, "seconds": 0.5, "warmup": 0.1}],
    },
}  # fmt: skip
