"""The HITL HTTP API (CONTRACT 6): read requests and signals, approve, reject."""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import Quart, Response

from . import hitl
from .auth import Principal
from .errors import ForbiddenError, ValidationError, envelope_success
from .ids import check_path_id
from .responses import json_response
from .stream_api import read_json_object

if TYPE_CHECKING:
    from .state import AuraState

_MAX_REASON_CHARS = 2000


def _decider(principal: Principal, body: dict[str, object]) -> str:
    user_id = body.get("userId")
    if user_id is None:
        return principal.user_id
    if not isinstance(user_id, str):
        raise ValidationError("userId must be a string")
    if user_id != principal.user_id:
        raise ForbiddenError("userId does not match the token's subject")
    return user_id


def register_hitl_routes(app: Quart, state: AuraState) -> None:
    store = state.store

    async def decide(request_id: str, decision: hitl.Decision) -> Response:
        principal = state.authenticate()
        check_path_id(request_id, "requestId")
        body = await read_json_object(required=False)
        user_id = _decider(principal, body)
        reason = body.get("reason")
        if decision == hitl.REJECTED:
            if reason is None:
                reason = hitl.DEFAULT_REJECT_REASON
            if not isinstance(reason, str) or len(reason) > _MAX_REASON_CHARS:
                raise ValidationError(
                    f"reason must be a string of at most {_MAX_REASON_CHARS} characters"
                )
        record = await store.decide(
            request_id,
            principal.tenant_id,
            decision,
            user_id=user_id,
            reason=reason if isinstance(reason, str) else None,
        )
        data = {"requestId": request_id, "sessionId": record["sessionId"], "status": decision}
        if decision == hitl.REJECTED:
            data["reason"] = reason
        verb = "approved" if decision == hitl.APPROVED else "rejected"
        return json_response(envelope_success(data, f"HITL request {verb}"))

    @app.post("/aura/hitl/approve/<request_id>")
    async def approve(request_id: str) -> Response:
        return await decide(request_id, hitl.APPROVED)

    @app.post("/aura/hitl/reject/<request_id>")
    async def reject(request_id: str) -> Response:
        return await decide(request_id, hitl.REJECTED)

    @app.get("/aura/hitl/requests/<request_id>")
    async def get_request(request_id: str) -> Response:
        principal = state.authenticate()
        check_path_id(request_id, "requestId")
        record = await store.read_request(request_id, principal.tenant_id)
        return json_response(envelope_success(record, "HITL request"))

    @app.get("/aura/hitl/signals/<session_id>")
    async def get_signal(session_id: str) -> Response:
        principal = state.authenticate()
        check_path_id(session_id, "sessionId")
        signal = await store.read_signal(session_id, principal.tenant_id)
        return json_response(envelope_success(signal, "HITL signal"))
