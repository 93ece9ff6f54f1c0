"""Scenario 2, approval latency: N waiting sessions, approvals at a steady rate.

Each approval goes through `POST /aura/hitl/approve/{requestId}` on a pool of
kept-alive connections (as a Gateway sends them). The figure is the time from
the approve response to the next event on that session's stream, both seen by
this process on one clock. When the event arrives first, the latency counts as 0.
Beside it, the time from sending the approve to that event (`from_sent`): what
the person who approved waits for, whichever of the two answers comes first.
"""

from __future__ import annotations

from typing import Any

import trio

from ..load import CONNECTION_ERRORS, WAITING_PROMPT, Approver, open_until_hitl, read_to_done
from ..measure import Context, CpuMeter, Errors, latency_figures, summarize_ms

APPROVERS = 16


async def run(
    ctx: Context, *, sessions: int, rate: float, open_concurrency: int, quiet_seconds: float
) -> dict[str, Any]:
    target = ctx.target
    errors = Errors(ctx.status)
    request_ids: list[str | None] = [None] * sessions
    answered: list[float | None] = [None] * sessions
    sent_at: list[float | None] = [None] * sessions
    next_event: list[float | None] = [None] * sessions
    opened = [trio.Event() for _ in range(sessions)]
    opening = trio.Semaphore(open_concurrency)
    ctx.status.update(waiting=0, approved=0)

    async def session(index: int) -> None:
        try:
            async with opening:
                stream, request_ids[index] = await open_until_hitl(
                    target, target.stream_request(WAITING_PROMPT, index)
                )
        except CONNECTION_ERRORS as exc:
            errors.note(exc)
            return
        finally:
            opened[index].set()
        ctx.status["waiting"] += 1
        try:
            _, next_event[index] = await read_to_done(stream)
        except CONNECTION_ERRORS as exc:
            errors.note(exc)
        finally:
            stream.close()

    pool_send, pool_receive = trio.open_memory_channel[Approver](APPROVERS)
    approvers = [target.approver() for _ in range(APPROVERS)]
    for approver in approvers:
        pool_send.send_nowait(approver)

    async def approve(index: int) -> None:
        request_id = request_ids[index]
        if request_id is None:
            return
        approver = await pool_receive.receive()
        try:
            sent_at[index] = trio.current_time()
            await approver.approve(request_id, index)
            answered[index] = trio.current_time()
            ctx.status["approved"] += 1
        except CONNECTION_ERRORS as exc:
            errors.note(exc)
        finally:
            pool_send.send_nowait(approver)

    meter = CpuMeter(ctx)
    try:
        async with trio.open_nursery() as nursery:
            for index in range(sessions):
                nursery.start_soon(session, index)
            for event in opened:
                await event.wait()
            await trio.sleep(quiet_seconds)  # all waiting, nothing else going on
            await meter.start()
            start = trio.current_time()
            async with trio.open_nursery() as approvals:
                for index in range(sessions):
                    await trio.sleep_until(start + index / rate)
                    approvals.start_soon(approve, index)
            with trio.move_on_after(10):
                while any(
                    n is None and a is not None for n, a in zip(next_event, answered, strict=True)
                ):
                    await trio.sleep(0.05)
            cpu = await meter.stop()
            nursery.cancel_scope.cancel()
    finally:
        for approver in approvers:
            approver.close()
    latencies = []
    early = 0
    for got, sent in zip(next_event, answered, strict=True):
        if got is None or sent is None:
            continue
        if got < sent:
            early += 1
        latencies.append(max(0.0, got - sent))
    from_sent = [
        got - at
        for got, at, done in zip(next_event, sent_at, answered, strict=True)
        if got is not None and at is not None and done is not None
    ]
    missing = sum(
        1 for a, n in zip(answered, next_event, strict=True) if a is not None and n is None
    )
    return {
        "sessions": sessions,
        "rate": rate,
        **latency_figures(latencies),
        "event_before_response": early,
        "from_sent": summarize_ms(from_sent),
        "missing_events": missing,
        **errors.figures(more=missing),
        **cpu,
    }
