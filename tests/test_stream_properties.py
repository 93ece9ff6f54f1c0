"""Hypothesis against a live server: any prompt and context survive the trip; any signal
bytes leave the subscriber and a waiting session unharmed.

The servers are child processes (`processes.serve`), stopped in `finally`. The async
property is bounded by conftest's default 60 s (all its examples together); the sync
one by its sockets' 10 s timeouts.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from aura_trio import client

from . import sse_spec
from .helpers import HOST, auth, stream_target
from .processes import RedisServer, ServerProcess, serve

PROPERTY = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

NASTY = "줄\n바꿈\r\n\x00 \ud800 😀 \u2028 "
any_char = st.characters(exclude_categories=())  # surrogates, controls, NUL included
json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(any_char),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(any_char), inner, max_size=4)
    ),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def echo_server(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[ServerProcess]:
    env = {
        "REDIS_URL": redis_server.url,
        "AURA_AGENT": "tests.echo_agent:EchoAgent",
        "AURA_MAX_STREAMS_PER_USER": "1000",
        "AURA_LOG_LEVEL": "WARNING",
    }
    with serve(tmp_path_factory.mktemp("echo"), env=env) as server:
        yield server


@PROPERTY
@given(
    prompt=st.text(any_char, min_size=1, max_size=2000),
    context=st.dictionaries(st.text(any_char), json_value, max_size=5),
)
@example(prompt=(NASTY + "가" * 16000)[:16000], context={"\r\n\ud800": ["\u2028", {"": None}]})
async def test_any_prompt_and_context_round_trip_one_event_per_frame(echo_server, prompt, context):
    # Raw UTF-8 as browsers send it; only lone surrogates (no UTF-8 form) become \u escapes.
    body = json.dumps({"prompt": prompt, "context": context}, ensure_ascii=False)
    response = await client.request(
        HOST,
        echo_server.port,
        "POST",
        "/aura/test/stream",
        headers={**auth(), "Content-Type": "application/json"},
        body=body.encode("utf-8", "backslashreplace"),
    )
    assert response.status == 200, response.body[:300]
    blocks = sse_spec.parse(response.body.decode("utf-8"))  # strict UTF-8
    assert blocks[0].comments == [" connected"] and not blocks[0].fields
    assert blocks[-1].fields == [("data", "[DONE]")]
    events = {}
    for number, block in enumerate(blocks[1:-1], start=1):
        assert [name for name, _ in block.fields] == ["id", "event", "data"], block
        (_, event_id), (_, event_type), (_, data) = block.fields
        assert event_id == str(number)
        events[event_type] = json.loads(data)
    assert events["tool_execution"]["data"]["toolArgs"] == context
    assert events["content"]["data"]["content"] == prompt
    assert events["end"]["status"] == "completed"


class _WaitingStream:
    """A stream held open on a plain socket, waiting for approval."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=10)
        headers = "".join(f"{k}: {v}\r\n" for k, v in auth().items())
        # HTTP/1.0: the body comes unchunked, so frames can be matched in the raw bytes.
        request = f"GET {stream_target('merge')} HTTP/1.0\r\nHost: x\r\n{headers}\r\n"
        self.sock.sendall(request.encode())
        self.received = b""
        while b"event: hitl" not in self.received or not self.received.endswith(b"\n\n"):
            chunk = self.sock.recv(65536)
            assert chunk, "stream closed before its hitl event"
            self.received += chunk
        frame = self.received.split(b"event: hitl\ndata: ", 1)[1].split(b"\n", 1)[0]
        self.hitl = json.loads(frame)["data"]

    def nothing_new(self) -> bool:
        self.sock.setblocking(False)
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return True
        finally:
            self.sock.setblocking(True)
        self.received += data
        return data.count(b"\n\n") == data.count(b": heartbeat\n\n")

    def rest(self) -> bytes:
        self.sock.settimeout(10)
        while not self.received.endswith(b"data: [DONE]\n\n"):
            chunk = self.sock.recv(65536)
            assert chunk, "stream closed before [DONE]"
            self.received += chunk
        return self.received

    def close(self) -> None:
        self.sock.close()


def _ready(port: int) -> bool:
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.sendall(b"GET /health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return sock.recv(64).startswith(b"HTTP/1.1 200")


def test_arbitrary_signal_bytes_never_crash_a_session_or_the_subscriber(
    tmp_path: Path, redis_server: RedisServer
):
    """Junk on the session's channel and in its stored signal, then the real approval:
    one test, so the junk and the check after it cannot be separated or reordered."""
    env = {
        "REDIS_URL": redis_server.url,
        "AURA_HITL_TIMEOUT_SECONDS": "600",
        "AURA_LOG_LEVEL": "WARNING",
    }
    with (
        serve(tmp_path, env=env) as server,
        closing(_WaitingStream(server.port)) as stream,
        closing(redis_server.client()) as raw,
    ):

        @settings(max_examples=150, deadline=None)
        @given(
            payload=st.binary(max_size=512)
            | st.text(any_char).map(lambda t: t.encode("utf-8", "surrogatepass")),
            to_session=st.booleans(),
        )
        def junk_is_ignored(payload: bytes, to_session: bool) -> None:
            session_id = stream.hitl["sessionId"] if to_session else "sess_" + "f" * 32
            raw.publish(f"hitl:channel:{session_id}", payload)
            raw.set(f"hitl:signal:{session_id}", payload, ex=300)
            # A moment for a wrong reaction to show. Not synchronisation: a reaction
            # that comes later is still caught, by `nothing_new` on a later example or
            # by the ending checked below.
            time.sleep(0.002)
            assert server.process.poll() is None
            assert stream.nothing_new()

        junk_is_ignored()

        # After the junk, the waiting session still resumes on its real approval.
        assert _ready(server.port)
        approval = {"type": "approval", "requestId": stream.hitl["requestId"], "status": "approved"}
        raw.publish(f"hitl:channel:{stream.hitl['sessionId']}", json.dumps(approval))
        body = stream.rest()
        assert b"event: end" in body and body.count(b"data: [DONE]") == 1
    assert not [e for e in server.logs() if e.get("level") == "ERROR"]
