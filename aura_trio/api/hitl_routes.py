"""The HITL HTTP API (docs/contract.md#hitl-http-api): read, approve, reject."""

from __future__ import annotations

from typing import Any

from quart import Quart, Response
from quart_schema import document_request, document_response

from ..auth import Authenticator, Principal
from ..errors import ForbiddenError
from ..hitl import records as hitl
from ..hitl.store import HitlStore
from .envelope import envelope_success, json_response
from .models import (
    DecisionBody,
    DecisionResult,
    HitlRequestRecord,
    HitlSignalRecord,
    Success,
    parse,
)
from .openapi import documented
from .requests import authenticated, check_path_id, read_json


async def apply_decision(
    store: HitlStore, principal: Principal, request_id: str, decision: hitl.Decision, body: Any
) -> dict[str, Any]:
    """Approve or reject for `principal`, over HTTP or a WebSocket; returns the answer's data.

    Raises (as the envelope, or a WebSocket `error`): 400 a bad id or body, 403 a
    `userId` that is not the caller's, 404 not the caller's tenant's, 409 not pending.
    """
    check_path_id(request_id, "requestId")
    parsed = parse(DecisionBody, body or {})
    if parsed.userId is not None and parsed.userId != principal.user_id:
        raise ForbiddenError("userId does not match the token's subject")
    reason = (parsed.reason or hitl.DEFAULT_REJECT_REASON) if decision == hitl.REJECTED else None
    decided = await store.decide(
        request_id, principal.tenant_id, decision, user_id=principal.user_id, reason=reason
    )
    data = {"requestId": request_id, "sessionId": decided.session_id, "status": decision}
    if reason is not None:
        data["reason"] = reason
    return data


def register_hitl_routes(app: Quart, store: HitlStore, authenticator: Authenticator) -> None:
    auth = authenticated(authenticator)

    async def decide(principal: Principal, request_id: str, decision: hitl.Decision) -> Response:
        check_path_id(request_id, "requestId")  # before the body, as ever
        body = await read_json(required=False)
        data = await apply_decision(store, principal, request_id, decision, body)
        return json_response(envelope_success(data, f"HITL request {decision}"))

    @app.post("/aura/hitl/approve/<request_id>")
    @document_request(DecisionBody)
    @document_response(Success[DecisionResult], 200)
    @documented(400, 404, 409, 413, 503)
    @auth
    async def approve(principal: Principal, request_id: str) -> Response:
        """Approve a pending request: it becomes `approved`, and its signal is published."""
        return await decide(principal, request_id, hitl.APPROVED)

    @app.post("/aura/hitl/reject/<request_id>")
    @document_request(DecisionBody)
    @document_response(Success[DecisionResult], 200)
    @documented(400, 404, 409, 413, 503)
    @auth
    async def reject(principal: Principal, request_id: str) -> Response:
        """Reject a pending request: it becomes `rejected`, and its signal is published."""
        return await decide(principal, request_id, hitl.REJECTED)

    @app.get("/aura/hitl/requests/<request_id>")
    @document_response(Success[HitlRequestRecord], 200)
    @documented(400, 404, 503)
    @auth
    async def get_request(principal: Principal, request_id: str) -> Response:
        """A stored request of the caller's tenant."""
        check_path_id(request_id, "requestId")
        found = await store.read_request(request_id, principal.tenant_id)
        return json_response(envelope_success(found.to_json(), "HITL request"))

    @app.get("/aura/hitl/signals/<session_id>")
    @document_response(Success[HitlSignalRecord], 200)
    @documented(400, 404, 503)
    @auth
    async def get_signal(principal: Principal, session_id: str) -> Response:
        """The last stored signal of a session of the caller's tenant."""
        check_path_id(session_id, "sessionId")
        signal = await store.read_signal(session_id, principal.tenant_id)
        return json_response(envelope_success(signal, "HITL signal"))
