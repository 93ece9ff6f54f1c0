"""The WebSocket protocol module, without a server (aura_trio/sessions/ws_protocol.py),
and the AURA_WS_ALLOWED_ORIGINS setting.

Pure functions only: no sockets, no Redis, nothing to bound in time.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aura_trio.errors import ValidationError
from aura_trio.sessions import sse
from aura_trio.sessions import ws_protocol as wsp
from aura_trio.settings import ConfigError, Settings


def test_start_keeps_its_body_for_the_stream_model_and_reads_last_event_id():
    message = wsp.parse_client_message(
        json.dumps({"type": "start", "prompt": "hi", "context": {"a": 1}, "lastEventId": 7})
    )
    assert message == wsp.Start({"prompt": "hi", "context": {"a": 1}}, 7)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, 0), (41, 41), ("12", 12), (-3, 0), (True, 0), (1.5, 0), ("x", 0), (10**19, 0), (None, 0)],
)
def test_last_event_id_is_read_as_the_header_is(value, expected):
    raw = json.dumps({"type": "start", "prompt": "p", "lastEventId": value})
    message = wsp.parse_client_message(raw)
    assert isinstance(message, wsp.Start) and message.last_event_id == expected


def test_decisions_and_cancel():
    approve = wsp.parse_client_message(
        '{"type":"approve","requestId":"req-1","userId":"u","args":{"x":1}}'
    )
    assert approve == wsp.Decide("approve", "req-1", {"userId": "u", "args": {"x": 1}})
    reject = wsp.parse_client_message('{"type":"reject","requestId":"req_2","reason":"no"}')
    assert reject == wsp.Decide("reject", "req_2", {"reason": "no"})
    assert wsp.parse_client_message('{"type":"cancel"}') == wsp.Cancel()


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "[1, 2]",
        '"start"',
        "{}",
        '{"type":"stop"}',
        '{"type":"approve"}',
        '{"type":"approve","requestId":"bad id"}',
        '{"type":"reject","requestId":5}',
        '{"type":"approve","requestId":"' + "r" * 129 + '"}',
    ],
)
def test_malformed_messages_are_400_validation_errors(raw):
    with pytest.raises(ValidationError) as caught:
        wsp.parse_client_message(raw)
    assert caught.value.status_code == 400 and caught.value.error_code == "VALIDATION_ERROR"


def test_binary_is_1003_and_too_big_is_1009_counting_utf8_bytes():
    for raw in (b"{}", None):
        with pytest.raises(wsp.ProtocolViolation) as caught:
            wsp.parse_client_message(raw)
        assert caught.value.code == 1003
    fits = json.dumps({"type": "cancel", "pad": "x" * (wsp.MAX_MESSAGE_BYTES - 40)})
    assert len(fits.encode()) <= wsp.MAX_MESSAGE_BYTES
    assert wsp.parse_client_message(fits) == wsp.Cancel()
    # 30,000 characters, 90,000 bytes: the limit counts bytes.
    wide = json.dumps({"type": "cancel", "pad": "가" * 30000}, ensure_ascii=False)
    assert len(wide) < wsp.MAX_MESSAGE_BYTES < len(wide.encode())
    with pytest.raises(wsp.ProtocolViolation) as caught:
        wsp.parse_client_message(wide)
    assert caught.value.code == 1009


def test_server_messages():
    assert json.loads(wsp.HEARTBEAT) == {"type": "heartbeat"}
    assert json.loads(wsp.DONE) == {"type": "done"}
    assert json.loads(wsp.ack_message("approve", "req_1", "approved")) == {
        "type": "ack", "action": "approve", "requestId": "req_1", "status": "approved",
    }  # fmt: skip
    assert json.loads(wsp.error_message(409, "HITL_NOT_PENDING", "no", "req_1")) == {
        "type": "error", "status": 409, "errorCode": "HITL_NOT_PENDING", "message": "no",
        "requestId": "req_1",
    }  # fmt: skip
    assert "requestId" not in json.loads(wsp.error_message(400, "VALIDATION_ERROR", "bad"))


@given(
    event_id=st.integers(min_value=1, max_value=10**18),
    event_type=st.sampled_from(["start", "content", "hitl", "error"]),
    data=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
        max_leaves=10,
    ),
)
def test_an_event_carries_exactly_the_sse_frames_data(event_id, event_type, data):
    text = wsp.event_message(event_id, event_type, data)
    text.encode("utf-8")  # a text message: valid UTF-8, lone surrogates escaped
    message = json.loads(text)
    assert message["type"] == "event"
    assert message["id"] == event_id and message["event"] == event_type
    frame = sse.encode_event(event_id, event_type, data)
    data_line = frame.split(b"\n")[2].removeprefix(b"data: ")
    assert json.dumps(message["data"]) == json.dumps(json.loads(data_line))
    assert data_line.decode("utf-8") in text


def test_the_token_comes_from_a_bearer_subprotocol_only_next_to_aura_v1():
    assert wsp.subprotocol_token(["aura.v1", "bearer.abc.def"]) == "abc.def"
    assert wsp.subprotocol_token(["bearer.abc", "aura.v1"]) == "abc"
    assert wsp.subprotocol_token(["bearer.abc"]) is None
    assert wsp.subprotocol_token(["aura.v1", "bearer."]) is None
    assert wsp.selected_subprotocol(["aura.v1", "bearer.abc"]) == "aura.v1"
    assert wsp.selected_subprotocol(["bearer.abc"]) is None
    assert wsp.selected_subprotocol([]) is None


def test_origins():
    allowed = frozenset({"https://app.example.com"})
    assert wsp.origin_allowed("https://app.example.com", allowed)
    assert wsp.origin_allowed("HTTPS://APP.example.com/", allowed)
    assert not wsp.origin_allowed("https://evil.example.com", allowed)
    assert wsp.origin_allowed(None, allowed)
    assert wsp.origin_allowed("https://anything", None)


def test_flood_rule_allows_bursts_and_the_sustained_rate_only():
    rate = wsp.MessageRate(0.0, rate=50.0, burst=100)
    assert all(rate.allow(0.0) for _ in range(100))
    assert not rate.allow(0.0)
    # Refilled at 50/s: one second later, 50 more.
    assert all(rate.allow(1.0) for _ in range(50))
    assert not rate.allow(1.0)
    # 50 a second for a long time is fine.
    rate = wsp.MessageRate(0.0)
    assert all(rate.allow(i / 50) for i in range(5000))
    # 60 a second is not, once the burst is spent.
    rate = wsp.MessageRate(0.0)
    assert not all(rate.allow(i / 60) for i in range(5000))


def test_allowed_origins_unset_or_empty_allow_any():
    assert Settings.from_env({}).ws_allowed_origins is None
    assert Settings.from_env({"AURA_WS_ALLOWED_ORIGINS": " "}).ws_allowed_origins is None


def test_allowed_origins_are_split_and_normalised():
    settings = Settings.from_env(
        {"AURA_WS_ALLOWED_ORIGINS": "https://App.example.com/, http://localhost:3000,"}
    )
    assert settings.ws_allowed_origins == frozenset(
        {"https://app.example.com", "http://localhost:3000"}
    )


def test_something_that_is_not_an_origin_stops_the_start():
    with pytest.raises(ConfigError, match="AURA_WS_ALLOWED_ORIGINS"):
        Settings.from_env({"AURA_WS_ALLOWED_ORIGINS": "app.example.com"})
