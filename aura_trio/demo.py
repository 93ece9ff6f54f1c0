"""`aura-trio demo`: one whole approval round trip, printed as it happens (SSE and an
HTTP approval, or `--ws`: one WebSocket carrying the events and the approval; or
`--console`: the request waits for a person in the approval console, and the server
stays up until SIGINT or SIGTERM)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import time
from collections.abc import Callable
from functools import partial
from typing import Any
from urllib.parse import quote

import trio
import trio_websocket

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
CONSOLE_TOKEN_TTL_SECONDS = 8 * 3600


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


async def _demo(settings: Settings, reject: bool, ws: bool, console: bool) -> int:
    app = create_app(settings)
    ttl = CONSOLE_TOKEN_TTL_SECONDS if console else 600
    token = mint_token(settings.secret, sub=USER, tenant_id=TENANT, ttl_seconds=ttl)
    started = time.monotonic()
    async with trio.open_nursery() as nursery:
        stop = trio.Event()
        binds = await nursery.start(partial(serve_app, app, shutdown_trigger=stop.wait))
        port = int(binds[0].rsplit(":", 1)[1])
        _say(f"serving on {binds[0]}\n")
        if console:
            await _console_until_signal(port, token)
            stop.set()
            return 0
        over = _over_websocket if ws else _over_sse
        outcome = await over(port, token, reject)
        stop.set()
    elapsed = time.monotonic() - started
    expected = ("error", "RejectionError") if reject else ("end", "completed")
    if outcome == expected:
        verb = "rejected" if reject else "approved"
        how = " on the same WebSocket" if ws else ""
        _say(f"\ndemo finished: {verb}{how}, round trip in {elapsed:.1f} s")
        return 0
    _say(f"\ndemo failed: the session ended with {outcome}, expected {expected}")
    return 1


def _event(event_id: object, event: str, data: dict[str, Any]) -> tuple[str, str] | None:
    """Print an event; returns the session's outcome when it is one."""
    _say(f"[{event_id}] {event:<16} {_describe(event, data)}")
    if event in ("end", "error"):
        return event, str(data.get("status") or data.get("errorType"))
    return None


async def _console_until_signal(port: int, token: str) -> None:
    """A request waiting in the console for a person; then the console stays up."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_wait_in_console, port, token)
            async for signum in signals:
                _say(f"\n{signal.Signals(signum).name}: stopping")
                break
            nursery.cancel_scope.cancel()


async def _wait_in_console(port: int, token: str) -> None:
    _say(
        "approval console (the token rides in the URL's fragment, which a browser never"
        f" sends):\n  http://127.0.0.1:{port}/aura/console#token={token}\n"
    )
    _say("a session now waits there for a person: Approve, Reject or Edit arguments\n")
    outcome = await _over_sse(port, token, reject=False, decide=False)
    _say(f"\nthe session ended: {outcome}; the console stays up for your own prompts")
    _say("(Ctrl-C stops)")
    await trio.sleep_forever()


async def _over_sse(
    port: int, token: str, reject: bool, *, decide: bool = True
) -> tuple[str, str] | None:
    headers = {"Authorization": f"Bearer {token}", "X-Tenant-ID": TENANT}
    target = f"/aura/test/stream?message={quote(PROMPT)}"
    _say(f"→ GET {target}   (user {USER}, tenant {TENANT})")
    outcome = None
    async with trio.open_nursery() as nursery:
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
                outcome = _event(frame.id, frame.event or "", data) or outcome
                if frame.event == "hitl" and decide:
                    request_id = data["data"]["requestId"]
                    nursery.start_soon(_decide, port, headers, request_id, reject)
    return outcome


async def _decide(port: int, headers: dict[str, str], request_id: str, reject: bool) -> None:
    verb = "reject" if reject else "approve"
    _say(f"    … a person looks at it; {verb} in {DECISION_PAUSE_SECONDS} s")
    await trio.sleep(DECISION_PAUSE_SECONDS)
    body = {"userId": USER, "reason": "not today"} if reject else {"userId": USER}
    # Printed as it is sent: the stream's next events may be printed before its answer.
    _say(f"    → POST /aura/hitl/{verb}/{request_id}")
    response = await client.request(
        "127.0.0.1", port, "POST", f"/aura/hitl/{verb}/{request_id}", headers=headers, body=body
    )
    _say(f"    ← {response.status} {response.body.decode()}")


async def _over_websocket(port: int, token: str, reject: bool) -> tuple[str, str] | None:
    """The same round trip on one socket, the token offered as a browser would."""
    _say(f"→ GET /aura/ws   (upgrade; subprotocols aura.v1, bearer.<jwt>; user {USER})")
    outcome = None
    protocols = ["aura.v1", f"bearer.{token}"]
    async with client.open_ws("127.0.0.1", port, subprotocols=protocols) as ws:
        _say(f"← 101 Switching Protocols, subprotocol {ws.ws.subprotocol}\n")
        _say(f"→ start {PROMPT!r}")
        await ws.start(PROMPT)
        async with trio.open_nursery() as nursery:
            while True:
                try:
                    message = await ws.receive()
                except trio_websocket.ConnectionClosed:
                    break
                if message["type"] == "event":
                    outcome = _event(message["id"], message["event"], message["data"]) or outcome
                    if message["event"] == "hitl":
                        request_id = message["data"]["data"]["requestId"]
                        nursery.start_soon(_decide_on_socket, ws, request_id, reject)
                else:
                    _say(f"    ← {json.dumps(message, ensure_ascii=False)}")
        closed = ws.ws.closed
        _say(f"← close {closed.code if closed else None}")
    return outcome


async def _decide_on_socket(ws: client.WsSession, request_id: str, reject: bool) -> None:
    verb = "reject" if reject else "approve"
    _say(f"    … a person looks at it; {verb} in {DECISION_PAUSE_SECONDS} s")
    await trio.sleep(DECISION_PAUSE_SECONDS)
    fields = {"userId": USER, "reason": "not today"} if reject else {"userId": USER}
    _say(f"    → {verb} {request_id}")
    await ws.decide(verb, request_id, **fields)


def run_demo(*, reject: bool, ws: bool = False, console: bool = False) -> int:
    env = dict(os.environ)
    env.setdefault("AURA_EVENT_DELAY_SECONDS", str(DEMO_EVENT_DELAY_SECONDS))
    env.setdefault("AURA_LOG_LEVEL", "WARNING")
    settings = Settings.from_env(env, host="127.0.0.1", port=0)
    configure_logging(settings.log_level)
    if not settings.secret:
        settings = settings.replace(secret=secrets.token_urlsafe(48))
    with contextlib.ExitStack() as stack:
        if settings.redis_url is None and not settings.sentinel_mode:
            binary = find_server_binary()
            settings = settings.replace(redis_url=stack.enter_context(embedded_redis()))
            _say(f"embedded Redis-protocol server: {binary} on {settings.redis_url}")
        else:
            _say("Redis: the sentinels'" if settings.sentinel_mode else "Redis: REDIS_URL")
        return trio.run(_demo, settings, reject, ws, console)
