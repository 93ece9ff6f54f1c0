"""Reading a request: who is calling, its JSON body, its headers and path ids."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any, Concatenate, ParamSpec, TypeVar

from quart import request

from ..auth import Authenticator, Principal
from ..errors import ValidationError
from ..ids import PATH_ID

P = ParamSpec("P")
R = TypeVar("R")

_CONTEXT_HEADERS = (("X-DWP-Source", "source"), ("X-DWP-Caller-Type", "caller_type"))

Handler = Callable[Concatenate[Principal, P], Awaitable[R]]


def authenticated(
    authenticator: Authenticator,
) -> Callable[[Handler[P, R]], Callable[P, Awaitable[R]]]:
    """A route decorator: the handler gets the caller's :class:`Principal` first.

    Raises (to the client, as the envelope): 401 without a valid bearer token, 403
    when an identity header contradicts it.
    """

    def decorate(handler: Handler[P, R]) -> Callable[P, Awaitable[R]]:
        @wraps(handler)
        async def with_principal(*args: P.args, **kwargs: P.kwargs) -> R:
            return await handler(authenticator(request.headers), *args, **kwargs)

        return with_principal

    return decorate


async def read_json(*, required: bool) -> Any:
    """The request body as JSON (whatever its Content-Type); None for an empty body.

    Raises:
        ValidationError: the body is not UTF-8 JSON, or is missing when `required`.
    """
    # No body announced (an approve without one): no need to wait on the body.
    raw = b"" if request.content_length == 0 else await request.get_data(as_text=False)
    if not raw.strip():
        if required:
            raise ValidationError("a JSON body is required")
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise ValidationError("the body is not valid JSON") from None


def with_context_headers(context: dict[str, Any], headers: Any) -> dict[str, Any]:
    """`context` plus `source` / `caller_type` from the `X-DWP-*` headers."""
    context = dict(context)
    for header, name in _CONTEXT_HEADERS:
        value = headers.get(header)
        if value is not None:
            context[name] = value
    return context


def check_path_id(value: str, what: str) -> str:
    """Return `value` when it is a valid path id, else raise :class:`ValidationError`."""
    if not PATH_ID.fullmatch(value):
        raise ValidationError(f"{what} must match {PATH_ID.pattern.strip('^$')}")
    return value
