"""Isolation between tenants, header limits, and secrets kept out of what clients see.

In-process servers on the session's Redis; each test is bounded by conftest's default 60 s.
"""

from __future__ import annotations

from .helpers import SECRET, auth, rest_of, stream_target, until_hitl

# What reading or deciding a request sends; the liveness sweep's background
# commands (SMEMBERS, EXISTS, SET, SADD) would otherwise blur the comparison.
REQUEST_PATH = {"cmdstat_get", "cmdstat_mget", "cmdstat_eval", "cmdstat_evalsha"}


def _command_calls(raw) -> dict[str, int]:
    stats = raw.info("commandstats")
    return {name: value["calls"] for name, value in stats.items() if name in REQUEST_PATH}


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


async def test_another_tenants_request_looks_exactly_like_a_missing_one(aura, raw_redis):
    """Same answer, and the same Redis work (so the same timing class), either way."""
    async with aura.stream("merge") as stream:
        hitl = await until_hitl(stream)
        intruder = auth("mallory", "t2")
        missing = "req_" + "0" * 32
        for method, template in (
            ("GET", "/aura/hitl/requests/{}"),
            ("POST", "/aura/hitl/approve/{}"),
            ("POST", "/aura/hitl/reject/{}"),
        ):
            seen = []
            for request_id in (hitl["requestId"], missing):
                before = _command_calls(raw_redis)
                response = await aura.request(method, template.format(request_id), headers=intruder)
                work = _delta(before, _command_calls(raw_redis))
                body = response.json()
                seen.append((response.status, body["errorCode"], body["message"], work))
            assert seen[0] == seen[1], (template, seen)
            assert seen[0][0] == 404
        assert (await aura.approve(hitl["requestId"])).status == 200
        await rest_of(stream)


async def test_headers_over_the_limit_get_431_in_the_envelope(aura):
    response = await aura.request("GET", "/health", headers={**auth(), "X-Big": "a" * 17000})
    assert response.status == 431
    assert response.json()["errorCode"] == "HEADERS_TOO_LARGE"
    assert (await aura.request("GET", "/health")).status == 200


async def test_no_token_or_secret_in_the_event_stream_or_errors(aura):
    headers = auth()
    bearer = headers["Authorization"].split()[1]
    async with aura.stream("merge", headers=headers) as stream:
        hitl = await until_hitl(stream)
        await aura.approve(hitl["requestId"], headers=headers)
        await rest_of(stream)
    wrong_tenant = await aura.request(
        "GET", stream_target("x"), headers={**headers, "X-Tenant-ID": "t9"}
    )
    for text in (stream.body, wrong_tenant.body):
        assert bearer.encode() not in text and SECRET.encode() not in text
