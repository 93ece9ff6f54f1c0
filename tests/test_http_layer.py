"""The HTTP layer itself: connections closed when they should be, bursts, limits, envelopes.

In-process servers (`aura`, `start_server`); each test is bounded by conftest's
default 60 s, most also by a tighter `fail_after` of their own.
"""

from __future__ import annotations

import email.utils
import errno
import json
import logging
import os
import resource
import socket
import time

import pytest
import trio
import trio.testing

from aura_trio import client

from .helpers import HOST, auth, listen_overflows, stream_target, until_hitl


async def _raw_exchange(port: int, request: bytes, *, until_eof_within: float) -> bytes:
    """Send raw bytes; return everything received until the server closes the connection."""
    stream = await trio.open_tcp_stream(HOST, port)
    received = b""
    with trio.fail_after(until_eof_within):
        await stream.send_all(request)
        while chunk := await stream.receive_some(65536):
            received += chunk
    await stream.aclose()
    return received


async def test_connection_close_is_honoured(aura):
    received = await _raw_exchange(
        aura.port,
        b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        until_eof_within=1.0,
    )
    assert received.startswith(b"HTTP/1.1 200")
    assert json.loads(received.split(b"\r\n\r\n", 1)[1])["data"] == {"status": "UP"}


async def test_a_request_line_h11_refuses_gets_431_in_the_envelope(aura):
    # Incomplete past 16 KiB: refused by Hypercorn's h11 layer before the app sees it.
    received = await _raw_exchange(
        aura.port, b"GET " + stream_target("m" * 20_000).encode(), until_eof_within=2.0
    )
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431")
    assert b"content-type: application/json" in head.lower()
    assert json.loads(body)["errorCode"] == "HEADERS_TOO_LARGE"


async def test_idle_keep_alive_connection_is_closed(start_server):
    aura = await start_server(keep_alive_seconds=0.5)
    stream = await trio.open_tcp_stream(HOST, aura.port)
    await stream.send_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    received = b""
    with trio.fail_after(3):
        while chunk := await stream.receive_some(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.1 200") and received.count(b"HTTP/1.1") == 1
    await stream.aclose()


async def test_http10_stream_ends_with_the_connection(aura):
    headers = "".join(f"{k}: {v}\r\n" for k, v in auth().items())
    request = f"GET {stream_target('hi')} HTTP/1.0\r\nHost: x\r\n{headers}\r\n".encode()
    received = await _raw_exchange(aura.port, request, until_eof_within=3.0)
    assert received.endswith(b"data: [DONE]\n\n")


async def test_burst_of_1000_connections_is_accepted(aura):
    """A Gateway restart reconnects everyone at once (docs/design-notes.md#listen-backlog).

    With a short listen backlog the connections still succeed, late, after SYN
    retransmits; the kernel's overflow counter is what shows it.
    """
    statuses: list[bytes] = []
    overflows_before = listen_overflows()

    async def one() -> None:
        stream = await trio.open_tcp_stream(HOST, aura.port)
        async with stream:
            await stream.send_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := await stream.receive_some(4096):
                data += chunk
            statuses.append(data[:12])

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for _ in range(1000):
                nursery.start_soon(one)
    assert statuses == [b"HTTP/1.1 200"] * 1000
    if overflows_before is not None:
        assert listen_overflows() == overflows_before, "the accept queue overflowed"


async def test_a_response_carries_the_current_date(aura):
    """The `date` header is built once a second (http/server.ServerConfig), and is
    the current second's."""
    for _ in range(2):
        before = time.time()
        response = await _raw_exchange(
            aura.port,
            b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            until_eof_within=5,
        )
        head = response.split(b"\r\n\r\n", 1)[0].decode()
        date = next(line for line in head.split("\r\n") if line.lower().startswith("date:"))
        sent = email.utils.parsedate_to_datetime(date.split(":", 1)[1].strip()).timestamp()
        assert int(before) <= sent <= time.time(), (date, before)
        await trio.sleep(1.1)


async def test_health_needs_no_token(aura):
    for target in ("/health", "/health/ready"):
        response = await client.request(HOST, aura.port, "GET", target)
        assert response.status == 200, target
        assert response.json()["success"] is True


async def test_unknown_route_and_method_answer_in_the_envelope(aura):
    missing = await aura.request("GET", "/nope")
    assert missing.status == 404 and missing.json()["errorCode"] == "NOT_FOUND"
    wrong = await aura.request("DELETE", "/aura/test/stream")
    assert wrong.status == 405 and wrong.json()["status"] == "ERROR"


async def _post_stream(
    aura, body: bytes | dict, headers: dict | None = None
) -> client.HttpResponse:
    headers = {**auth(), **(headers or {})}
    if isinstance(body, dict):
        return await aura.request("POST", "/aura/test/stream", headers=headers, body=body)
    headers.setdefault("Content-Type", "application/json")
    return await client.request(
        HOST, aura.port, "POST", "/aura/test/stream", headers=headers, body=body
    )


async def test_bad_stream_requests_are_400_in_the_envelope(aura):
    cases = [
        b"{not json",
        b"[1,2]",
        b"",
        {"prompt": ""},
        {"prompt": 5},
        {"context": {}},
        {"prompt": "x", "context": [1]},
        {"prompt": "x", "thread_id": 7},
        {"prompt": "x" * 16001},
    ]
    for body in cases:
        response = await _post_stream(aura, body)
        assert response.status == 400, body
        assert response.headers["content-type"].startswith("application/json")
        assert response.json()["errorCode"] == "VALIDATION_ERROR"
    for target in (
        "/aura/test/stream",
        "/aura/test/stream?message=",
        f"/aura/test/stream?message={'x' * 16001}",
    ):
        response = await aura.request("GET", target)
        assert response.status == 400, target
    ok = await _post_stream(aura, {"prompt": "x" * 16000})
    assert ok.status == 200 and ok.body.endswith(b"data: [DONE]\n\n")


async def test_body_over_the_limit_is_413(start_server):
    aura = await start_server(max_body_bytes=1024)
    response = await _post_stream(aura, json.dumps({"prompt": "x" * 2000}).encode())
    assert response.status == 413
    assert response.json()["errorCode"] == "PAYLOAD_TOO_LARGE"


async def test_streams_per_user_are_capped_with_429(start_server):
    aura = await start_server(max_streams_per_user=2)
    async with aura.stream("merge") as first, aura.stream("merge") as second:
        await until_hitl(first)
        await until_hitl(second)
        third = await aura.request("GET", stream_target("merge"))
        assert third.status == 429
        assert third.headers["retry-after"].isdigit()
        assert third.json()["errorCode"] == "TOO_MANY_STREAMS"
        other_user = await aura.request("GET", stream_target("hi"), headers=auth("bob", "t1"))
        assert other_user.status == 200
    # Closing a stream frees its slot.
    async with aura.stream("hi") as again:
        assert again.status == 200
        await again.read_body()


async def test_streams_per_process_are_capped_with_503(start_server):
    aura = await start_server(max_sessions=2)
    async with (
        aura.stream("merge", headers=auth("u1")) as a,
        aura.stream("merge", headers=auth("u2")) as b,
    ):
        await until_hitl(a)
        await until_hitl(b)
        full = await aura.request("GET", stream_target("hi"), headers=auth("u3"))
        assert full.status == 503
        assert full.headers["retry-after"].isdigit()
        assert full.json()["errorCode"] == "SERVICE_UNAVAILABLE"


async def _read_response(stream: trio.SocketStream, buffer: bytes = b"") -> tuple[bytes, bytes]:
    """One Content-Length response from `stream`: (the response, what came after it)."""
    while b"\r\n\r\n" not in buffer:
        chunk = await stream.receive_some(65536)
        assert chunk, "closed before a response"
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    length = int(
        next(
            line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
        ).split(b":")[1]
    )
    while len(rest) < length:
        chunk = await stream.receive_some(65536)
        assert chunk, "closed mid-body"
        rest += chunk
    return head + b"\r\n\r\n" + rest[:length], rest[length:]


async def test_keep_alive_timer_restarts_with_each_request(start_server):
    """Requests spaced under the keep-alive timeout keep a connection open past it;
    once idle for the timeout it is closed (docs/design-notes.md#where-http-cpu-goes)."""
    aura = await start_server(keep_alive_seconds=0.6)
    stream = await trio.open_tcp_stream(HOST, aura.port)
    started = trio.current_time()
    for _ in range(5):  # 5 x 0.3 s: well past one timeout, never idle for one
        await stream.send_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        response, _ = await _read_response(stream)
        assert response.startswith(b"HTTP/1.1 200")
        await trio.sleep(0.3)
    assert trio.current_time() - started > 1.2
    idle_since = trio.current_time()
    with trio.fail_after(3):
        assert await stream.receive_some(65536) == b""  # closed by the server
    assert 0.2 < trio.current_time() - idle_since < 1.5
    await stream.aclose()


async def test_shutdown_closes_idle_keep_alive_connections_at_once(start_server):
    aura = await start_server(keep_alive_seconds=30)
    stream = await trio.open_tcp_stream(HOST, aura.port)
    await stream.send_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    response, _ = await _read_response(stream)
    assert response.startswith(b"HTTP/1.1 200")
    aura.stop.set()
    with trio.fail_after(3):  # not the 30 s keep-alive
        assert await stream.receive_some(65536) == b""
        await aura.stopped.wait()
    await stream.aclose()


class _Spawns(trio.abc.Instrument):
    def __init__(self) -> None:
        self.count = 0

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.count += 1


async def _health_on_a_fresh_connection(port: int) -> None:
    # A plain connect: trio.open_tcp_stream starts tasks of its own.
    sock = trio.socket.socket()
    await sock.connect((HOST, port))
    async with trio.SocketStream(sock) as stream:
        await stream.send_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        response, _ = await _read_response(stream)
        assert response.startswith(b"HTTP/1.1 200")


async def test_a_request_costs_one_task_and_a_connection_one_more(aura):
    """Hypercorn's trio worker with quart-trio starts a task per request and two more
    for Quart, and one for each idle period of a connection (its keep-alive timer).
    Ours: the request's task (its messages are delivered to it, no reader); per
    connection, its handler."""
    await aura.request("GET", "/health")  # whatever start-up left to do
    spawns = _Spawns()
    stream = await trio.open_tcp_stream(HOST, aura.port)
    requests = 20
    trio.lowlevel.add_instrument(spawns)
    try:
        rest = b""
        for _ in range(requests):
            await stream.send_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            response, rest = await _read_response(stream, rest)
            assert response.startswith(b"HTTP/1.1 200")
        await trio.sleep(0.05)
        kept_alive = spawns.count
        spawns.count = 0
        for _ in range(requests):
            await _health_on_a_fresh_connection(aura.port)
        await trio.sleep(0.05)
        fresh = spawns.count
    finally:
        trio.lowlevel.remove_instrument(spawns)
        await stream.aclose()
    assert kept_alive <= requests
    assert fresh <= 2 * requests


class _ServerSteps(trio.abc.Instrument):
    """Scheduler passes taken by every task but the test's own."""

    def __init__(self, client: trio.lowlevel.Task) -> None:
        self.client = client
        self.count = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is not self.client:
            self.count += 1


async def test_a_fresh_connection_costs_the_server_five_scheduler_passes(aura):
    """A request on a connection of its own (as every stream is): the connection's
    task starts, waits for the client's end after the response and exits; the
    request's task starts. No pass for the `accept` (trio's loop takes one per
    connection), for the first read of bytes already there, for closing the socket
    (`send_eof`, `aclose`, and `aclose_forcefully`, which raises `Cancelled` to get
    its pass: four more), or for the keep-alive watchdog when the first connection
    of a quiet moment goes idle."""
    await aura.request("GET", "/health")
    steps = _ServerSteps(trio.lowlevel.current_task())
    connections = 20
    trio.lowlevel.add_instrument(steps)
    try:
        for _ in range(connections):
            await _health_on_a_fresh_connection(aura.port)
            await trio.testing.wait_all_tasks_blocked()
    finally:
        trio.lowlevel.remove_instrument(steps)
    # Five: the listener's wake-up for the connection, and the four above (a sixth
    # now and then, from the server's timers). Before: 12.
    assert steps.count <= 5.5 * connections, steps.count / connections


async def test_a_write_goes_straight_to_the_socket_and_the_rest_waits():
    """The server's write fast path (no scheduler pass when the socket takes it all)
    works on trio's socket streams; what does not fit is left for `send_all`."""
    from aura_trio.http.server import _write_now

    left, right = trio.socket.socketpair()
    ours, theirs = trio.SocketStream(left), trio.SocketStream(right)
    async with ours, theirs:
        assert _write_now(ours, b"hello") == 5
        assert await theirs.receive_some(10) == b"hello"
        big = b"x" * (8 * 1024 * 1024)
        sent = _write_now(ours, big)
        assert 0 < sent < len(big)  # the socket's buffer is smaller than that
        received = 0

        async def drain() -> None:
            nonlocal received
            while received < len(big):
                received += len(await theirs.receive_some(1 << 20))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain)
            await ours.send_all(memoryview(big)[sent:])
        assert received == len(big)
    assert _write_now(ours, b"late") == 0  # closed: send_all raises trio's own error


async def test_a_response_goes_out_in_one_write_head_and_body_together(aura, monkeypatch):
    """Hypercorn writes a response's head, then its body: two syscalls and two TCP
    segments. The server holds the head back for the body's first bytes; an SSE
    stream's head still goes out with its first frame, not after it."""
    from aura_trio.http import server

    writes: list[bytes] = []
    write_now = server._write_now

    def counted(stream: trio.abc.Stream, data: bytes) -> int:
        writes.append(bytes(data))
        return write_now(stream, data)

    monkeypatch.setattr(server, "_write_now", counted)
    stream = await trio.open_tcp_stream(HOST, aura.port)
    async with stream:
        rest = b""
        for _ in range(5):
            await stream.send_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            response, rest = await _read_response(stream, rest)
            assert response.startswith(b"HTTP/1.1 200")
    assert len(writes) == 5, writes
    assert all(w.startswith(b"HTTP/1.1 200") and b'"status":"UP"' in w for w in writes), writes

    writes.clear()
    async with client.open_sse(HOST, aura.port, stream_target("merge"), headers=auth()) as sse:
        await until_hitl(sse)
    first = writes[0]
    assert first.startswith(b"HTTP/1.1 200") and b"text/event-stream" in first
    assert b"\r\n\r\n" in first and first.split(b"\r\n\r\n", 1)[1], "head without a frame"


async def test_the_server_reads_what_a_socket_holds_waits_when_empty_and_tells_closed():
    """The read path that waits on the socket itself (not trio's stream layers):
    bytes as they come, b"" at the peer's end, trio's errors for a closed stream,
    also when it is closed by another task during the wait (as SendBound does)."""
    from aura_trio.http.server import _receive

    left, right = trio.socket.socketpair()
    ours, theirs = trio.SocketStream(left), trio.SocketStream(right)
    await theirs.send_all(b"ready")
    assert await _receive(ours) == b"ready"
    got: list[bytes] = []

    async def read() -> None:
        got.append(await _receive(ours))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []  # nothing to read: it waits
        await theirs.send_all(b"later")
    assert got == [b"later"]
    with trio.move_on_after(0.05) as waiting:
        await _receive(ours)
    assert waiting.cancelled_caught  # a wait is cancellable
    await theirs.aclose()
    assert await _receive(ours) == b""  # the peer's end
    await ours.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await _receive(ours)

    left, right = trio.socket.socketpair()
    ours, theirs = trio.SocketStream(left), trio.SocketStream(right)
    closed: list[BaseException] = []

    async def read_until_closed() -> None:
        try:
            await _receive(ours)
        except trio.ClosedResourceError as error:
            closed.append(error)

    async with theirs, trio.open_nursery() as nursery:
        nursery.start_soon(read_until_closed)
        await trio.testing.wait_all_tasks_blocked()
        await ours.aclose()
    assert len(closed) == 1


def _take_every_descriptor(fd: int) -> list[int]:
    held: list[int] = []
    try:
        while True:
            held.append(os.dup(fd))
    except OSError as error:
        if error.errno != errno.EMFILE:
            raise
    return held


class _Said(logging.Handler):
    """Sets `event` when a record containing `words` is logged."""

    def __init__(self, words: str) -> None:
        super().__init__()
        self.words = words
        self.event = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.words in record.getMessage():
            self.event.set()


async def test_a_listener_out_of_descriptors_logs_and_accepts_once_some_are_free():
    """`accept` failing with EMFILE leaves the connection queued: the listener says
    so and tries again, and the client is served once descriptors are free."""
    from aura_trio.http import acceptor

    listener = socket.socket()
    listener.bind((HOST, 0))
    listener.listen(16)
    client = socket.socket()
    client.connect(listener.getsockname())  # completed by the kernel's backlog
    client.sendall(b"hello")
    served: list[bytes] = []
    done = trio.Event()

    async def handler(stream: trio.SocketStream) -> None:
        served.append(await stream.receive_some(16))
        done.set()

    said = _Said("EMFILE")
    acceptor.log.addHandler(said)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    held: list[int] = []
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 16, hard))
        held = _take_every_descriptor(listener.fileno())
        async with trio.open_nursery() as nursery:
            await nursery.start(acceptor.serve_sockets, handler, [listener], nursery)
            with trio.fail_after(5):
                await said.event.wait()
            assert served == []
            for fd in held:
                os.close(fd)
            held.clear()
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            with trio.fail_after(5):
                await done.wait()
            nursery.cancel_scope.cancel()
    finally:
        acceptor.log.removeHandler(said)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        for fd in held:
            os.close(fd)
        client.close()
        listener.close()
    assert served == [b"hello"]
