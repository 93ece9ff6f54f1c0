"""A fleet of sessions waiting for approval, decided the Java way, checked.

Shared by the fault tests (`test_faults.py`: Redis restarted, the subscriber cut
off) and the failover tests (`test_sentinel.py`).
"""

from __future__ import annotations

import json
import time

import trio

from .helpers import auth, events_of, eventually, rest_of, until_hitl

SESSIONS = 200
# Far beyond each test's own bound: a run slowed down by a busy machine fails on
# that bound, never as a session that timed out waiting.
NO_TIMEOUT = 600


def _decision(n: int, request_id: str) -> dict:
    if n % 3 == 0:
        return {
            "type": "rejection",
            "requestId": request_id,
            "status": "rejected",
            "reason": f"no {n}",
            "timestamp": int(time.time()),
        }
    return {
        "type": "approval",
        "requestId": request_id,
        "status": "approved",
        "timestamp": int(time.time()),
    }


async def waiting_fleet(aura, nursery, outcomes: dict) -> dict[int, dict]:
    waiting: dict[int, dict] = {}

    async def one(n: int) -> None:
        async with aura.stream("merge", headers=auth(f"u{n}")) as stream:
            waiting[n] = await until_hitl(stream)
            frames = await rest_of(stream)
            outcomes[n] = (frames, trio.current_time())

    for n in range(SESSIONS):
        nursery.start_soon(one, n)
    await eventually(lambda: len(waiting) == SESSIONS, within=30, step=0.05)
    return waiting


def java_decides(raw, waiting: dict) -> int:
    """The Java side, in its own thread: PUBLISH then SET ... EX 300 for each session.

    Returns how many PUBLISHes no subscriber received.
    """
    unheard = 0
    for n, hitl in waiting.items():
        payload = json.dumps(_decision(n, hitl["requestId"]), ensure_ascii=False)
        unheard += raw.publish(f"hitl:channel:{hitl['sessionId']}", payload) == 0
        raw.set(f"hitl:signal:{hitl['sessionId']}", payload, ex=300)
    return unheard


def java_stores_only(raw, waiting: dict) -> None:
    """The Java side's decisions whose PUBLISH was lost: only the SET ... EX 300."""
    for n, hitl in waiting.items():
        payload = json.dumps(_decision(n, hitl["requestId"]), ensure_ascii=False)
        raw.set(f"hitl:signal:{hitl['sessionId']}", payload, ex=300)


def check_outcomes(waiting: dict, outcomes: dict) -> None:
    assert len(outcomes) == SESSIONS
    for n, (frames, _) in outcomes.items():
        kinds = events_of(frames)
        if n % 3 == 0:
            assert kinds == ["error"], (n, kinds)
            assert frames[0].json()["errorType"] == "RejectionError"
            assert frames[0].json()["error"] == f"no {n}"
        else:
            assert kinds[-1] == "end" and frames[-2].json()["status"] == "completed", (n, kinds)
            # Decided once: the approved tool ran once, and nothing asked again.
            assert kinds.count("tool_execution") == 1 and "hitl" not in kinds
        assert sum(f.is_done for f in frames) == 1
