"""`GET|POST /aura/test/stream` (CONTRACT 3)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from quart import Quart, Response, request
from quart_schema import document_querystring, document_request, document_response

from ..agents import StreamRequest
from ..auth import Principal
from ..errors import UnavailableError, ValidationError
from ..sessions.registry import RETRY_AFTER_SECONDS
from ..sessions.session import Session, SessionBody
from ..sessions.sse import parse_last_event_id
from .models import EventStream, Failure, StreamBody, StreamQuery, parse
from .openapi import StreamHeaders, documented

if TYPE_CHECKING:
    from ..state import AuraState

_CONTEXT_HEADERS = (("X-DWP-Source", "source"), ("X-DWP-Caller-Type", "caller_type"))


async def read_json(*, required: bool) -> Any:
    """The request body as JSON (whatever its Content-Type); None for an empty body.

    Raises:
        ValidationError: the body is not UTF-8 JSON, or is missing when `required`.
    """
    raw = await request.get_data(as_text=False)
    if not raw.strip():
        if required:
            raise ValidationError("a JSON body is required")
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise ValidationError("the body is not valid JSON") from None


def _with_headers(context: dict[str, Any]) -> dict[str, Any]:
    context = dict(context)
    for header, name in _CONTEXT_HEADERS:
        value = request.headers.get(header)
        if value is not None:
            context[name] = value
    return context


def register_stream_routes(app: Quart, state: AuraState) -> None:
    async def open_stream(principal: Principal, stream_request: StreamRequest) -> Response:
        if not state.bus.connected:
            raise UnavailableError(
                "Redis is unreachable; try again shortly",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        session = Session(
            request=stream_request,
            principal=principal,
            state=state,
            last_event_id=parse_last_event_id(request.headers.get("Last-Event-ID")),
        )
        state.registry.admit(session)
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
        response.timeout = None  # a stream lives as long as its session (PITFALLS 1)
        return response

    @app.get("/aura/test/stream")
    @document_querystring(StreamQuery)
    @document_response(EventStream, 200)
    @document_response(Failure, 429)
    @documented(400, 503, headers=StreamHeaders)
    async def stream_get() -> Response:
        """Open an event stream for `message`."""
        principal = state.authenticate()
        query = parse(StreamQuery, {"message": request.args.get("message")})
        return await open_stream(
            principal, StreamRequest(prompt=query.message, context=_with_headers({}))
        )

    @app.post("/aura/test/stream")
    @document_request(StreamBody)
    @document_response(EventStream, 200)
    @document_response(Failure, 429)
    @documented(400, 413, 503, headers=StreamHeaders)
    async def stream_post() -> Response:
        """Open an event stream for a prompt with its context."""
        principal = state.authenticate()
        body = parse(StreamBody, await read_json(required=True))
        return await open_stream(
            principal,
            StreamRequest(
                prompt=body.prompt,
                context=_with_headers(body.context or {}),
                thread_id=body.thread_id,
            ),
        )
