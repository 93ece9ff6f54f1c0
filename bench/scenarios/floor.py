"""The HTTP floor: server CPU per request of the bare HTTP stacks, beside the
services' own routes.

For each route, C clients in a closed loop, in two modes: *new connection* (one
request per connection, closed by the client after the response, as a stream
request is) and *keep-alive* (requests one after another on one connection per
client, as the approvals are). The figure is the server's CPU time over the
window (`/proc`) per request answered.

Routes: the target's own `GET /health`, and `GET /aura/hitl/requests/{id}` with a
token (authentication, one Redis GET, the record in the envelope) for a request
that a waiting session keeps pending. Then the bare stacks the target is built
on, each in a process of its own (`bench.peers.bare`): for aura, Quart-Trio on
Hypercorn's trio worker, the same on aura's server, and Quart on Hypercorn's
asyncio worker; for the peer, FastAPI on uvicorn.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

from .. import procs
from ..http import KeepAliveClient, build_request, connect, read_response, send_all
from ..load import CONNECTION_ERRORS, TENANT, WAITING_PROMPT, SessionError, open_until_hitl
from ..measure import Context, Errors

MODES = ("new connection", "keep-alive")
BARE: dict[str, tuple[str, ...]] = {
    "aura": ("hypercorn-trio", "aura-server", "hypercorn-asyncio"),
    "peer": ("uvicorn-fastapi",),
}
BARE_NAMES = {
    "hypercorn-trio": "bare Quart-Trio on Hypercorn's trio worker: GET /health",
    "aura-server": "bare Quart-Trio on aura's server (`aura_trio.http`): GET /health",
    "hypercorn-asyncio": "bare Quart on Hypercorn's asyncio worker: GET /health",
    "uvicorn-fastapi": "bare FastAPI on uvicorn (uvloop, httptools): GET /health",
}
STACK_NAMES = {"aura": "aura (Quart-Trio, Hypercorn trio)", "peer": "peer (FastAPI, uvicorn)"}


Requester = tuple[Callable[[], Awaitable[None]], Callable[[], None]]


async def _window(
    pid: int,
    clients: int,
    make_client: Callable[[], Requester],
    errors: Errors,
    *,
    warmup: float,
    seconds: float,
) -> dict[str, float]:
    """`clients` tasks, each sending requests in a loop; CPU of `pid` per request
    answered in the window."""
    counted = [0]
    window = [False]

    async def client() -> None:
        request, close = make_client()
        try:
            while True:
                try:
                    await request()
                except CONNECTION_ERRORS as error:
                    errors.note(error)
                    await trio.sleep(0.05)
                    continue
                if window[0]:
                    counted[0] += 1
        finally:
            close()

    async with trio.open_nursery() as nursery:
        for _ in range(clients):
            nursery.start_soon(client)
        await trio.sleep(warmup)
        window[0] = True
        started, cpu0, client0 = trio.current_time(), procs.sample(pid).cpu, procs.self_cpu()
        await trio.sleep(seconds)
        window[0] = False
        cpu = procs.sample(pid).cpu - cpu0
        wall = trio.current_time() - started
        client_cpu = procs.self_cpu() - client0
        nursery.cancel_scope.cancel()
    return {
        "requests": counted[0],
        "requests_per_s": counted[0] / wall,
        "server_cpu_us_per_request": 1e6 * cpu / max(1, counted[0]),
        "server_cpu_pct": 100 * cpu / wall,
        "client_cpu_pct": 100 * client_cpu / wall,
    }


def _requester(host: str, port: int, raw: bytes, mode: str) -> Requester:
    """One client's request function for `mode`, and how to close what it holds."""
    if mode == "keep-alive":
        client = KeepAliveClient(host, port)

        async def kept() -> None:
            response = await client.request(raw)
            if response.status != 200:
                raise SessionError(f"answered {response.status}: {response.body[:200]!r}")

        return kept, client.close

    async def fresh() -> None:
        sock = await connect(host, port)
        try:
            await send_all(sock, raw)
            response = await read_response(sock)
        finally:
            sock.close()
        if response.status != 200:
            raise SessionError(f"answered {response.status}: {response.body[:200]!r}")

    return fresh, lambda: None


async def _measure_route(
    pid: int, host: str, port: int, raw: bytes, errors: Errors, params: dict[str, Any]
) -> list[dict[str, Any]]:
    rows = []
    for mode in MODES:
        figures = await _window(
            pid,
            params["concurrency"],
            lambda mode=mode: _requester(host, port, raw, mode),
            errors,
            warmup=params["warmup"],
            seconds=params["seconds"],
        )
        rows.append({"mode": mode, **figures})
    return rows


async def run(ctx: Context, *, concurrency: int, seconds: float, warmup: float) -> dict[str, Any]:
    target = ctx.target
    params = {"concurrency": concurrency, "seconds": seconds, "warmup": warmup}
    errors = Errors(ctx.status)
    rows: list[dict[str, Any]] = []
    name = STACK_NAMES.get(target.name, target.name)
    ctx.status["route"] = "-"

    def add(key: str, label: str, measured: list[dict[str, Any]]) -> None:
        rows.extend({"key": key, "name": label, **row} for row in measured)

    # The target's own routes; a waiting session keeps its request pending.
    stream, request_id = await open_until_hitl(target, target.stream_request(WAITING_PROMPT, 0))
    try:
        token = {"Authorization": f"Bearer {target.tokens[0]}", "X-Tenant-ID": TENANT}
        own = [
            ("app:/health", f"{name}: GET /health", target.get_request("/health")),
            ("app:/request", f"{name}: GET /aura/hitl/requests/{{id}} (token, Redis GET)",
             build_request("GET", f"/aura/hitl/requests/{request_id}", target.authority, token)),
        ]  # fmt: skip
        for key, label, raw in own:
            ctx.status["route"] = key
            measured = await _measure_route(
                ctx.server.pid, target.host, target.port, raw, errors, params
            )
            add(key, label, measured)
    finally:
        stream.close()

    # The bare stacks it is built on, one process at a time.
    work = ctx.server.log_path.parent
    for stack in BARE.get(target.name, ()):
        ctx.status["route"] = stack
        log = work / f"{stack}.log"
        with procs.run_server(f"bare-{stack}", procs.server_env("", ""), log) as bare:
            raw = build_request("GET", "/health", f"{procs.HOST}:{bare.port}", {})
            measured = await _measure_route(bare.pid, procs.HOST, bare.port, raw, errors, params)
        add(f"bare:{stack}", BARE_NAMES[stack], measured)
    return {**params, "rows": rows, **errors.figures()}
