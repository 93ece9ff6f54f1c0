"""The HITL HTTP API (docs/contract.md#hitl-http-api): read, approve, reject."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio
from quart import Quart, Response, request
from quart_schema import document_querystring, document_request, document_response

from ..auth import Authenticator, Principal
from ..errors import ForbiddenError
from ..hitl import records as hitl
from ..hitl.store import Caller, HitlStore
from .envelope import envelope_success, json_response
from .models import (
    ApproveBody,
    DecisionResult,
    HitlRequestRecord,
    HitlSignalRecord,
    Page,
    PageQuery,
    RejectBody,
    Success,
    parse,
)
from .openapi import documented
from .requests import authenticated, check_path_id, read_json


async def apply_decision(
    store: HitlStore, principal: Principal, request_id: str, decision: hitl.Decision, body: Any
) -> dict[str, Any]:
    """Approve or reject for `principal`, over HTTP or a WebSocket; returns the answer's data.

    Raises (as the envelope, or a WebSocket `error`): 400 a bad id, body or edit, 403 a
    `userId` that is not the caller's, 404 not the caller's to see, 409 not pending.
    """
    check_path_id(request_id, "requestId")
    if decision == hitl.APPROVED:
        approve = parse(ApproveBody, body or {})
        user_id, reason, args = approve.userId, None, approve.args
    else:
        reject = parse(RejectBody, body or {})
        user_id, reason, args = reject.userId, reject.reason or hitl.DEFAULT_REJECT_REASON, None
    if user_id is not None and user_id != principal.user_id:
        raise ForbiddenError("userId does not match the token's subject")
    decided = await store.decide(request_id, _caller(principal), decision, reason=reason, args=args)
    data: dict[str, Any] = {
        "requestId": request_id,
        "sessionId": decided.session_id,
        "status": decision,
    }
    if reason is not None:
        data["reason"] = reason
    if decided.proposed_args is not None:
        data["args"] = decided.args
    return data


def register_hitl_routes(
    app: Quart,
    store: HitlStore,
    authenticator: Authenticator,
    *,
    audit_roles: tuple[str, ...],
    streamed_here: Callable[[str], bool],
) -> None:
    """`streamed_here(session_id)`: whether that session streams from this process."""
    auth = authenticated(authenticator)

    async def decide(principal: Principal, request_id: str, decision: hitl.Decision) -> Response:
        check_path_id(request_id, "requestId")  # before the body, as ever
        body = await read_json(required=False)
        data = await apply_decision(store, principal, request_id, decision, body)
        if streamed_here(data["sessionId"]):
            await _let_the_session_answer_first()
        return json_response(envelope_success(data, f"HITL request {decision}"))

    @app.post("/aura/hitl/approve/<request_id>")
    @document_request(ApproveBody)
    @document_response(Success[DecisionResult], 200)
    @documented(400, 404, 409, 413, 503)
    @auth
    async def approve(principal: Principal, request_id: str) -> Response:
        """Approve a pending request: it becomes `approved`, and its signal is published."""
        return await decide(principal, request_id, hitl.APPROVED)

    @app.post("/aura/hitl/reject/<request_id>")
    @document_request(RejectBody)
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
        found = await store.read_request(request_id, _caller(principal))
        return json_response(envelope_success(found.to_json(), "HITL request"))

    @app.get("/aura/hitl/pending")
    @document_querystring(PageQuery)
    @document_response(Success[Page], 200)
    @documented(400, 503)
    @auth
    async def pending(principal: Principal) -> Response:
        """The caller's tenant's pending requests, newest first (`limit`, `cursor`)."""
        query = parse(PageQuery, _page_args(default_limit=50))
        page = await store.pending(_caller(principal), limit=query.limit, cursor=query.cursor)
        data = {"items": page.items, "nextCursor": page.next_cursor}
        return json_response(envelope_success(data, "pending HITL requests"))

    @app.get("/aura/hitl/audit")
    @document_querystring(PageQuery)
    @document_response(Success[Page], 200)
    @documented(400, 503)
    @auth
    async def audit(principal: Principal) -> Response:
        """Every transition of the tenant's requests, oldest first; for audit roles."""
        if principal.role not in audit_roles:
            raise ForbiddenError("reading the audit log needs one of the audit roles")
        query = parse(PageQuery, _page_args(default_limit=100))
        page = await store.audit(_caller(principal), limit=query.limit, cursor=query.cursor)
        data = {"items": page.items, "nextCursor": page.next_cursor}
        return json_response(envelope_success(data, "HITL audit log"))

    @app.get("/aura/hitl/signals/<session_id>")
    @document_response(Success[HitlSignalRecord], 200)
    @documented(400, 404, 503)
    @auth
    async def get_signal(principal: Principal, session_id: str) -> Response:
        """The last stored signal of a session of the caller's tenant."""
        check_path_id(session_id, "sessionId")
        signal = await store.read_signal(session_id, _caller(principal))
        return json_response(envelope_success(signal, "HITL signal"))


async def _let_the_session_answer_first() -> None:
    """Two scheduler passes: one for the woken agent to queue its next event, one for
    its stream to write it. So whoever approves (a browser, the Gateway) finds the
    decision's effect already on the stream when the answer arrives. An agent that
    works before its next event, or a stream client that reads slowly, does not hold
    the answer: it waits these two passes, never longer."""
    await trio.lowlevel.checkpoint()
    await trio.lowlevel.checkpoint()


def _page_args(*, default_limit: int) -> dict[str, object]:
    raw_limit = request.args.get("limit")
    limit: object = default_limit
    if raw_limit is not None:
        limit = int(raw_limit) if raw_limit.isascii() and raw_limit.isdigit() else raw_limit
    return {"limit": limit, "cursor": request.args.get("cursor")}


def _caller(principal: Principal) -> Caller:
    return Caller(principal.tenant_id, principal.user_id)
