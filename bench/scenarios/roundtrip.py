"""Scenario 3, round-trip throughput: C clients in a closed loop, each doing
stream → `hitl` → approve → `[DONE]`, again and again."""

from __future__ import annotations

from typing import Any

import trio

from ..load import (
    CONNECTION_ERRORS,
    WAITING_PROMPT,
    open_until_hitl,
    read_to_done,
    wait_for_close,
)
from ..measure import Context, Errors, Window, closed_loop, summarize_ms


async def run(ctx: Context, *, concurrency: int, seconds: float, warmup: float) -> dict[str, Any]:
    target = ctx.target
    session_times: list[float] = []
    errors = Errors(ctx.status)
    window = Window()
    ctx.status.update(C=concurrency, done=0)

    async def client(index: int) -> None:
        approver = target.approver()
        raw = target.stream_request(WAITING_PROMPT, index)
        try:
            while True:
                started = trio.current_time()
                try:
                    stream, request_id = await open_until_hitl(target, raw)
                    try:
                        await approver.approve(request_id, index)
                        await read_to_done(stream)
                        await wait_for_close(stream)
                    finally:
                        stream.close()
                except CONNECTION_ERRORS as error:
                    errors.note(error)
                    approver.close()
                    await trio.sleep(0.05)
                    continue
                if window.open:
                    session_times.append(trio.current_time() - started)
                    ctx.status["done"] = len(session_times)
        finally:
            approver.close()

    cpu = await closed_loop(ctx, concurrency, client, window, warmup=warmup, seconds=seconds)
    return {
        "concurrency": concurrency,
        "completed": len(session_times),
        "sessions_per_s": len(session_times) / cpu["wall_s"],
        "session_time": summarize_ms(session_times),
        "session_times_ms": [t * 1000 for t in session_times],
        **errors.figures(),
        **cpu,
    }
