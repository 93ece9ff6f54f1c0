"""Scenario 5, streaming throughput: sessions whose agent streams many `content` chunks.

The built-in agent sends one `content` chunk per word of the prompt, so a prompt
of W one-letter words (`POST /aura/test/stream`, up to 16,000 characters) makes
a session of about W events. S clients stream such sessions in a closed loop;
the figure is events received per second, and the server's CPU per event.
"""

from __future__ import annotations

from typing import Any

import trio

from ..http import DONE_FRAME
from ..load import CONNECTION_ERRORS, SessionError
from ..measure import Context, Errors, Window, closed_loop


async def run(
    ctx: Context, *, sessions: int, words: int, seconds: float, warmup: float
) -> dict[str, Any]:
    target = ctx.target
    prompt = " ".join(["a"] * words)
    errors = Errors(ctx.status)
    window = Window()
    counted = [0]
    completed = [0]
    ctx.status["events"] = 0

    async def client(index: int) -> None:
        raw = target.stream_post_request(prompt, index)
        while True:
            try:
                stream = await target.open_stream(raw)
                try:
                    while frames := await stream.frames():
                        if window.open:
                            counted[0] += sum(1 for f in frames if f.startswith(b"id:"))
                        if frames[-1] == DONE_FRAME:
                            break
                    else:
                        raise SessionError("stream ended without [DONE]")
                finally:
                    stream.close()
            except CONNECTION_ERRORS as error:
                errors.note(error)
                await trio.sleep(0.05)
                continue
            if window.open:
                completed[0] += 1
            ctx.status["events"] = counted[0]

    cpu = await closed_loop(ctx, sessions, client, window, warmup=warmup, seconds=seconds)
    events = counted[0]
    return {
        "sessions": sessions,
        "words": words,
        "events": events,
        "completed_sessions": completed[0],
        "events_per_s": events / cpu["wall_s"],
        "server_cpu_us_per_event": 1e6 * cpu["server_cpu_s"] / max(1, events),
        **errors.figures(),
        **cpu,
    }
