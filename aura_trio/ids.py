"""Session and request ids (CONTRACT 4.1)."""

from __future__ import annotations

import re
import secrets

from .errors import ValidationError

_PATH_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


def new_session_id() -> str:
    return "sess_" + secrets.token_hex(16)


def new_request_id() -> str:
    return "req_" + secrets.token_hex(16)


def check_path_id(value: str, what: str) -> str:
    """Return `value` when it is a valid path id, else raise :class:`ValidationError`."""
    if not _PATH_ID.fullmatch(value):
        raise ValidationError(f"{what} must match [A-Za-z0-9_-]{{1,128}}")
    return value
