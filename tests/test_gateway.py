"""The Gateway for real: nginx running deploy/gateway/nginx.conf in front of a server.

Loopback only: the server listens on port 0, nginx on a port `gateway.run_gateway`
finds free (again on another if it cannot bind it), and its upstreams point at the
server; every async test is bounded by conftest's default 60 s. Clients
speak only the Gateway's `/api/...` paths. nginx ignores the server's
`X-Accel-Buffering: no` here, so the config's own settings must stream. The tests
that run nginx are skipped only when no nginx binary can be found (`.ci/run`
installs it when it can).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from aura_trio import client

from .gateway import CONFIG, Gateway, find_nginx, run_gateway
from .helpers import HOST, StartServer, auth, events_of, token
from .ws_helpers import envelope_of, refused

NGINX = find_nginx()
needs_nginx = pytest.mark.skipif(NGINX is None, reason="no nginx binary (apt-get install nginx)")

DELAY = 0.3  # the agent's pause between events: long enough to see frames arrive apart

OpenGateway = Callable[..., AbstractAsyncContextManager[Gateway]]


@pytest.fixture
def open_gateway(start_server: StartServer, tmp_path: Path) -> OpenGateway:
    """`open_gateway(**settings)`: a server with these settings, and nginx in front of it."""

    @asynccontextmanager
    async def open_(**settings: Any) -> AsyncIterator[Gateway]:
        assert NGINX is not None
        aura = await start_server(**settings)
        directory = tmp_path / "nginx"
        async with run_gateway(NGINX, directory, upstream_port=aura.port) as gateway:
            yield gateway

    return open_


async def timed(stream: client.SSEStream) -> AsyncIterator[tuple[float, client.Frame]]:
    """Each frame with the time it reached the client."""
    async for frame in stream:
        yield trio.current_time(), frame


@needs_nginx
async def test_stream_and_approval_through_gateway_arrive_as_written(
    open_gateway: OpenGateway,
) -> None:
    arrivals: list[tuple[float, client.Frame]] = []
    async with open_gateway(event_delay_seconds=DELAY) as gateway, AsyncExitStack() as stack:
        # The session cannot end before the approval: a gateway that holds responses
        # back until they end would not even send the headers.
        with trio.move_on_after(10 * DELAY + 5) as waiting:
            stream = await stack.enter_async_context(gateway.stream("merge PR 42"))
            frames = timed(stream)
            async for arrival in frames:
                arrivals.append(arrival)
                if arrival[1].event == "hitl":
                    break
        assert not waiting.cancelled_caught, f"the gateway held the stream back: {arrivals}"
        assert stream.status == 200
        assert stream.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert stream.headers["x-aura-session-id"].startswith("sess_")
        request_id = arrivals[-1][1].json()["data"]["requestId"]
        approving_at = trio.current_time()
        approval = await gateway.request("POST", f"/api/aura/hitl/approve/{request_id}")
        assert approval.status == 200, approval.body
        assert approval.json()["data"]["status"] == "approved"
        asked = len(arrivals)
        arrivals += [arrival async for arrival in frames]
        assert stream.ended

    frames_only = [frame for _, frame in arrivals]
    assert frames_only[0].comments == ["connected"]
    assert events_of(frames_only)[-1] == "end" and frames_only[-1].is_done
    assert frames_only[-2].json()["status"] == "completed"
    ids = [frame.id for frame in frames_only if frame.id is not None]
    assert ids == list(range(1, len(ids) + 1))
    # As written, not when the response ends. Before asking, the agent paused DELAY
    # after each of thought, plan_step, plan_step_update and tool_execution: those
    # frames came in separate reads, spread over at least that long.
    first: dict[str, float] = {}
    for at, frame in arrivals:
        first.setdefault(frame.event or ":".join(frame.comments) or str(frame.data), at)
    order = ["connected", "plan_step", "plan_step_update", "hitl"]
    assert all(first[a] < first[b] for a, b in itertools.pairwise(order)), first
    assert first["hitl"] - first["connected"] >= 3 * DELAY, first
    # After it: nothing before the approval was sent, and `end` some pauses later.
    resumed = arrivals[asked][0]
    assert resumed >= approving_at
    assert arrivals[-1][0] - resumed >= 3 * DELAY, "the last events came with the first ones"


@needs_nginx
async def test_websocket_session_and_its_approval_through_gateway(
    open_gateway: OpenGateway,
) -> None:
    """The upgrade passes nginx (`Upgrade`, `Connection: upgrade`), the token as a
    browser sends it, and messages arrive as written, both ways."""
    async with open_gateway(event_delay_seconds=DELAY) as gateway:
        browser = {"subprotocols": ["aura.v1", f"bearer.{token()}"], "headers": {}}
        async with client.open_ws(HOST, gateway.port, target="/api/aura/ws", **browser) as ws:
            assert ws.ws.subprotocol == "aura.v1"
            await ws.start("merge PR 42", lastEventId=10)
            arrivals = []
            with trio.move_on_after(10 * DELAY + 5) as waiting:
                while not arrivals or arrivals[-1][1].get("event") != "hitl":
                    arrivals.append((trio.current_time(), await ws.receive()))
            assert not waiting.cancelled_caught, f"the gateway held messages back: {arrivals}"
            # As written: the agent paused DELAY after each of 4 events before asking.
            assert arrivals[-1][0] - arrivals[0][0] >= 3 * DELAY
            request_id = arrivals[-1][1]["data"]["data"]["requestId"]
            await ws.decide("approve", request_id)
            rest = await ws.rest()
            assert ws.ws.closed is not None and ws.ws.closed.code == 1000
        messages = [message for _, message in arrivals] + rest
        assert messages[0]["id"] == 11 and messages[0]["event"] == "start"
        assert {"type": "ack", "action": "approve", "requestId": request_id,
                "status": "approved"} in rest  # fmt: skip
        assert rest[-2]["event"] == "end" and rest[-1] == {"type": "done"}
        stored = await gateway.request("GET", f"/api/aura/hitl/requests/{request_id}")
        assert stored.json()["data"]["status"] == "approved"

        # Refusals before the upgrade come through as the server sent them.
        rejection = await refused(gateway.port, target="/api/aura/ws", headers={})
        assert rejection.status_code == 401
        assert envelope_of(rejection)["errorCode"] == "UNAUTHORIZED"
    assert 'GET /api/aura/ws HTTP/1.1" 101' in gateway.log()


@needs_nginx
async def test_last_event_id_and_identity_headers_pass_through(open_gateway: OpenGateway) -> None:
    async with open_gateway() as gateway:
        async with gateway.stream("hello", headers={**auth(), "Last-Event-ID": "41"}) as stream:
            frames = [frame async for frame in stream]
        ids = [frame.id for frame in frames if frame.id is not None]
        assert ids[0] == 42 and ids == list(range(42, 42 + len(ids)))

        async with gateway.stream("hello", headers={**auth(), "X-Tenant-ID": "t2"}) as stream:
            assert stream.status == 403
            assert b'"errorCode":"FORBIDDEN"' in await stream.read_body()
        target = "/api/aura/test/stream?message=hello"
        wrong_user = await gateway.request("GET", target, headers={**auth(), "X-User-ID": "bob"})
        assert wrong_user.status == 403
        anonymous = await gateway.request("GET", target, headers={})
        assert anonymous.status == 401
        assert anonymous.headers["www-authenticate"].startswith("Bearer")


@needs_nginx
async def test_routes_strip_the_api_prefix(open_gateway: OpenGateway) -> None:
    async with open_gateway() as gateway:
        body = {"prompt": "please merge", "context": {"title": "PR 42"}}
        async with client.open_sse(
            HOST, gateway.port, "/api/aura/test/stream", headers=auth(), method="POST", body=body
        ) as stream:
            hitl = await stream.events_until("hitl")
            request_id = hitl[-1].json()["data"]["requestId"]
            stored = await gateway.request("GET", f"/api/aura/hitl/requests/{request_id}")
            assert stored.status == 200 and stored.json()["data"]["status"] == "pending"
            inbox = await gateway.request("GET", "/api/aura/hitl/pending")
            assert [item["requestId"] for item in inbox.json()["data"]["items"]] == [request_id]
            console = await gateway.request("GET", "/api/aura/console", headers={})
            assert console.status == 200 and b'id="inbox"' in console.body
            reason = {"reason": "not today"}
            rejected = await gateway.request(
                "POST", f"/api/aura/hitl/reject/{request_id}", body=reason
            )
            assert rejected.status == 200
            rest = [frame async for frame in stream]
        assert events_of(rest)[-1] == "error" and rest[-2].json()["error"] == "not today"

        for target in ("/aura/test/stream?message=hi", "/health", "/api/health"):
            assert (await gateway.request("GET", target)).status == 404, target
    assert f"/api/aura/hitl/reject/{request_id}" in gateway.log()


@needs_nginx
async def test_heartbeats_keep_a_waiting_stream_alive_through_gateway(
    open_gateway: OpenGateway,
) -> None:
    async with open_gateway(heartbeat_seconds=0.2) as gateway:
        async with gateway.stream("merge") as stream:
            await stream.events_until("hitl")
            with trio.fail_after(3):
                beats = [await stream.__anext__() for _ in range(3)]
        assert all(frame.comments == ["heartbeat"] for frame in beats), beats


def test_committed_config_sets_what_streams_need() -> None:
    """What the running tests cannot wait for (300 s) or could pass without (docs/design-notes.md#nginx-buffering, #heartbeats-under-proxy-timeouts, #websocket-auth-and-proxying)."""
    text = re.sub(r"#[^\n]*", "", CONFIG.read_text())
    server = text[text.index("server {") :]
    location = r"location\s+((?:=\s*)?\S+)\s*\{([^}]*)\}"
    locations = dict(re.findall(location, server))
    assert locations["/api/aura/hitl/"].split() == ["proxy_pass", "http://aura_hitl/aura/hitl/;"]
    assert locations["/api/aura/"].split() == ["proxy_pass", "http://aura/aura/;"]
    # Ours under /aura/hitl, which the Main Service does not have (the console reads it).
    for route in ("pending", "audit"):
        assert locations[f"= /api/aura/hitl/{route}"].split() == [
            "proxy_pass",
            f"http://aura/aura/hitl/{route};",
        ]
    # A proxy_set_header inside a location would drop every one set on the server
    # (so the WebSocket location repeats them).
    websocket = locations["= /api/aura/ws"]
    for directive in (
        "proxy_pass http://aura/aura/ws;",
        "proxy_http_version 1.1;",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection $connection_upgrade;",
        "proxy_set_header Host $host;",
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
        "proxy_read_timeout 300s;",
    ):
        assert directive in " ".join(websocket.split()), directive
    mapping = re.search(r"map \$http_upgrade \$connection_upgrade \{([^}]*)\}", text)
    assert mapping is not None and mapping.group(1).split() == [
        "default", "upgrade;", "''", "close;"
    ]  # fmt: skip
    shared = re.sub(location, "", server)
    for directive in (
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
        "proxy_buffering off;",
        "proxy_read_timeout 300s;",
    ):
        assert directive in shared, directive
