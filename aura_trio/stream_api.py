"""`GET|POST /aura/test/stream` (CONTRACT 3)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from quart import Quart, Response, request

from .agents import StreamRequest
from .errors import UnavailableError, ValidationError
from .registry import RETRY_AFTER_SECONDS
from .session import Session, SessionBody
from .sse import parse_last_event_id

if TYPE_CHECKING:
    from .state import AuraState


async def read_json_object(*, required: bool) -> dict[str, Any]:
    """The request body as a JSON object; `{}` for an empty body unless `required`.

    Raises:
        ValidationError: the body is not UTF-8 JSON holding an object.
    """
    raw = await request.get_data(as_text=False)
    if not raw.strip():
        if required:
            raise ValidationError("a JSON body is required")
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise ValidationError("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ValidationError("the body must be a JSON object")
    return body


def _stream_request(
    prompt: object, context: object, thread_id: object, max_chars: int
) -> StreamRequest:
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValidationError("prompt is required and must be a non-empty string")
    if len(prompt) > max_chars:
        raise ValidationError(f"prompt is longer than {max_chars} characters")
    if context is None:
        context = {}
    if not isinstance(context, dict):
        raise ValidationError("context must be a JSON object")
    if thread_id is not None and not isinstance(thread_id, str):
        raise ValidationError("thread_id must be a string")
    context = dict(context)
    for header, name in (("X-DWP-Source", "source"), ("X-DWP-Caller-Type", "caller_type")):
        value = request.headers.get(header)
        if value is not None:
            context[name] = value
    return StreamRequest(prompt=prompt, context=context, thread_id=thread_id)


def register_stream_routes(app: Quart, state: AuraState) -> None:
    settings = state.settings

    @app.route("/aura/test/stream", methods=["GET", "POST"])
    async def stream() -> Response:
        principal = state.authenticate()
        if request.method == "GET":
            message = request.args.get("message")
            stream_request = _stream_request(message, None, None, settings.max_prompt_chars)
        else:
            body = await read_json_object(required=True)
            stream_request = _stream_request(
                body.get("prompt"),
                body.get("context"),
                body.get("thread_id"),
                settings.max_prompt_chars,
            )
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
