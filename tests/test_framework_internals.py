"""Regression guard for the framework internals `aura_trio/http/` relies on.

Every Hypercorn, Quart or quart-trio detail below that is not public API is used by
exactly one module of `aura_trio/http/`. A framework upgrade that changes one of
them fails here, by name, instead of as a subtle change in how connections close.
No server, no I/O beyond a socket that is never connected.
"""

from __future__ import annotations

import inspect
import socket

import hypercorn.trio.tcp_server as tcp_server
import trio
from hypercorn.config import Config
from hypercorn.protocol import ProtocolWrapper
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio.tcp_server import TCPServer
from quart_trio.asgi import TrioASGIHTTPConnection

from aura_trio.http.connection import ClosingHTTPConnection
from aura_trio.http.server import make_config


def _source(function: object) -> str:
    return inspect.getsource(function)  # type: ignore[arg-type]


def test_workers_above_one_is_what_turns_so_reuseport_on():
    # http/server.make_config sets config.workers = 2 for several worker processes.
    config = make_config(
        host="127.0.0.1", port=0, backlog=16, keep_alive_seconds=5, reuse_port=True
    )
    sockets = config.create_sockets().insecure_sockets
    try:
        assert sockets[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
    finally:
        for sock in sockets:
            sock.close()
    single = make_config(
        host="127.0.0.1", port=0, backlog=16, keep_alive_seconds=5, reuse_port=False
    )
    sockets = single.create_sockets().insecure_sockets
    try:
        assert sockets[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 0
    finally:
        for sock in sockets:
            sock.close()


def test_tcp_server_hooks_we_override_are_still_there():
    # _BoundedSendTCPServer overrides _read_data and protocol_send, and reads these.
    assert "_read_data" in vars(TCPServer)
    assert "protocol_send" in vars(TCPServer)
    assert isinstance(tcp_server.MAX_RECV, int)
    run = _source(TCPServer.run)
    assert "self.protocol = ProtocolWrapper(" in run, "the protocol is built inside run()"
    assert "await self._read_data()" in run
    init = _source(TCPServer.__init__)
    assert "self.send_lock" in init and "self.idle_task" in init
    assert "shield = True" in _source(TCPServer.protocol_send), "writes are still shielded"
    # Its keep-alive timer is replaced (http/keep_alive.py): Hypercorn must still use
    # only restart/stop on idle_task, and close an idle connection with these.
    assert "await self.idle_task.restart(self._task_group, self._idle_timeout)" in run
    assert "self.idle_task.restart(" in _source(TCPServer.protocol_send)
    assert "self.idle_task.stop()" in _source(TCPServer.protocol_send)
    assert "_initiate_server_close" in vars(TCPServer) and "_close" in vars(TCPServer)
    assert "await self._close()" in run, "run() ends with _close()"
    # Its plain-socket case, which _run_plain does without the handshake attempt: the
    # same steps, in the same order, with the protocol built from the same arguments.
    plain_steps = [
        "except AttributeError:  # Not SSL",
        'alpn_protocol = "http/1.1"',
        "client = parse_socket_addr(socket.family, socket.getpeername())",
        "server = parse_socket_addr(socket.family, socket.getsockname())",
        "async with TaskGroup() as task_group:",
        "self._task_group = task_group",
        "self.protocol = ProtocolWrapper(",
        "await self.protocol.initiate()",
        "await self.idle_task.restart(self._task_group, self._idle_timeout)",
        "await self._read_data()",
        "except OSError:",
        "await self._close()",
    ]
    positions = [run.find(step) for step in plain_steps]
    assert -1 not in positions and positions == sorted(positions), dict(
        zip(plain_steps, positions, strict=True)
    )
    wrapper_args = run[run.find("ProtocolWrapper(") : run.find("await self.protocol.initiate()")]
    assert [a.strip() for a in wrapper_args.split("(", 1)[1].split(",")][:10] == [
        "self.app",
        "self.config",
        "self.context",
        "task_group",
        "ConnectionState(self.state)",
        "ssl",
        "client",
        "server",
        "self.protocol_send",
        "alpn_protocol",
    ]


def test_h11_protocol_error_response_hook_is_still_there():
    # _EnvelopedErrorsH11Protocol replaces _send_error_response and calls _send_h11_event.
    assert list(inspect.signature(H11Protocol._send_error_response).parameters) == [
        "self",
        "status_code",
    ]
    assert "_send_h11_event" in vars(H11Protocol)
    assert "H11Protocol(" in _source(ProtocolWrapper.__init__), "HTTP/1.1 starts as H11Protocol"


def test_quart_trio_send_response_hook_is_still_there():
    # ClosingHTTPConnection overrides _send_response(send, response).
    assert issubclass(ClosingHTTPConnection, TrioASGIHTTPConnection)
    assert list(inspect.signature(TrioASGIHTTPConnection._send_response).parameters) == [
        "self",
        "send",
        "response",
    ]
    assert "self._send_response(send, response)" in _source(TrioASGIHTTPConnection.handle_request)
    # ClosingHTTPConnection.__call__ runs handle_request in its own task, beside
    # handle_messages; both take the nursery and cancel it when done.
    for name, last in (("handle_messages", "receive"), ("handle_request", "send")):
        method = getattr(TrioASGIHTTPConnection, name)
        assert list(inspect.signature(method).parameters) == ["self", "nursery", "request", last]
        assert "nursery.cancel_scope.cancel()" in _source(method)


def test_config_defaults_we_rely_on():
    assert Config().workers == 1


def test_quart_schema_wraps_make_response_on_the_app_and_we_take_it_back():
    # api/openapi.install_openapi drops the instance attribute QuartSchema.init_app sets.
    from quart import Quart
    from quart_schema import QuartSchema

    from aura_trio import Settings, create_app

    plain = Quart(__name__)
    QuartSchema(plain)
    assert "make_response" in vars(plain), "quart-schema still wraps it on the instance"
    settings = Settings(redis_url="redis://127.0.0.1:1/0", secret="s" * 32)
    app = create_app(settings)
    assert "make_response" not in vars(app)
    assert app.make_response.__func__ is Quart.make_response


async def test_every_async_test_runs_under_a_deadline():
    """conftest bounds every async test (TEST_SECONDS unless marked `time_limit`): a
    hang fails its test instead of hanging the whole run. The bound was once applied
    too late to take effect, after pytest-trio had already wrapped the test."""
    from .conftest import TEST_SECONDS

    assert trio.current_effective_deadline() <= trio.current_time() + TEST_SECONDS


def test_response_headers_are_hypercorns_built_once_a_second():
    # http/server.ServerConfig caches what Config.response_headers builds (it reads
    # alt_svc_headers and _quic_addresses to know when not to).
    ours = make_config(host="127.0.0.1", port=0, backlog=16, keep_alive_seconds=5, reuse_port=False)
    theirs = Config()
    assert theirs.alt_svc_headers == [] and theirs._quic_addresses == []
    for _ in range(3):  # the same second for both, unless a second ended in between
        expected = theirs.response_headers("h11")
        if ours.response_headers("h11") == expected:
            break
    else:
        raise AssertionError(f"{ours.response_headers('h11')} != {expected}")
    assert [name for name, _ in expected] == [b"date", b"server"]
    handed = ours.response_headers("h11")
    handed.append((b"x-mutated", b"1"))
    assert (b"x-mutated", b"1") not in ours.response_headers("h11"), "callers get a copy"
    ours.alt_svc_headers = ['h3=":443"']
    assert (b"alt-svc", b'h3=":443"') in ours.response_headers("h11")


def test_lean_body_sets_up_what_quart_trios_body_does():
    # http/request_body.LeanBody copies TrioBody.__init__ (flags for its events).
    from quart_trio.wrappers.request import TrioBody
    from werkzeug.exceptions import RequestEntityTooLarge

    from aura_trio.http.request_body import LeanBody

    assert "super()" not in _source(TrioBody.__init__), "TrioBody.__init__ now calls its base"
    for expected, limit in ((None, None), (10, 100), (1000, 100)):
        theirs, ours = TrioBody(expected, limit), LeanBody(expected, limit)
        assert vars(ours).keys() == vars(theirs).keys()
        assert ours._max_content_length == theirs._max_content_length
        assert type(ours._must_raise) is type(theirs._must_raise)
    assert isinstance(LeanBody(1000, 100)._must_raise, RequestEntityTooLarge)
