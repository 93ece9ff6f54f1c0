"""`GET|POST /aura/test/stream` (docs/contract.md#the-stream)."""

from __future__ import annotations

from quart import Quart, Response, request
from quart_schema import document_querystring, document_request, document_response

from ..agents import StreamRequest
from ..auth import Authenticator, Principal
from ..errors import UnavailableError
from ..sessions.registry import RETRY_AFTER_SECONDS
from ..sessions.session import Session, SessionServices
from ..sessions.sse import SSE, parse_last_event_id
from .event_stream import SessionBody
from .models import EventStream, Failure, StreamBody, StreamQuery, parse
from .openapi import StreamHeaders, documented
from .requests import authenticated, read_json, with_context_headers


def register_stream_routes(
    app: Quart, services: SessionServices, authenticator: Authenticator
) -> None:
    auth = authenticated(authenticator)

    def open_stream(principal: Principal, stream_request: StreamRequest) -> Response:
        if not services.bus.connected:
            raise UnavailableError(
                "Redis is unreachable; try again shortly",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        session = Session(
            request=stream_request,
            principal=principal,
            services=services,
            framing=SSE,
            last_event_id=parse_last_event_id(request.headers.get("Last-Event-ID")),
        )
        services.registry.admit(session)
        response = Response(
            SessionBody(session),
            status=200,
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
                "X-Aura-Session-ID": session.session_id,
            },
        )
        # A stream lives as long as its session:
        # docs/design-notes.md#sse-streams-and-response-timeout
        response.timeout = None
        return response

    @app.get("/aura/test/stream")
    @document_querystring(StreamQuery)
    @document_response(EventStream, 200)
    @document_response(Failure, 429)
    @documented(400, 503, headers=StreamHeaders)
    @auth
    async def stream_get(principal: Principal) -> Response:
        """Open an event stream for `message`."""
        query = parse(StreamQuery, {"message": request.args.get("message")})
        context = with_context_headers({}, request.headers)
        return open_stream(principal, StreamRequest(prompt=query.message, context=context))

    @app.post("/aura/test/stream")
    @document_request(StreamBody)
    @document_response(EventStream, 200)
    @document_response(Failure, 429)
    @documented(400, 413, 503, headers=StreamHeaders)
    @auth
    async def stream_post(principal: Principal) -> Response:
        """Open an event stream for a prompt with its context."""
        body = parse(StreamBody, await read_json(required=True))
        context = with_context_headers(body.context or {}, request.headers)
        return open_stream(
            principal,
            StreamRequest(prompt=body.prompt, context=context, thread_id=body.thread_id),
        )
