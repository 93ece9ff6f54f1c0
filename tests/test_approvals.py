"""Approvals people can act on: the pending inbox, the decision record, the audit
log and edited arguments, over real TCP and a real Redis.

Loopback only, servers on port 0, the session's redis-server; each async test is
bounded by conftest's default (60 s) unless it says otherwise.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from aura_trio import client
from aura_trio.errors import ValidationError
from aura_trio.hitl import records as hitl
from aura_trio.hitl.store import Caller, HitlStore

from .helpers import (
    HOST,
    auth,
    events_of,
    eventually,
    java_signal,
    rest_of,
    stored_request,
    stream_target,
    until_hitl,
)
from .processes import run_server


async def pending_of(aura, headers=None, **query) -> dict:
    target = "/aura/hitl/pending"
    if query:
        target += "?" + "&".join(f"{k}={v}" for k, v in query.items())
    response = await aura.request("GET", target, headers=headers)
    assert response.status == 200, response.body
    return response.json()["data"]


def pending_ids(data: dict) -> list[str]:
    return [item["requestId"] for item in data["items"]]


async def test_the_inbox_lists_a_waiting_request_with_what_a_person_needs(aura):
    async with aura.stream("please merge") as stream:
        asked = await until_hitl(stream)
        data = await pending_of(aura)
        assert pending_ids(data) == [asked["requestId"]]
        (item,) = data["items"]
        assert item["sessionId"] == asked["sessionId"]
        assert item["actionType"] == "git_merge"
        assert item["message"] == asked["message"] and item["context"] == asked["context"]
        assert item["args"] == {"requestedBy": "alice", "step": 1, "strategy": "merge"}
        assert item["userId"] == "alice"
        assert item["expiresAt"] == asked["expiresAt"] > item["createdAt"]
        assert data["nextCursor"] is None
        # Another tenant sees none of it; neither does a token in no tenant.
        assert (await pending_of(aura, headers=auth("mallory", "t2")))["items"] == []
        assert (await pending_of(aura, headers=auth("alice", None)))["items"] == []
        assert (await aura.approve(asked["requestId"])).status == 200
        await rest_of(stream)
    assert (await pending_of(aura))["items"] == []


async def test_the_inbox_never_lists_a_settled_request(start_server, raw_redis):
    aura = await start_server(hitl_timeout_seconds=1.0)
    settled: list[str] = []
    # Rejected through our API.
    async with aura.stream("merge") as stream:
        asked = await until_hitl(stream)
        assert (await aura.reject(asked["requestId"], reason="no")).status == 200
        await rest_of(stream)
        settled.append(asked["requestId"])
    # Decided by the Java side (PUBLISH, then SET ... EX 300).
    async with aura.stream("merge") as stream:
        asked = await until_hitl(stream)
        approval = {"type": "approval", "requestId": asked["requestId"], "status": "approved"}
        java_signal(raw_redis, asked["sessionId"], approval)
        await rest_of(stream)
        settled.append(asked["requestId"])
    # Timed out.
    async with aura.stream("merge") as stream:
        asked = await until_hitl(stream)
        assert events_of(await rest_of(stream))[-1] == "end"
        settled.append(asked["requestId"])
    # Its session went away.
    async with aura.stream("merge") as stream:
        asked = await until_hitl(stream)
    await eventually(lambda: stored_request(raw_redis, asked["requestId"])["status"] != "pending")
    settled.append(asked["requestId"])
    statuses = [stored_request(raw_redis, r)["status"] for r in settled]
    assert statuses == ["rejected", "approved", "timeout", "cancelled"]
    assert (await pending_of(aura))["items"] == []
    # Gone from the index itself, in the same step: not merely filtered out on reading.
    assert raw_redis.zcard("hitl:pending:tenant:t1") == 0


async def test_the_inbox_pages_newest_first_and_skips_what_expired(
    start_server, redis_server, raw_redis
):
    aura = await start_server()
    store = HitlStore(aura.state.bus, request_ttl=600, session_ttl=600, signal_ttl=60)
    now = int(time.time())

    def request(n: int, expires_at: int, tenant: str = "t1") -> hitl.HitlRequest:
        return hitl.HitlRequest(
            request_id=f"req_{n:03d}", session_id=f"sess_{n:03d}", action_type="deploy",
            message="m", context={}, status="pending", user_id="alice", tenant_id=tenant,
            created_at=expires_at - 300, expires_at=expires_at,
        )  # fmt: skip

    for n in range(7):
        await store.open_request(request(n, now + 100 + n))
    await store.open_request(request(90, now - 5))  # already past its expiry
    await store.open_request(request(91, now + 500, tenant="t2"))
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        query = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        data = await pending_of(aura, **query)
        seen += pending_ids(data)
        pages += 1
        cursor = data["nextCursor"]
        if cursor is None:
            break
    assert seen == [f"req_{n:03d}" for n in range(6, -1, -1)]
    assert pages == 3
    bad = await aura.request("GET", "/aura/hitl/pending?limit=0")
    assert bad.status == 400 and bad.json()["errorCode"] == "VALIDATION_ERROR"


async def test_a_page_of_the_inbox_costs_the_same_with_ten_thousand_pending(
    start_server, raw_redis
):
    aura = await start_server()
    expires = int(time.time()) + 3600
    pipe = raw_redis.pipeline(transaction=False)
    for n in range(10_000):
        record = {
            "requestId": f"req_{n:05d}", "sessionId": f"sess_{n:05d}", "actionType": "deploy",
            "message": "m", "context": {}, "status": "pending", "userId": "alice",
            "tenantId": "t1", "createdAt": expires - 300, "expiresAt": expires,
        }  # fmt: skip
        pipe.set(f"hitl:request:req_{n:05d}", json.dumps(record), ex=3600)
        pipe.zadd("hitl:pending:tenant:t1", {f"{expires:012d}:req_{n:05d}": 0})
    pipe.execute()
    raw_redis.config_resetstat()
    data = await pending_of(aura, limit=50)
    assert len(data["items"]) == 50 and data["nextCursor"]
    stats = raw_redis.info("commandstats")
    # One range read of the index and one MGET of the page: nothing scans the tenant.
    assert stats["cmdstat_zrevrangebylex"]["calls"] == 1
    assert stats["cmdstat_mget"]["calls"] == 1
    assert not any(name in stats for name in ("cmdstat_zrange", "cmdstat_keys", "cmdstat_scan"))


async def test_the_decision_record_says_who_how_and_when(start_server, raw_redis):
    aura = await start_server(hitl_timeout_seconds=1.0)
    async with aura.stream("merge") as stream:
        asked = await until_hitl(stream)
        assert (
            await aura.reject(asked["requestId"], reason="not now", headers=auth("bob"))
        ).status == 200
        await rest_of(stream)
    record = (await aura.request("GET", f"/aura/hitl/requests/{asked['requestId']}")).json()["data"]
    assert record["status"] == "rejected" and record["decidedBy"] == "bob"
    assert record["via"] == "api" and record["reason"] == "not now"
    assert abs(record["decidedAt"] - time.time()) < 30
    # The Java side's approver, when its signal names one.
    async with aura.stream("merge") as stream:
        asked = await until_hitl(stream)
        approval = {
            "type": "approval", "requestId": asked["requestId"], "status": "approved",
            "userId": "java-approver",
        }  # fmt: skip
        java_signal(raw_redis, asked["sessionId"], approval)
        await rest_of(stream)
    record = stored_request(raw_redis, asked["requestId"])
    assert (record["decidedBy"], record["via"]) == ("java-approver", "signal")
    # A timeout and a session that went away.
    async with aura.stream("merge") as stream:
        asked = await until_hitl(stream)
        await rest_of(stream)
    record = stored_request(raw_redis, asked["requestId"])
    assert (record["status"], record["via"], record["decidedBy"]) == ("timeout", "timeout", None)
    async with aura.stream("merge") as stream:
        asked = await until_hitl(stream)
    await eventually(lambda: stored_request(raw_redis, asked["requestId"])["status"] != "pending")
    record = stored_request(raw_redis, asked["requestId"])
    assert (record["status"], record["via"]) == ("cancelled", "disconnect")
    # Every field the Java side reads is still there, as it was.
    for name in ("requestId", "sessionId", "actionType", "message", "context", "status",
                 "userId", "tenantId", "createdAt", "expiresAt"):  # fmt: skip
        assert name in record


async def test_requests_of_a_killed_worker_leave_the_inbox_as_worker_lost(
    tmp_path, start_server, redis_server, raw_redis
):
    env = {"REDIS_URL": redis_server.url, "AURA_WORKER_TTL_SECONDS": "1"}
    async with run_server(tmp_path, env=env) as doomed:
        async with client.open_sse(
            HOST, doomed.port, stream_target("merge"), headers=auth()
        ) as stream:
            asked = await until_hitl(stream)
            os.kill(doomed.process.pid, signal.SIGKILL)
    sweeper = await start_server(worker_ttl_seconds=1)
    await eventually(
        lambda: stored_request(raw_redis, asked["requestId"])["status"] == "cancelled", within=10
    )
    assert stored_request(raw_redis, asked["requestId"])["via"] == "worker_lost"
    assert (await pending_of(sweeper))["items"] == []
    assert raw_redis.zcard("hitl:pending:tenant:t1") == 0


async def test_the_audit_log_has_every_transition_for_audit_roles_only(aura):
    admin = auth("root", "t1", role="ADMIN")
    async with aura.stream("merge and deploy") as stream:
        first = await until_hitl(stream)
        assert (await aura.approve(first["requestId"], headers=auth("bob"))).status == 200
        second = await until_hitl(stream)
        assert (await aura.reject(second["requestId"], reason="later")).status == 200
        await rest_of(stream)
    forbidden = await aura.request("GET", "/aura/hitl/audit", headers=auth("bob", role="USER"))
    assert forbidden.status == 403 and forbidden.json()["errorCode"] == "FORBIDDEN"
    items: list[dict] = []
    cursor = None
    while True:
        target = "/aura/hitl/audit?limit=2" + (f"&cursor={cursor}" if cursor else "")
        response = await aura.request("GET", target, headers=admin)
        assert response.status == 200
        data = response.json()["data"]
        items += data["items"]
        cursor = data["nextCursor"]
        if cursor is None:
            break
    moves = [(i["requestId"], i["from"], i["to"], i["by"], i["via"]) for i in items]
    assert moves == [
        (first["requestId"], None, "pending", "alice", "session"),
        (first["requestId"], "pending", "approved", "bob", "api"),
        (second["requestId"], None, "pending", "alice", "session"),
        (second["requestId"], "pending", "rejected", "alice", "api"),
    ]
    assert items[-1]["reason"] == "later"
    other = await aura.request("GET", "/aura/hitl/audit", headers=auth("root", "t2", role="ADMIN"))
    assert other.json()["data"]["items"] == []


async def test_approving_edited_arguments_runs_the_tool_with_them(aura, raw_redis):
    async with aura.stream("deploy it") as stream:
        asked = await until_hitl(stream)
        edited = {"requestedBy": "alice", "step": 1, "environment": "production"}
        response = await aura.request(
            "POST", f"/aura/hitl/approve/{asked['requestId']}", body={"args": edited}
        )
        assert response.status == 200 and response.json()["data"]["args"] == edited
        frames = await rest_of(stream)
    ran = [f.json()["data"] for f in frames if f.event == "tool_execution"]
    assert ran[0]["toolName"] == "deploy" and ran[0]["status"] == "success"
    assert ran[0]["toolArgs"] == edited
    record = stored_request(raw_redis, asked["requestId"])
    assert record["args"] == edited
    assert record["proposedArgs"] == {"requestedBy": "alice", "step": 1, "environment": "staging"}


@pytest.mark.parametrize(
    "edited",
    [
        {"requestedBy": "alice", "step": 1, "environment": "the-moon"},
        {"requestedBy": "mallory", "step": 1, "environment": "staging"},
        {"requestedBy": "alice", "step": 1, "environment": "staging", "sudo": True},
    ],
)
async def test_an_edit_outside_what_the_agent_allows_is_400_and_decides_nothing(
    aura, raw_redis, edited
):
    async with aura.stream("deploy") as stream:
        asked = await until_hitl(stream)
        response = await aura.request(
            "POST", f"/aura/hitl/approve/{asked['requestId']}", body={"args": edited}
        )
        assert response.status == 400 and response.json()["errorCode"] == "VALIDATION_ERROR"
        assert stored_request(raw_redis, asked["requestId"])["status"] == "pending"
        assert (await aura.approve(asked["requestId"])).status == 200
        frames = await rest_of(stream)
    ran = [f.json()["data"] for f in frames if f.event == "tool_execution"]
    assert ran[0]["toolArgs"]["environment"] == "staging"


async def test_a_java_approval_without_args_approves_the_proposed_ones(aura, raw_redis):
    async with aura.stream("send an email") as stream:
        asked = await until_hitl(stream)
        approval = {"type": "approval", "requestId": asked["requestId"], "status": "approved"}
        java_signal(raw_redis, asked["sessionId"], approval)
        frames = await rest_of(stream)
    ran = [f.json()["data"] for f in frames if f.event == "tool_execution"]
    assert ran[0]["toolArgs"] == {
        "requestedBy": "alice", "step": 1, "recipients": ["team@example.com"]
    }  # fmt: skip


async def test_the_store_refuses_edits_of_an_action_declared_not_editable(aura):
    store = HitlStore(aura.state.bus, request_ttl=600, session_ttl=600, signal_ttl=60)
    fixed = hitl.HitlRequest(
        request_id="req_fixed", session_id="sess_fixed", action_type="x", message="m",
        context={}, status="pending", user_id="alice", tenant_id="t1",
        created_at=1, expires_at=4_000_000_000, args={"a": 1},
    )  # fmt: skip
    await store.open_request(fixed)
    with pytest.raises(ValidationError):
        await store.decide("req_fixed", Caller("t1", "bob"), "approved", args={"a": 2})
    assert (await store.read_request("req_fixed", Caller("t1", "bob"))).status == "pending"
