"""The HITL HTTP API (CONTRACT 6): read requests and signals, approve, reject."""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import Quart, Response
from quart_schema import document_request, document_response

from ..errors import ForbiddenError, envelope_success
from ..hitl import records as hitl
from ..ids import check_path_id
from .envelope import json_response
from .models import (
    DecisionBody,
    DecisionResult,
    HitlRequestRecord,
    HitlSignalRecord,
    Success,
    parse,
)
from .openapi import documented
from .stream_routes import read_json

if TYPE_CHECKING:
    from ..state import AuraState


def register_hitl_routes(app: Quart, state: AuraState) -> None:
    store = state.store

    async def decide(request_id: str, decision: hitl.Decision) -> Response:
        principal = state.authenticate()
        check_path_id(request_id, "requestId")
        body = parse(DecisionBody, await read_json(required=False) or {})
        if body.userId is not None and body.userId != principal.user_id:
            raise ForbiddenError("userId does not match the token's subject")
        reason = (body.reason or hitl.DEFAULT_REJECT_REASON) if decision == hitl.REJECTED else None
        record = await store.decide(
            request_id, principal.tenant_id, decision, user_id=principal.user_id, reason=reason
        )
        data = {"requestId": request_id, "sessionId": record["sessionId"], "status": decision}
        if reason is not None:
            data["reason"] = reason
        return json_response(envelope_success(data, f"HITL request {decision}"))

    @app.post("/aura/hitl/approve/<request_id>")
    @document_request(DecisionBody)
    @document_response(Success[DecisionResult], 200)
    @documented(400, 404, 409, 413, 503)
    async def approve(request_id: str) -> Response:
        """Approve a pending request: it becomes `approved`, and its signal is published."""
        return await decide(request_id, hitl.APPROVED)

    @app.post("/aura/hitl/reject/<request_id>")
    @document_request(DecisionBody)
    @document_response(Success[DecisionResult], 200)
    @documented(400, 404, 409, 413, 503)
    async def reject(request_id: str) -> Response:
        """Reject a pending request: it becomes `rejected`, and its signal is published."""
        return await decide(request_id, hitl.REJECTED)

    @app.get("/aura/hitl/requests/<request_id>")
    @document_response(Success[HitlRequestRecord], 200)
    @documented(400, 404, 503)
    async def get_request(request_id: str) -> Response:
        """A stored request of the caller's tenant."""
        principal = state.authenticate()
        check_path_id(request_id, "requestId")
        record = await store.read_request(request_id, principal.tenant_id)
        return json_response(envelope_success(record, "HITL request"))

    @app.get("/aura/hitl/signals/<session_id>")
    @document_response(Success[HitlSignalRecord], 200)
    @documented(400, 404, 503)
    async def get_signal(session_id: str) -> Response:
        """The last stored signal of a session of the caller's tenant."""
        principal = state.authenticate()
        check_path_id(session_id, "sessionId")
        signal = await store.read_signal(session_id, principal.tenant_id)
        return json_response(envelope_success(signal, "HITL signal"))
