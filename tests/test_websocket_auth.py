"""The WebSocket upgrade (docs/websocket.md#upgrade-and-authentication): the token from
`Authorization` or from subprotocols, and every refusal, which comes before `accept`
as a plain HTTP answer in the envelope.

Rules: a real server on a loopback port the OS picked (port 0) and a real Redis,
reached over TCP (trio-websocket, or wsproto on a raw socket to see the bytes);
every test bounded by a `trio.fail_after` (conftest).
"""

from __future__ import annotations

import time

import jwt
import pytest

from bench.harness import pick_port as free_port

from .helpers import HOST, SECRET, auth, eventually, token, until_hitl
from .ws_helpers import close_code, envelope_of, events_of, header, raw_upgrade, refused
from .ws_helpers import until_hitl as ws_until_hitl


def browser(bearer: str, *, origin: str | None = None) -> dict[str, object]:
    """What a browser's `new WebSocket(url, ["aura.v1", "bearer." + jwt])` sends."""
    options: dict[str, object] = {"headers": {}, "subprotocols": ["aura.v1", f"bearer.{bearer}"]}
    if origin is not None:
        options["headers"] = {"Origin": origin}
    return options


async def test_a_bearer_header_opens_the_socket(aura):
    async with aura.ws() as ws:
        assert ws.ws.subprotocol is None
        await ws.start("hi")
        assert events_of(await ws.rest())[-1] == "end" and close_code(ws) == 1000


async def test_subprotocols_open_the_socket_and_only_aura_v1_is_selected(aura):
    bearer = token()
    async with aura.ws(**browser(bearer)) as ws:
        assert ws.ws.subprotocol == "aura.v1"
        await ws.start("merge please")
        hitl = await ws_until_hitl(ws)
        await ws.decide("approve", hitl["requestId"])
        assert events_of(await ws.rest())[-1] == "end"
    # On the wire: the upgrade answer names aura.v1 and never carries the token.
    raw = await raw_upgrade(aura.port, {}, subprotocols=["aura.v1", f"bearer.{bearer}"])
    head = raw.response_head.decode("latin-1")
    assert head.startswith("HTTP/1.1 101")
    assert "\r\nsec-websocket-protocol: aura.v1" in head.lower()
    assert bearer not in head and "bearer." not in head.lower()
    await raw.drop()


async def test_the_token_never_comes_from_the_query_string(aura):
    bearer = token()
    for target in (f"/aura/ws?access_token={bearer}", f"/aura/ws?token={bearer}"):
        rejection = await refused(aura.port, headers={}, target=target)
        assert rejection.status_code == 401
        assert envelope_of(rejection)["errorCode"] == "UNAUTHORIZED"


def _expired() -> str:
    now = int(time.time())
    claims = {"sub": "alice", "tenant_id": "t1", "iat": now - 600, "exp": now - 120}
    return jwt.encode(claims, SECRET, algorithm="HS256")


@pytest.mark.parametrize(
    ("case", "options"),
    [
        ("no token", {"headers": {}}),
        ("not bearer", {"headers": {"Authorization": "Basic abc"}}),
        ("bad signature", {"headers": {"Authorization": f"Bearer {token(secret='x' * 40)}"}}),
        ("expired header token", {"headers": {"Authorization": f"Bearer {_expired()}"}}),
        ("expired subprotocol token", browser(_expired())),
        (
            "bearer subprotocol without aura.v1",
            {"headers": {}, "subprotocols": [f"bearer.{token()}"]},
        ),
        ("garbage subprotocol token", browser("not-a-token")),
    ],
)
async def test_no_valid_token_is_401_before_accept(aura, case, options):
    rejection = await refused(aura.port, **options)
    assert rejection.status_code == 401, case
    body = envelope_of(rejection)
    assert (body["status"], body["success"], body["errorCode"]) == ("ERROR", False, "UNAUTHORIZED")
    assert header(rejection, "www-authenticate") == 'Bearer error="invalid_token"'
    assert header(rejection, "content-type") == "application/json; charset=utf-8"
    text = rejection.body.decode()
    assert SECRET not in text and "bearer." not in text
    for value in options.get("subprotocols", []):
        assert value.removeprefix("bearer.") not in text
    assert len(aura.state.registry) == 0


@pytest.mark.parametrize(
    "headers",
    [
        {**auth("alice", "t1"), "X-Tenant-ID": "t2"},
        {**auth("alice", "t1"), "X-User-ID": "bob"},
    ],
)
async def test_identity_headers_that_contradict_the_token_are_403(aura, headers):
    rejection = await refused(aura.port, headers=headers)
    assert rejection.status_code == 403
    assert envelope_of(rejection)["errorCode"] == "FORBIDDEN"


async def test_identity_headers_apply_to_a_subprotocol_token_too(aura):
    options = browser(token("alice", "t1"))
    options["headers"] = {"X-Tenant-ID": "t2"}
    rejection = await refused(aura.port, **options)
    assert rejection.status_code == 403


async def test_another_origin_is_403_when_origins_are_set(start_server):
    aura = await start_server(ws_allowed_origins=frozenset({"https://app.example.com"}))
    rejection = await refused(aura.port, **browser(token(), origin="https://evil.example.com"))
    assert rejection.status_code == 403
    assert envelope_of(rejection)["errorCode"] == "FORBIDDEN"
    for origin in ("https://app.example.com", None):
        async with aura.ws(**browser(token(), origin=origin)) as ws:
            await ws.start("hi")
            assert (await ws.rest())[-1] == {"type": "done"}


async def test_any_origin_is_accepted_when_none_are_set(aura):
    async with aura.ws(**browser(token(), origin="https://anywhere.example")) as ws:
        await ws.start("hi")
        assert (await ws.rest())[-1] == {"type": "done"}


async def test_per_user_limits_count_streams_and_sockets_together(start_server):
    aura = await start_server(max_streams_per_user=2)
    async with aura.stream("merge") as stream, aura.ws() as ws:
        await until_hitl(stream)
        await ws.start("merge please")
        await ws_until_hitl(ws)
        rejection = await refused(aura.port, headers=auth())
        assert rejection.status_code == 429
        assert envelope_of(rejection)["errorCode"] == "TOO_MANY_STREAMS"
        assert (header(rejection, "retry-after") or "").isdigit()
        over_sse = await aura.request("GET", "/aura/test/stream?message=hi")
        assert over_sse.status == 429
        async with aura.ws(headers=auth("bob")) as other_user:
            await other_user.start("hi")
            assert (await other_user.rest())[-1] == {"type": "done"}
    await eventually(lambda: len(aura.state.registry) == 0)
    # A socket that has not sent `start` yet holds its slot too.
    async with aura.ws() as first, aura.ws() as second:
        assert (await refused(aura.port, headers=auth())).status_code == 429
        for ws in (first, second):
            await ws.start("hi")
            await ws.rest()
    await eventually(lambda: len(aura.state.registry) == 0)
    async with aura.ws() as again:
        await again.start("hi")
        assert (await again.rest())[-1] == {"type": "done"}


async def test_the_process_limit_is_503(start_server):
    aura = await start_server(max_sessions=1)
    async with aura.ws(headers=auth("u1")):
        rejection = await refused(aura.port, headers=auth("u2"))
        assert rejection.status_code == 503
        assert envelope_of(rejection)["errorCode"] == "SERVICE_UNAVAILABLE"
        assert (header(rejection, "retry-after") or "").isdigit()


async def test_redis_unreachable_is_503(start_server):
    aura = await start_server(redis_url=f"redis://{HOST}:{free_port()}/0")
    rejection = await refused(aura.port, headers=auth())
    assert rejection.status_code == 503
    assert envelope_of(rejection)["errorCode"] == "SERVICE_UNAVAILABLE"
    assert (header(rejection, "retry-after") or "").isdigit()


async def test_headers_over_16_kib_are_431_before_accept(aura):
    rejection = await refused(aura.port, headers={**auth(), "X-Padding": "p" * 17000})
    assert rejection.status_code == 431
    assert envelope_of(rejection)["errorCode"] == "HEADERS_TOO_LARGE"
