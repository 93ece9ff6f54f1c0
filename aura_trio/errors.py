"""The errors the API answers with; `api.envelope` renders them."""

from __future__ import annotations


class ApiError(Exception):
    """Base of every error answered as the contract's error envelope."""

    status_code = 500
    error_code = "INTERNAL_ERROR"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class AuthError(ApiError):
    """The bearer token is missing, malformed, expired or badly signed (401)."""

    status_code = 401
    error_code = "UNAUTHORIZED"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


class ForbiddenError(ApiError):
    """An identity header contradicts the token (403)."""

    status_code = 403
    error_code = "FORBIDDEN"


class ValidationError(ApiError):
    """The request is malformed: a missing prompt, a bad id, a non-JSON body (400)."""

    status_code = 400
    error_code = "VALIDATION_ERROR"


class NotFoundError(ApiError):
    """Nothing the caller may see exists under that id (404)."""

    status_code = 404
    error_code = "HITL_NOT_FOUND"


class ConflictError(ApiError):
    """The HITL request is no longer pending (409)."""

    status_code = 409
    error_code = "HITL_NOT_PENDING"


class HeadersTooLargeError(ApiError):
    """The request's headers add up to more than the limit (431)."""

    status_code = 431
    error_code = "HEADERS_TOO_LARGE"


class TooManyStreamsError(ApiError):
    """The user already holds the maximum number of open streams (429)."""

    status_code = 429
    error_code = "TOO_MANY_STREAMS"


class UnavailableError(ApiError):
    """The process is full, draining, or cannot reach Redis (503)."""

    status_code = 503
    error_code = "SERVICE_UNAVAILABLE"


class StoreUnavailable(Exception):
    """Redis could not be reached or answered an error; raised by the bus."""
