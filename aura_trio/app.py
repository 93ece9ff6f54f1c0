"""The Quart-Trio app: factory, lifespan, error envelopes, health."""

from __future__ import annotations

import logging

import trio
from quart import Quart, Response, has_request_context, request, websocket
from quart_schema import document_response, hide
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from .agents import Agent, load_agent
from .api.console_routes import register_console_routes
from .api.envelope import (
    HTTP_ERROR_CODES,
    envelope_error,
    envelope_success,
    error_body,
    json_response,
)
from .api.hitl_routes import register_hitl_routes
from .api.models import Failure, HealthStatus, Success
from .api.openapi import install_openapi
from .api.stream_routes import register_stream_routes
from .api.ws_routes import register_ws_routes
from .auth import Authenticator
from .bus.address import AddressLike, RedisAddress, parse_redis_url
from .bus.redis_bus import RedisBus
from .bus.replicated import NotReplicatedError
from .bus.sentinel import sentinel_locator
from .errors import ApiError, HeadersTooLargeError, StoreUnavailable
from .hitl import records as hitl
from .hitl.liveness import Liveness, new_worker_id, requests_key
from .hitl.store import HitlStore
from .http.connection import ClosingHTTPConnection
from .http.request_body import LeanRequest
from .http.websocket import SessionWebsocket, SessionWebsocketConnection
from .metrics import CONTENT_TYPE, Metrics
from .sessions.registry import SessionRegistry
from .sessions.session import SessionServices, heartbeat_clock
from .settings import Settings
from .state import AuraState

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 16 * 1024


def redis_address(settings: Settings) -> AddressLike:
    """`REDIS_URL`, or in Sentinel mode a locator asking the sentinels (with the URL's
    password, db and TLS settings, when it is set)."""
    if not settings.sentinel_mode:
        assert settings.redis_url is not None
        return settings.redis_url
    assert settings.redis_sentinel_master is not None
    template = parse_redis_url(settings.redis_url) if settings.redis_url else RedisAddress()
    return sentinel_locator(
        settings.redis_sentinels,
        settings.redis_sentinel_master,
        template=template,
        # All of them asked within half a connection attempt's bound.
        timeout=settings.redis_timeout_seconds / (2 * len(settings.redis_sentinels)),
    )


def create_app(settings: Settings, *, agent: Agent | None = None) -> QuartTrio:
    """Build the app. Its Redis subscriber starts and stops with the app's lifespan."""
    if settings.redis_url is None and not settings.sentinel_mode:
        raise ValueError(
            "create_app needs settings.redis_url or Sentinel mode "
            "(the CLI starts an embedded Redis)"
        )
    settings.check_secret()
    settings.check_sentinel()
    app = QuartTrio(__name__, static_folder=None)
    app.asgi_http_class = ClosingHTTPConnection
    app.request_class = LeanRequest
    app.asgi_websocket_class = SessionWebsocketConnection
    app.websocket_class = SessionWebsocket
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    # No cancel scope around every response: a client too slow to take one is
    # dropped by the send timeout, streams included.
    app.config["RESPONSE_TIMEOUT"] = None
    metrics = Metrics()
    bus = RedisBus(
        redis_address(settings),
        channel_prefix=hitl.CHANNEL_PREFIX,
        stored_prefix=hitl.SIGNAL_PREFIX,
        connections=settings.redis_connections,
        timeout=settings.redis_timeout_seconds,
        poll_interval=settings.signal_poll_seconds,
        on_subscribed=metrics.redis_subscriptions.inc,
        min_replicas=settings.redis_min_replicas,
    )
    worker_id = new_worker_id()
    store = HitlStore(
        bus,
        request_ttl=settings.request_ttl_seconds,
        session_ttl=settings.session_ttl_seconds,
        signal_ttl=settings.signal_ttl_seconds,
        audit_max_len=settings.audit_max_len,
        owned_set=requests_key(worker_id),
    )
    state = AuraState(
        settings=settings,
        agent=agent or load_agent(settings),
        bus=bus,
        store=store,
        liveness=Liveness(bus, store, worker_id, settings.worker_ttl_seconds),
        authenticator=Authenticator(
            settings.secret,
            settings.jwt_leeway_seconds,
            trust_tenant_header=settings.trust_tenant_header,
        ),
        registry=SessionRegistry(
            max_per_user=settings.max_streams_per_user, max_total=settings.max_sessions
        ),
        metrics=metrics,
        heartbeat_clock=heartbeat_clock(settings.heartbeat_seconds),
    )
    app.extensions["aura"] = state

    @app.before_serving
    async def start_background() -> None:
        await app.nursery.start(_run_background, state)
        log.info("worker %s started", state.liveness.worker_id)

    @app.after_serving
    async def stop_background() -> None:
        with trio.move_on_after(2):
            await state.liveness.say_goodbye()
        state.bus_scope.cancel()

    _register_error_handlers(app)
    _register_health(app, state)

    @app.before_request
    @app.before_websocket
    async def limit_headers() -> None:
        # Hypercorn (h11) refuses only headers that arrive incomplete beyond 16 KiB; a
        # request that arrives whole in one read is measured here.
        # Counted on the raw header lines: Werkzeug's view of them decodes each one.
        scope = request.scope if has_request_context() else websocket.scope
        size = sum(len(name) + len(value) + 4 for name, value in scope["headers"])
        if size > MAX_HEADER_BYTES:
            raise HeadersTooLargeError(f"request headers exceed {MAX_HEADER_BYTES} bytes")

    if settings.metrics:

        @app.get("/metrics")
        @hide
        async def metrics_page() -> Response:
            return Response(state.metrics.render(), content_type=CONTENT_TYPE)

    services = SessionServices(
        agent=state.agent,
        bus=bus,
        store=store,
        registry=state.registry,
        metrics=metrics,
        heartbeat_seconds=settings.heartbeat_seconds,
        hitl_timeout_seconds=settings.hitl_timeout_seconds,
        heartbeat_clock=state.heartbeat_clock,
    )
    register_stream_routes(app, services, state.authenticator)
    register_hitl_routes(
        app,
        store,
        state.authenticator,
        audit_roles=settings.audit_roles,
        streamed_here=bus.subscribed_here,
    )
    register_ws_routes(
        app,
        services,
        state.authenticator,
        allowed_origins=settings.ws_allowed_origins,
        send_timeout=settings.send_timeout_seconds,
    )
    register_console_routes(app)
    install_openapi(app)
    return app


def state_of(app: Quart) -> AuraState:
    state: AuraState = app.extensions["aura"]
    return state


async def _run_background(state: AuraState, *, task_status: trio.TaskStatus[None]) -> None:
    """The Redis bus, this worker's liveness and the heartbeats' clock, until
    `state.bus_scope` is cancelled."""
    # An exception escaping a task on app.nursery would wreck the lifespan
    # (docs/design-notes.md#background-tasks-must-not-raise).
    with state.bus_scope:
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(state.bus.run)
                await nursery.start(state.liveness.run)
                await nursery.start(state.heartbeat_clock.run)
                task_status.started()
        except Exception:
            log.exception("the Redis bus stopped")


def _register_error_handlers(app: Quart) -> None:
    @app.errorhandler(ApiError)
    async def api_error(error: ApiError) -> Response:
        return json_response(error_body(error), error.status_code, error.headers)

    @app.errorhandler(StoreUnavailable)
    async def store_unavailable(error: StoreUnavailable) -> Response:
        log.warning("Redis call failed: %s", error)
        message = (
            "the write was not confirmed on the Redis replicas in time; it may still take "
            "effect: read the request before trying again"
            if isinstance(error, NotReplicatedError)
            else "Redis is unreachable; try again shortly"
        )
        body = envelope_error(message, "REDIS_UNAVAILABLE")
        return json_response(body, 503, {"Retry-After": "1"})

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        code = HTTP_ERROR_CODES.get(status, "HTTP_ERROR")
        allow = {k: v for k, v in error.get_headers() if k.lower() == "allow"}
        body = envelope_error(error.description or error.name, code)
        return json_response(body, status, allow)

    @app.errorhandler(Exception)
    async def unexpected(error: Exception) -> Response:
        log.exception("unhandled error", exc_info=error)
        return json_response(envelope_error("internal error", "INTERNAL_ERROR"), 500)


def _register_health(app: Quart, state: AuraState) -> None:
    @app.get("/health")
    @document_response(Success[HealthStatus], 200)
    async def health() -> Response:
        """Liveness: the process answers."""
        return json_response(envelope_success({"status": "UP"}, "alive"))

    @app.get("/health/ready")
    @document_response(Success[HealthStatus], 200)
    @document_response(Failure, 503)
    async def ready() -> Response:
        """Readiness: Redis is reachable (503 with the reason when not)."""
        if state.bus.connected:
            return json_response(envelope_success({"status": "UP", "redis": "connected"}, "ready"))
        reason = f"Redis unreachable: {state.bus.last_error or 'not connected yet'}"
        return json_response(envelope_error(reason, "REDIS_UNAVAILABLE"), 503)
