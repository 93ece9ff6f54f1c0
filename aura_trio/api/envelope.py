"""The JSON envelope every API answer uses (docs/contract.md#the-json-envelope)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from quart import Response

from ..errors import ApiError
from ..sessions.sse import to_json

# The errorCode of the errors the HTTP layers answer before any view runs.
HTTP_ERROR_CODES = {
    400: "BAD_REQUEST",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    431: "HEADERS_TOO_LARGE",
}


def envelope_success(data: Any, message: str = "OK") -> dict[str, Any]:
    return {
        "status": "SUCCESS",
        "message": message,
        "data": data,
        "success": True,
        "timestamp": _now(),
    }


def envelope_error(message: str, error_code: str) -> dict[str, Any]:
    return {
        "status": "ERROR",
        "message": message,
        "errorCode": error_code,
        "data": None,
        "success": False,
        "timestamp": _now(),
    }


def error_body(error: ApiError) -> dict[str, Any]:
    return envelope_error(error.message, error.error_code)


def json_response(
    body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        to_json(body),
        status=status,
        headers=headers,
        content_type="application/json; charset=utf-8",
    )


def _now() -> str:
    # Java's LocalDateTime.now() as Jackson writes it: local time, no zone.
    return datetime.now().isoformat(timespec="seconds")
