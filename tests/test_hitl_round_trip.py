"""The approval round trip (docs/contract.md#the-hitl-round-trip) against a real Redis, signals from a raw client.

In-process servers on the session's Redis; each test is bounded by conftest's default 60 s.
"""

from __future__ import annotations

import json
import time

import trio

from .helpers import auth, events_of, eventually, java_signal, rest_of, stored_request, until_hitl


def _approval(request_id: str) -> dict:
    return {
        "type": "approval",
        "requestId": request_id,
        "status": "approved",
        "timestamp": int(time.time()),
    }


async def test_approve_through_our_endpoint_resumes_the_stream(aura, raw_redis):
    async with aura.stream("please merge PR 42") as stream:
        frames = await stream.events_until("hitl")
        assert events_of(frames)[-2:] == ["tool_execution", "hitl"]
        pending = frames[-2].json()["data"]
        assert pending["status"] == "pending" and pending["requiresApproval"] is True
        hitl = frames[-1].json()["data"]
        assert hitl["actionType"] == "git_merge" and hitl["requiresApproval"] is True
        assert hitl["sessionId"] == stream.headers["x-aura-session-id"]
        assert hitl["expiresAt"] > time.time()

        stored = stored_request(raw_redis, hitl["requestId"])
        assert (
            stored["status"] == "pending"
            and stored["tenantId"] == "t1"
            and stored["userId"] == "alice"
        )
        assert 0 < raw_redis.ttl(f"hitl:request:{hitl['requestId']}") <= 1800
        session = json.loads(raw_redis.get(f"hitl:session:{hitl['sessionId']}"))
        assert session == {
            "sessionId": hitl["sessionId"],
            "requestId": hitl["requestId"],
            "userId": "alice",
            "tenantId": "t1",
        }

        response = await aura.approve(hitl["requestId"])
        assert response.status == 200
        body = response.json()
        assert body["status"] == "SUCCESS" and body["success"] is True
        assert body["data"] == {
            "requestId": hitl["requestId"],
            "sessionId": hitl["sessionId"],
            "status": "approved",
        }
        frames = await rest_of(stream)
    kinds = events_of(frames)
    assert kinds[0] == "tool_execution" and kinds[-1] == "end"
    assert frames[0].json()["data"]["status"] == "success"
    assert frames[-2].json()["status"] == "completed"
    assert stored_request(raw_redis, hitl["requestId"])["status"] == "approved"
    signal = json.loads(raw_redis.get(f"hitl:signal:{hitl['sessionId']}"))
    assert signal["type"] == "approval" and signal["requestId"] == hitl["requestId"]
    assert 0 < raw_redis.ttl(f"hitl:signal:{hitl['sessionId']}") <= 300


async def test_java_style_signal_resumes_the_stream(aura, raw_redis):
    async with aura.stream("merge this") as stream:
        hitl = await until_hitl(stream)
        java_signal(raw_redis, hitl["sessionId"], _approval(hitl["requestId"]))
        frames = await rest_of(stream)
    assert events_of(frames)[-1] == "end" and frames[-2].json()["status"] == "completed"
    # The session settled the request the Java side left pending: a second decision is refused.
    assert stored_request(raw_redis, hitl["requestId"])["status"] == "approved"
    assert (await aura.approve(hitl["requestId"])).status == 409


async def test_a_java_style_signal_is_parsed_once_per_delivery(aura, raw_redis, monkeypatch):
    """A signal this process did not announce is parsed as it is delivered (to see
    it needs settling in Redis) and that parse goes with it to the session's
    waiter, which does not parse it again."""
    from aura_trio.bus import topics
    from aura_trio.hitl import records

    parsed: list[bytes] = []
    delivered: list[bytes] = []
    parse, deliver = records.parse_signal, topics.Subscription.deliver

    def counted_parse(payload: bytes | str) -> records.Signal | None:
        parsed.append(payload if isinstance(payload, bytes) else payload.encode())
        return parse(payload)

    def counted_deliver(self: topics.Subscription, payload: bytes, **kwargs: bool) -> None:
        delivered.append(payload)
        deliver(self, payload, **kwargs)

    monkeypatch.setattr(records, "parse_signal", counted_parse)
    monkeypatch.setattr(topics.Subscription, "deliver", counted_deliver)
    async with aura.stream("merge this") as stream:
        hitl = await until_hitl(stream)
        java_signal(raw_redis, hitl["sessionId"], _approval(hitl["requestId"]))
        frames = await rest_of(stream)
    assert events_of(frames)[-1] == "end"
    ours = hitl["requestId"].encode()
    assert [p for p in delivered if ours in p], "the signal was never delivered"
    assert [p for p in parsed if ours in p] == [p for p in delivered if ours in p]


async def test_java_style_rejection_ends_with_its_reason(aura, raw_redis):
    async with aura.stream("deploy to prod") as stream:
        hitl = await until_hitl(stream)
        assert hitl["actionType"] == "deploy"
        java_signal(raw_redis, hitl["sessionId"], {
            "type": "rejection", "requestId": hitl["requestId"], "status": "rejected",
            "reason": "사용자 거절", "timestamp": int(time.time()), "userId": "boss",
        })  # fmt: skip
        frames = await rest_of(stream)
    assert events_of(frames) == ["error"]
    assert frames[0].json()["errorType"] == "RejectionError"
    assert frames[0].json()["error"] == "사용자 거절"
    assert stored_request(raw_redis, hitl["requestId"])["status"] == "rejected"


async def test_reject_without_reason_uses_the_default(aura, raw_redis):
    async with aura.stream("merge") as stream:
        hitl = await until_hitl(stream)
        response = await aura.reject(hitl["requestId"])
        assert response.json()["data"]["reason"] == "사용자 거절"
        frames = await rest_of(stream)
    assert frames[0].json()["error"] == "사용자 거절"
    signal = json.loads(raw_redis.get(f"hitl:signal:{hitl['sessionId']}"))
    assert signal["type"] == "rejection" and signal["reason"] == "사용자 거절"


async def test_stale_and_malformed_signals_are_ignored(aura, raw_redis):
    async with aura.stream("merge") as stream:
        hitl = await until_hitl(stream)
        session_id, request_id = hitl["sessionId"], hitl["requestId"]
        for junk in (
            _approval("req_" + "0" * 32),  # another request's decision
            b"not json at all",
            b"\xff\xfe\x00garbage",
            b"[1, 2, 3]",
            json.dumps(
                {"type": "approval", "requestId": request_id, "status": "rejected"}
            ).encode(),
            json.dumps({"type": "approval", "requestId": request_id}).encode(),
            json.dumps({"type": "approval", "requestId": 42, "status": "approved"}).encode(),
        ):
            java_signal(raw_redis, session_id, junk)
        with trio.move_on_after(0.5):
            frame = await stream.__anext__()
            raise AssertionError(f"a junk signal moved the session: {frame.raw!r}")
        assert stored_request(raw_redis, request_id)["status"] == "pending"
        java_signal(raw_redis, session_id, _approval(request_id))
        frames = await rest_of(stream)
    assert events_of(frames)[-1] == "end"


async def test_signal_stored_without_publish_is_found_by_the_poll(start_server, raw_redis):
    aura = await start_server(signal_poll_seconds=0.2)
    async with aura.stream("merge") as stream:
        hitl = await until_hitl(stream)
        java_signal(raw_redis, hitl["sessionId"], _approval(hitl["requestId"]), publish=False)
        with trio.fail_after(3):
            frames = await rest_of(stream)
    assert events_of(frames)[-1] == "end"


async def test_signal_stored_while_subscriber_was_down_is_recovered_on_resubscribe(aura, raw_redis):
    bus = aura.state.bus
    async with aura.stream("merge") as stream:
        hitl = await until_hitl(stream)
        subscriptions = bus.subscribed_count
        # Stored but never delivered: the PUBLISH went to nobody while we were away.
        java_signal(raw_redis, hitl["sessionId"], _approval(hitl["requestId"]), publish=False)
        raw_redis.client_kill_filter(_type="pubsub")
        with trio.fail_after(5):
            frames = await rest_of(stream)
    assert bus.subscribed_count > subscriptions
    assert events_of(frames)[-1] == "end"


async def test_second_decision_is_409_and_first_stands(aura, raw_redis):
    async with aura.stream("merge") as stream:
        hitl = await until_hitl(stream)
        assert (await aura.approve(hitl["requestId"])).status == 200
        second = await aura.reject(hitl["requestId"])
        assert second.status == 409
        assert (
            second.json()["status"] == "ERROR" and second.json()["errorCode"] == "HITL_NOT_PENDING"
        )
        frames = await rest_of(stream)
    assert events_of(frames)[-1] == "end"
    assert stored_request(raw_redis, hitl["requestId"])["status"] == "approved"


async def test_concurrent_decisions_one_wins(aura, raw_redis):
    async with aura.stream("merge") as stream:
        hitl = await until_hitl(stream)
        statuses = []

        async def decide(kind):
            call = aura.approve if kind == "approve" else aura.reject
            statuses.append(((await call(hitl["requestId"])).status, kind))

        async with trio.open_nursery() as nursery:
            for kind in ("approve", "approve", "reject", "approve", "reject"):
                nursery.start_soon(decide, kind)
        winners = [kind for status, kind in statuses if status == 200]
        assert len(winners) == 1
        assert sorted(s for s, _ in statuses) == [200, 409, 409, 409, 409]
        frames = await rest_of(stream)
    expected = "approved" if winners[0] == "approve" else "rejected"
    assert stored_request(raw_redis, hitl["requestId"])["status"] == expected
    assert events_of(frames)[-1] == ("end" if expected == "approved" else "error")


async def test_other_tenant_gets_404_on_read_and_decide(aura, raw_redis):
    async with aura.stream("merge") as stream:
        hitl = await until_hitl(stream)
        intruder = auth("mallory", "t2")
        request_path = f"/aura/hitl/requests/{hitl['requestId']}"
        for response in (
            await aura.request("GET", request_path, headers=intruder),
            await aura.approve(hitl["requestId"], headers=intruder),
            await aura.reject(hitl["requestId"], headers=intruder),
            await aura.request("GET", f"/aura/hitl/signals/{hitl['sessionId']}", headers=intruder),
        ):
            assert response.status == 404
            assert response.json()["errorCode"] == "HITL_NOT_FOUND"
        missing = await aura.request("GET", "/aura/hitl/requests/req_doesnotexist")
        assert (
            missing.status == 404
            and missing.json()["message"]
            == (await aura.request("GET", request_path, headers=intruder)).json()["message"]
        )
        assert stored_request(raw_redis, hitl["requestId"])["status"] == "pending"

        own = await aura.request("GET", request_path)
        assert own.status == 200 and own.json()["data"]["requestId"] == hitl["requestId"]
        assert (await aura.approve(hitl["requestId"])).status == 200
        signal = await aura.request("GET", f"/aura/hitl/signals/{hitl['sessionId']}")
        assert signal.status == 200 and signal.json()["data"]["status"] == "approved"
        await rest_of(stream)


async def test_bad_ids_are_400(aura):
    for target in (
        "/aura/hitl/requests/bad.id",
        "/aura/hitl/requests/" + "a" * 129,
        "/aura/hitl/signals/sess%20x",
    ):
        response = await aura.request("GET", target)
        assert response.status == 400, target
        assert response.json()["errorCode"] == "VALIDATION_ERROR"
    assert (await aura.approve("bad$id")).status == 400
    assert (await aura.reject("bad$id")).status == 400


async def test_two_sensitive_actions_ask_twice_in_order(aura):
    async with aura.stream("배포 then merge and 메일") as stream:
        seen = []
        for _ in range(3):
            hitl = await until_hitl(stream)
            seen.append(hitl["actionType"])
            assert (await aura.approve(hitl["requestId"])).status == 200
        frames = await rest_of(stream)
    assert seen == ["git_merge", "send_email", "deploy"]
    assert events_of(frames)[-1] == "end"


async def test_previous_requests_signal_does_not_decide_the_next(aura, raw_redis):
    async with aura.stream("merge and deploy") as stream:
        first = await until_hitl(stream)
        assert (await aura.approve(first["requestId"])).status == 200
        second = await until_hitl(stream)
        # Replay the first decision, as published and as stored: it must not count.
        java_signal(raw_redis, first["sessionId"], _approval(first["requestId"]))
        with trio.move_on_after(0.4):
            frame = await stream.__anext__()
            raise AssertionError(f"a replayed decision moved the session: {frame.raw!r}")
        assert stored_request(raw_redis, second["requestId"])["status"] == "pending"
        assert (await aura.approve(second["requestId"])).status == 200
        frames = await rest_of(stream)
    assert events_of(frames)[-1] == "end"


async def test_decision_after_timeout_is_409(start_server, raw_redis):
    aura = await start_server(hitl_timeout_seconds=0.3)
    async with aura.stream("merge") as stream:
        hitl = await until_hitl(stream)
        await rest_of(stream)
    await eventually(lambda: stored_request(raw_redis, hitl["requestId"])["status"] == "timeout")
    assert (await aura.approve(hitl["requestId"])).status == 409


async def test_redis_connections_do_not_grow_with_sessions(aura, raw_redis):
    def connections() -> int:
        return len(raw_redis.client_list()) - 1  # minus this test's own client

    idle = connections()
    async with trio.open_nursery() as nursery:
        waiting: list[tuple] = []

        async def one(user: str) -> None:
            async with aura.stream("merge", headers=auth(user)) as stream:
                hitl = await until_hitl(stream)
                waiting.append((user, hitl["requestId"]))
                frames = await rest_of(stream)
                assert events_of(frames)[-1] == "end"

        for n in range(60):
            nursery.start_soon(one, f"user{n}")
        await eventually(lambda: len(waiting) == 60, within=20)
        assert aura.state.bus.subscription_count == 60
        busy = connections()
        assert busy <= 16 + 1, busy
        for user, request_id in waiting:
            nursery.start_soon(aura.approve, request_id, auth(user))
    assert connections() <= max(idle, 17)
    assert aura.state.bus.subscription_count == 0


async def test_an_approval_costs_two_redis_commands_and_is_applied_once(aura):
    """Approve = one read and one compare-and-set (which also stores and publishes the
    signal). The session gets the decision once: its published copy, coming back
    from Redis before or after the local one, is not read from Redis again."""
    stats = aura.state.bus.commands.stats
    for n in range(9):  # the first one loads the script into Redis's cache (EVAL)
        async with aura.stream("merge it") as stream:
            hitl = await until_hitl(stream)
            before = stats.commands
            assert (await aura.approve(hitl["requestId"])).status == 200
            frames = await rest_of(stream)
            await trio.sleep(0.02)  # the published copy, if it comes second
            assert n == 0 or stats.commands - before == 2
        kinds = events_of(frames)
        assert kinds.count("tool_execution") == 1 and kinds[-1] == "end"
