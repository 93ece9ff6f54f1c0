"""`aura-trio demo`: one whole approval round trip, printed as it happens."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from collections.abc import Callable
from functools import partial
from typing import Any
from urllib.parse import quote

import trio

from . import client
from .app import create_app
from .auth import mint_token
from .embedded_redis import embedded_redis, find_server_binary
from .http.runner import serve_app
from .logs import configure_logging
from .settings import Settings

PROMPT = "Please merge PR 42 into main"
USER, TENANT = "demo-user", "demo-tenant"
DECISION_PAUSE_SECONDS = 1.5
DEMO_EVENT_DELAY_SECONDS = 0.15


def _describe(event: str, data: dict[str, Any]) -> str:
    inner = data.get("data") if isinstance(data.get("data"), dict) else {}
    assert isinstance(inner, dict)
    describe: dict[str, Callable[[], str]] = {
        "start": lambda: f"{data['message']} ({data['sessionId']})",
        "thought": lambda: f"{inner['thoughtType']}: {inner['content']}",
        "plan_step": lambda: f"{inner['stepId']} {inner['description']} ({inner['status']})",
        "plan_step_update": lambda: (
            f"{inner['stepId']} → {inner['status']} ({inner['progress']:.0%})"
        ),
        "tool_execution": lambda: (
            f"{inner['toolName']} → {inner['status']}"
            + (" (needs approval)" if inner.get("requiresApproval") else "")
        ),
        "hitl": lambda: f"{inner['message']} [{inner['requestId']}]",
        "content": lambda: repr(inner["content"]) + (" …" if inner.get("chunk") else ""),
        "end": lambda: f"{data['message']}: {data['status']}",
        "error": lambda: f"{data['errorType']}: {data['error']}",
        "failed": lambda: f"{data['errorType']}: {data['message']}",
    }
    try:
        return describe[event]()
    except (KeyError, TypeError, ValueError):
        return json.dumps(data, ensure_ascii=False)


def _say(text: str) -> None:
    print(text, flush=True)


async def _demo(settings: Settings, reject: bool) -> int:
    app = create_app(settings)
    token = mint_token(settings.secret, sub=USER, tenant_id=TENANT, ttl_seconds=600)
    headers = {"Authorization": f"Bearer {token}", "X-Tenant-ID": TENANT}
    started = time.monotonic()
    outcome = None
    async with trio.open_nursery() as nursery:
        stop = trio.Event()
        binds = await nursery.start(partial(serve_app, app, shutdown_trigger=stop.wait))
        port = int(binds[0].rsplit(":", 1)[1])
        _say(f"serving on {binds[0]}\n")
        target = f"/aura/test/stream?message={quote(PROMPT)}"
        _say(f"→ GET {target}   (user {USER}, tenant {TENANT})")
        async with client.open_sse("127.0.0.1", port, target, headers=headers) as stream:
            _say(f"← {stream.status} {stream.headers.get('content-type')}\n")
            if stream.status != 200:
                _say((await stream.read_body()).decode(errors="replace"))
            async for frame in stream:
                if frame.is_done:
                    _say("data: [DONE]")
                    break
                if frame.comments:
                    _say(f": {frame.comments[0]}")
                    continue
                data = frame.json()
                _say(f"[{frame.id}] {frame.event:<16} {_describe(frame.event or '', data)}")
                if frame.event in ("end", "error"):
                    outcome = (frame.event, data.get("status") or data.get("errorType"))
                if frame.event == "hitl":
                    nursery.start_soon(_decide, port, headers, data["data"]["requestId"], reject)
        stop.set()
    elapsed = time.monotonic() - started
    expected = ("error", "RejectionError") if reject else ("end", "completed")
    if outcome == expected:
        verb = "rejected" if reject else "approved"
        _say(f"\ndemo finished: {verb} round trip in {elapsed:.1f} s")
        return 0
    _say(f"\ndemo failed: the stream ended with {outcome}, expected {expected}")
    return 1


async def _decide(port: int, headers: dict[str, str], request_id: str, reject: bool) -> None:
    verb = "reject" if reject else "approve"
    _say(f"    … a person looks at it; {verb} in {DECISION_PAUSE_SECONDS} s")
    await trio.sleep(DECISION_PAUSE_SECONDS)
    body = {"userId": USER, "reason": "not today"} if reject else {"userId": USER}
    response = await client.request(
        "127.0.0.1", port, "POST", f"/aura/hitl/{verb}/{request_id}", headers=headers, body=body
    )
    _say(f"    → POST /aura/hitl/{verb}/{request_id}")
    _say(f"    ← {response.status} {response.body.decode()}")


def run_demo(*, reject: bool) -> int:
    env = dict(os.environ)
    env.setdefault("AURA_EVENT_DELAY_SECONDS", str(DEMO_EVENT_DELAY_SECONDS))
    env.setdefault("AURA_LOG_LEVEL", "WARNING")
    settings = Settings.from_env(env, host="127.0.0.1", port=0)
    configure_logging(settings.log_level)
    if not settings.secret:
        settings = settings.replace(secret=secrets.token_urlsafe(48))
    with contextlib.ExitStack() as stack:
        if settings.redis_url is None:
            binary = find_server_binary()
            settings = settings.replace(redis_url=stack.enter_context(embedded_redis()))
            _say(f"embedded Redis-protocol server: {binary} on {settings.redis_url}")
        else:
            _say("Redis: REDIS_URL")
        return trio.run(_demo, settings, reject)
