"""JSON responses in the contract's envelope."""

from __future__ import annotations

from typing import Any

from quart import Response

from ..sessions.sse import to_json


def json_response(
    body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        to_json(body),
        status=status,
        headers=headers,
        content_type="application/json; charset=utf-8",
    )
