"""The peer's FastAPI app: the stream, the approve endpoint, health.

Written as a team would run the existing Python design of the contract, lean:

* `StreamingResponse` over an async generator; the agent runs in a task and
  hands frames to the generator through a bounded `asyncio.Queue` (64, as
  aura's outbox); the generator sends whatever is queued in one chunk, and a
  heartbeat comment when nothing came for `AURA_HEARTBEAT_SECONDS`.
* HITL: a waiting session holds a PubSub connection of its own
  (`SUBSCRIBE hitl:channel:{sessionId}`) and waits on it under `asyncio.timeout`.
  It subscribes before the `hitl` event is sent, so an approval that follows the
  event at once is never missed. Afterwards it unsubscribes and gives the
  PubSub back to a free list, so the next waiting session reuses its connection
  (redis-py's `PubSub.aclose()` closes the connection: one TCP connection per
  session otherwise); one whose wait was cut short is closed instead.
* Approve: WATCH the request, GET it, check it is pending, then in MULTI/EXEC
  SET it approved, PUBLISH and SET the signal (the Java side's order): a
  compare-and-set, as aura's; a request that changed meanwhile is read again.

Same event JSON, same framing, same pacing and the same JWT checks as aura.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import secrets
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jwt
import redis.asyncio as aioredis
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from redis.exceptions import WatchError

CONNECTED = b": connected\n\n"
HEARTBEAT = b": heartbeat\n\n"
DONE = b"data: [DONE]\n\n"
OUTBOX_FRAMES = 64
REDIS_MAX_CONNECTIONS = 20000
SPARE_PUBSUBS = 1024  # PubSub connections kept open between waiting sessions
DEFAULT_REJECT_REASON = "사용자 거절"
_SENSITIVE = (
    ("git_merge", ("merge",)),
    ("send_email", ("email", "메일")),
    ("deploy", ("deploy", "배포")),
)
_PATH_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")

Event = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class Settings:
    redis_url: str
    secret: str
    event_delay: float = 0.05
    heartbeat: float = 15.0
    hitl_timeout: float = 300.0
    request_ttl: int = 1800
    session_ttl: int = 3600
    signal_ttl: int = 300
    leeway: float = 30.0
    max_prompt_chars: int = 16000

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        return cls(
            redis_url=env.get("REDIS_URL") or "redis://127.0.0.1:6379/0",
            secret=env.get("SECRET_KEY") or env.get("JWT_SECRET") or "",
            event_delay=float(env.get("AURA_EVENT_DELAY_SECONDS", "0.05")),
            heartbeat=float(env.get("AURA_HEARTBEAT_SECONDS", "15")),
            hitl_timeout=float(env.get("AURA_HITL_TIMEOUT_SECONDS", "300")),
            request_ttl=int(env.get("AURA_REQUEST_TTL_SECONDS", "1800")),
            session_ttl=int(env.get("AURA_SESSION_TTL_SECONDS", "3600")),
            signal_ttl=int(env.get("AURA_SIGNAL_TTL_SECONDS", "300")),
            leeway=float(env.get("AURA_JWT_LEEWAY_SECONDS", "30")),
        )


# --- wire format ---------------------------------------------------------------


def to_json(data: Any) -> bytes:
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8", "backslashreplace")


def frame(event_id: int, event_type: str, data: Any) -> bytes:
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event_id, event_type.encode(), to_json(data))


def now() -> int:
    return int(time.time())


def envelope(data: Any, message: str) -> dict[str, Any]:
    return {
        "status": "SUCCESS",
        "message": message,
        "data": data,
        "success": True,
        "timestamp": datetime.now().isoformat(timespec="seconds"),
    }


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers

    def response(self) -> JSONResponse:
        body = {
            "status": "ERROR",
            "message": self.message,
            "errorCode": self.code,
            "data": None,
            "success": False,
            "timestamp": datetime.now().isoformat(timespec="seconds"),
        }
        return JSONResponse(body, self.status, headers=self.headers)


# What aura's built-in agent proposes per action (the part a person may edit).
_PROPOSED: dict[str, dict[str, Any]] = {
    "git_merge": {"strategy": "merge"},
    "send_email": {"recipients": ["team@example.com"]},
    "deploy": {"environment": "staging"},
}


def _tool(name: str, args: dict[str, Any], status: str, *, result: Any = None,
          requires_approval: bool = False) -> Event:  # fmt: skip
    return "tool_execution", {
        "type": "tool_execution",
        "data": {
            "toolName": name,
            "toolArgs": args,
            "status": status,
            "result": result,
            "error": None,
            "requiresApproval": requires_approval,
        },
    }


def _step_update(status: str, progress: float) -> Event:
    return "plan_step_update", {
        "type": "plan_step_update",
        "data": {"stepId": "step-1", "status": status, "progress": progress},
    }


def _content(text: str, chunk: bool) -> Event:
    return "content", {"type": "content", "data": {"content": text, "chunk": chunk}}


def _end(status: str) -> Event:
    return "end", {"type": "end", "message": "Agent finished", "status": status, "timestamp": now()}


def _error(error_type: str, error: str, message: str) -> Event:
    return "error", {"type": "error", "error": error, "errorType": error_type, "message": message}


# --- auth (the checks aura makes, in the same order) ---------------------------


def authenticate(request: Request, settings: Settings) -> tuple[str, str | None]:
    """`(user id, tenant id)` of the bearer token, after the identity-header checks."""
    value = request.headers.get("authorization")
    if not value:
        raise _unauthorized("missing Authorization header")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("Authorization must be 'Bearer <token>'")
    try:
        claims = jwt.decode(
            token.strip(),
            settings.secret.encode("utf-8"),
            algorithms=["HS256"],
            leeway=settings.leeway,
            options={"require": ["exp", "sub"]},
        )
    except jwt.InvalidTokenError as error:
        raise _unauthorized(f"invalid token: {error}") from None
    user_id = claims.get("sub")
    if not isinstance(user_id, str) or not user_id:
        raise _unauthorized("invalid token: sub must be a non-empty string")
    tenant = claims.get("tenant_id")
    tenant = None if tenant is None else str(tenant)
    header_tenant = request.headers.get("x-tenant-id")
    if header_tenant is not None and tenant is not None and header_tenant != tenant:
        raise ApiError(403, "FORBIDDEN", "X-Tenant-ID does not match the token's tenant")
    header_user = request.headers.get("x-user-id")
    if header_user is not None and header_user != user_id:
        raise ApiError(403, "FORBIDDEN", "X-User-ID does not match the token's subject")
    return user_id, tenant if tenant is not None else header_tenant


def _unauthorized(message: str) -> ApiError:
    return ApiError(
        401, "UNAUTHORIZED", message, {"WWW-Authenticate": 'Bearer error="invalid_token"'}
    )


# --- HITL over Redis -------------------------------------------------------------


class HitlManager:
    def __init__(self, redis: aioredis.Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings

    async def save_request(self, record: dict[str, Any]) -> None:
        session = {k: record[k] for k in ("sessionId", "requestId", "userId", "tenantId")}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(
                f"hitl:request:{record['requestId']}", to_json(record), ex=self.settings.request_ttl
            )
            pipe.set(
                f"hitl:session:{record['sessionId']}",
                to_json(session),
                ex=self.settings.session_ttl,
            )
            await pipe.execute()

    async def get_request(self, request_id: str) -> dict[str, Any] | None:
        raw = await self.redis.get(f"hitl:request:{request_id}")
        return json.loads(raw) if raw else None

    async def set_status_if_pending(self, request_id: str, status: str) -> None:
        """Compare-and-set: `status` only if the request is still pending."""
        key = f"hitl:request:{request_id}"
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    record = json.loads(raw) if raw else None
                    if record is None or record.get("status") != "pending":
                        return
                    record["status"] = status
                    pipe.multi()
                    pipe.set(key, to_json(record), keepttl=True)
                    await pipe.execute()
                    return
                except WatchError:
                    continue

    @staticmethod
    async def wait_for_approval_signal(
        pubsub: aioredis.client.PubSub, request_id: str, timeout: float
    ) -> dict[str, Any] | None:
        """The signal for `request_id`, or None after `timeout` seconds."""
        try:
            async with asyncio.timeout(timeout):
                async for message in pubsub.listen():
                    if message["type"] != "message":
                        continue
                    try:
                        signal = json.loads(message["data"])
                    except ValueError:
                        continue
                    if isinstance(signal, dict) and signal.get("requestId") == request_id:
                        if signal.get("status") in ("approved", "rejected"):
                            return signal
        except TimeoutError:
            return None
        raise ConnectionError("subscription ended")


class PubSubs:
    """PubSub connections between waiting sessions: each waiting session holds one;
    a session that got its signal gives it back unsubscribed, for the next (up to
    `SPARE_PUBSUBS` are kept)."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._free: list[aioredis.client.PubSub] = []

    def take(self) -> aioredis.client.PubSub:
        return self._free.pop() if self._free else self._redis.pubsub()

    async def give_back(self, pubsub: aioredis.client.PubSub, channel: str, *, clean: bool) -> None:
        """Unsubscribe and keep it; close it if its wait was cut short (a cancelled
        read may have left its connection mid-reply) or unsubscribing failed."""
        if clean:
            try:
                await pubsub.unsubscribe(channel)
            except Exception:
                pass
            else:
                if len(self._free) < SPARE_PUBSUBS:
                    self._free.append(pubsub)
                    return
        await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def aclose(self) -> None:
        free, self._free = self._free, []
        for pubsub in free:
            await pubsub.aclose()  # type: ignore[no-untyped-call]


# --- the session -----------------------------------------------------------------


class Session:
    """One stream: the agent task writes frames into a bounded queue."""

    def __init__(self, app: FastAPI, prompt: str, context: dict[str, Any], thread_id: str | None,
                 user_id: str, tenant_id: str | None) -> None:  # fmt: skip
        self.settings: Settings = app.state.settings
        self.redis: aioredis.Redis = app.state.redis
        self.hitl: HitlManager = app.state.hitl
        self.pubsubs: PubSubs = app.state.pubsubs
        self.session_id = "sess_" + secrets.token_hex(16)
        self.prompt, self.context, self.thread_id = prompt, context, thread_id
        self.user_id, self.tenant_id = user_id, tenant_id
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(OUTBOX_FRAMES)
        self.next_id = 1
        self.pending_request: str | None = None

    async def emit(self, event: Event) -> None:
        await self.queue.put(frame(self.next_id, *event))
        self.next_id += 1

    async def step(self, event: Event) -> None:
        await self.emit(event)
        if self.settings.event_delay > 0:
            await asyncio.sleep(self.settings.event_delay)

    async def run(self) -> None:
        try:
            await self.emit(
                ("start", {"type": "start", "message": "Agent started",
                           "sessionId": self.session_id, "timestamp": now()})
            )  # fmt: skip
            ending = await self.agent()
        except asyncio.CancelledError:
            if self.pending_request is not None:
                try:
                    await self.hitl.set_status_if_pending(self.pending_request, "cancelled")
                except Exception:
                    pass
            raise
        except Exception:
            ending = [
                _error("InternalError", "internal error", "에이전트 실행 중 오류가 발생했습니다")
            ]
        for event in ending:
            await self.emit(event)
        await self.queue.put(DONE)

    async def agent(self) -> list[Event]:
        prompt = self.prompt
        lowered = prompt.casefold()
        actions = [a for a, words in _SENSITIVE if any(w in lowered for w in words)]
        thought = {"thoughtType": "analysis", "content": "사용자 요청 분석 중..."}
        await self.step(("thought", {"type": "thought", "data": thought}))
        step = {
            "stepId": "step-1",
            "description": "요청 처리",
            "status": "pending",
            "confidence": 0.8,
        }
        await self.step(("plan_step", {"type": "plan_step", "data": step}))
        await self.step(_step_update("in_progress", 0.1))
        await self.step(_tool("analyze_request", {"promptLength": len(prompt)}, "success",
                              result={"sensitiveActions": actions}))  # fmt: skip
        for number, action in enumerate(actions, start=1):
            args = {"requestedBy": self.user_id, "step": number, **_PROPOSED[action]}
            context = {"prompt": prompt[:200], "threadId": self.thread_id}
            ending = await self.request_approval(
                action, args, f"{action} 실행을 승인하시겠습니까?", context
            )
            if ending is not None:
                return ending
            await self.step(_tool(action, args, "success", result={"approved": True}))
        await self.step(_step_update("completed", 1.0))
        for word in prompt.split():
            await self.step(_content(word + " ", True))
        await self.step(_content("작업 완료", False))
        return [_end("completed")]

    async def request_approval(self, action: str, args: dict[str, Any], message: str,
                               context: dict[str, Any]) -> list[Event] | None:  # fmt: skip
        """None when approved; else the events that end the session."""
        request_id = "req_" + secrets.token_hex(16)
        created = now()
        expires = created + math.ceil(self.settings.hitl_timeout)
        channel = f"hitl:channel:{self.session_id}"
        pubsub = self.pubsubs.take()
        signal: dict[str, Any] | None = None
        await pubsub.subscribe(channel)
        try:
            await self.hitl.save_request({
                "requestId": request_id, "sessionId": self.session_id, "actionType": action,
                "message": message, "context": context, "status": "pending",
                "userId": self.user_id, "tenantId": self.tenant_id,
                "createdAt": created, "expiresAt": expires,
            })  # fmt: skip
            self.pending_request = request_id
            await self.emit(_tool(action, args, "pending", requires_approval=True))
            await self.emit(("hitl", {"type": "hitl", "data": {
                "requestId": request_id, "sessionId": self.session_id, "actionType": action,
                "message": message, "context": context, "requiresApproval": True,
                "expiresAt": expires}}))  # fmt: skip
            signal = await self.hitl.wait_for_approval_signal(
                pubsub, request_id, self.settings.hitl_timeout
            )
        finally:
            await self.pubsubs.give_back(pubsub, channel, clean=signal is not None)
        self.pending_request = None
        if signal is None:
            await self.hitl.set_status_if_pending(request_id, "timeout")
            what = "승인 대기 시간이 초과되었습니다"
            return [
                ("failed", {"type": "failed", "message": what, "error": "HITL approval timed out",
                            "errorType": "TimeoutError", "requestId": request_id,
                            "sessionId": self.session_id, "timestamp": now()}),
                _error("TimeoutError", "HITL approval timed out", what),
                _end("failed"),
            ]  # fmt: skip
        if signal["status"] == "approved":
            return None
        reason = signal.get("reason") or DEFAULT_REJECT_REASON
        return [_error("RejectionError", reason, "승인 요청이 거절되었습니다")]


async def sse_body(session: Session, heartbeat: float) -> AsyncGenerator[bytes, None]:
    producer = asyncio.create_task(session.run())
    queue = session.queue
    try:
        yield CONNECTED
        while True:
            if queue.empty():
                try:
                    async with asyncio.timeout(heartbeat):
                        item = await queue.get()
                except TimeoutError:
                    yield HEARTBEAT
                    continue
            else:
                item = queue.get_nowait()
            # Whatever else is queued already goes out in the same chunk.
            batch = [item]
            while item is not DONE and not queue.empty():
                item = queue.get_nowait()
                batch.append(item)
            yield item if len(batch) == 1 else b"".join(batch)
            if item is DONE:
                return
    finally:
        producer.cancel()


# --- the app ----------------------------------------------------------------------


def create_app(settings: Settings) -> FastAPI:
    if len(settings.secret.encode()) < 32:
        raise SystemExit("SECRET_KEY must be at least 32 bytes")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One connection per waiting session: redis-py's asyncio pool stops at 100
        # by default (then `MaxConnectionsError`), so it is sized for the fleet.
        app.state.redis = aioredis.Redis.from_url(
            settings.redis_url, max_connections=REDIS_MAX_CONNECTIONS
        )
        app.state.hitl = HitlManager(app.state.redis, settings)
        app.state.pubsubs = PubSubs(app.state.redis)
        yield
        await app.state.pubsubs.aclose()
        await app.state.redis.aclose()

    app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)
    app.state.settings = settings

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return error.response()

    def open_stream(
        request: Request, prompt: Any, context: Any, thread_id: Any
    ) -> StreamingResponse:
        user_id, tenant_id = authenticate(request, settings)
        if not isinstance(prompt, str) or not prompt.strip():
            raise ApiError(
                400, "VALIDATION_ERROR", "prompt is required and must be a non-empty string"
            )
        if len(prompt) > settings.max_prompt_chars:
            raise ApiError(400, "VALIDATION_ERROR", "prompt is too long")
        session = Session(app, prompt, dict(context or {}), thread_id, user_id, tenant_id)
        last = request.headers.get("last-event-id", "").strip()
        if last.isascii() and last.isdigit() and len(last) <= 18:
            session.next_id = int(last) + 1
        return StreamingResponse(
            sse_body(session, settings.heartbeat),
            media_type="text/event-stream; charset=utf-8",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no",
                     "X-Aura-Session-ID": session.session_id},
        )  # fmt: skip

    @app.get("/aura/test/stream")
    async def stream_get(request: Request, message: str | None = None) -> StreamingResponse:
        return open_stream(request, message, None, None)

    @app.post("/aura/test/stream")
    async def stream_post(request: Request) -> StreamingResponse:
        try:
            body = await request.json()
        except ValueError:
            raise ApiError(400, "VALIDATION_ERROR", "the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "VALIDATION_ERROR", "the body must be a JSON object")
        return open_stream(request, body.get("prompt"), body.get("context"), body.get("thread_id"))

    @app.post("/aura/hitl/approve/{request_id}")
    async def approve(request_id: str, request: Request) -> JSONResponse:
        user_id, tenant_id = authenticate(request, settings)
        if not _PATH_ID.fullmatch(request_id):
            raise ApiError(400, "VALIDATION_ERROR", "requestId must match [A-Za-z0-9_-]{1,128}")
        raw = await request.body()
        body = json.loads(raw) if raw.strip() else {}
        approver = body.get("userId", user_id) if isinstance(body, dict) else user_id
        redis: aioredis.Redis = app.state.redis
        key = f"hitl:request:{request_id}"
        async with redis.pipeline(transaction=True) as pipe:
            while True:  # compare-and-set: read again if the request changed meanwhile
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    record = json.loads(raw) if raw else None
                    if record is None or record.get("tenantId") != tenant_id:
                        raise ApiError(404, "HITL_NOT_FOUND", "HITL request not found")
                    if record.get("status") != "pending":
                        already = f"HITL request is already {record.get('status')}"
                        raise ApiError(409, "HITL_NOT_PENDING", already)
                    record["status"] = "approved"
                    session_id = record["sessionId"]
                    signal = to_json({"type": "approval", "requestId": request_id,
                                      "status": "approved", "timestamp": now(),
                                      "userId": approver})  # fmt: skip
                    pipe.multi()
                    pipe.set(key, to_json(record), keepttl=True)
                    pipe.publish(f"hitl:channel:{session_id}", signal)
                    pipe.set(f"hitl:signal:{session_id}", signal, ex=settings.signal_ttl)
                    await pipe.execute()
                    break
                except WatchError:
                    continue
        data = {"requestId": request_id, "sessionId": session_id, "status": "approved"}
        return JSONResponse(envelope(data, "HITL request approved"))

    @app.get("/aura/hitl/requests/{request_id}")
    async def read_request(request_id: str, request: Request) -> JSONResponse:
        _, tenant_id = authenticate(request, settings)
        if not _PATH_ID.fullmatch(request_id):
            raise ApiError(400, "VALIDATION_ERROR", "requestId must match [A-Za-z0-9_-]{1,128}")
        hitl: HitlManager = app.state.hitl
        record = await hitl.get_request(request_id)
        if record is None or record.get("tenantId") != tenant_id:
            raise ApiError(404, "HITL_NOT_FOUND", "HITL request not found")
        return JSONResponse(envelope(record, "HITL request"))

    @app.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse(envelope({"status": "UP"}, "alive"))

    @app.get("/bench/stats")
    async def stats(request: Request) -> JSONResponse:
        """What the bench reads from inside: task count; `?gctrace=on|get`: GC pauses."""
        body: dict[str, Any] = {
            "tasks": len(asyncio.all_tasks()),
            "threads": threading.active_count(),
        }
        if request.query_params.get("gctrace"):
            from ... import gctrace

            body["gc_pauses"] = gctrace.trace(request.query_params["gctrace"])
        return JSONResponse(body)

    return app
