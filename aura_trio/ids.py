"""Session and request ids (docs/contract.md#redis-keys-and-ttls)."""

from __future__ import annotations

import re
import secrets

# What a path parameter naming a session or a request must look like.
PATH_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def new_session_id() -> str:
    return "sess_" + secrets.token_hex(16)


def new_request_id() -> str:
    return "req_" + secrets.token_hex(16)
