"""The pure pieces, without a server: framing, signals, the state machine, settings."""

from __future__ import annotations

import json

import pytest

from aura_trio.agents import sensitive_actions
from aura_trio.api.requests import check_path_id
from aura_trio.client import SSEParser
from aura_trio.errors import ValidationError
from aura_trio.hitl import records as hitl
from aura_trio.ids import new_request_id, new_session_id
from aura_trio.sessions import endings, sse
from aura_trio.settings import ConfigError, Settings


def test_event_frame_is_one_line_utf8_json():
    frame = sse.encode_event(7, "content", {"text": "줄\n바꿈\r\u2028 \x00 😀", "lone": "\ud800"})
    head, event, data, blank, end = frame.split(b"\n")
    assert (head, event, blank, end) == (b"id: 7", b"event: content", b"", b"")
    assert "줄".encode() in data and "😀".encode() in data
    assert json.loads(data[len(b"data: ") :]) == {
        "text": "줄\n바꿈\r\u2028 \x00 😀",
        "lone": "\ud800",
    }


def test_last_event_id_parsing():
    assert sse.parse_last_event_id("41") == 42 - 1
    assert sse.parse_last_event_id(" 7 ") == 7
    for bad in (None, "", "abc", "-3", "1.5", "٣", "9" * 40):
        assert sse.parse_last_event_id(bad) == 0


def test_sse_parser_splits_frames_across_chunks():
    parser = SSEParser()
    stream = b": connected\n\nid: 1\nevent: start\ndata: {}\n\ndata: [DONE]\n\n"
    frames = [f for i in range(len(stream)) for f in parser.feed(stream[i : i + 1])]
    assert [f.comments for f in frames] == [["connected"], [], []]
    assert frames[1].id == 1 and frames[1].event == "start" and frames[2].is_done
    assert parser.leftover == b""


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (
            {"type": "approval", "requestId": "r", "status": "approved", "timestamp": 1},
            hitl.Signal("r", "approved"),
        ),
        ({"requestId": "r", "status": "approved"}, hitl.Signal("r", "approved")),
        (
            {"type": "rejection", "requestId": "r", "status": "rejected", "reason": "no"},
            hitl.Signal("r", "rejected", "no"),
        ),
        (
            {"type": "rejection", "requestId": "r", "status": "rejected"},
            hitl.Signal("r", "rejected", "사용자 거절"),
        ),
        (
            {
                "type": "approval",
                "requestId": "r",
                "status": "approved",
                "userId": "x",
                "extra": [1],
            },
            hitl.Signal("r", "approved", user_id="x"),
        ),
        ({"type": "approval", "requestId": "r", "status": "rejected"}, None),
        ({"type": "rejection", "requestId": "r", "status": "approved"}, None),
        ({"type": "approval", "requestId": "", "status": "approved"}, None),
        ({"type": "approval", "status": "approved"}, None),
        ({"type": "approval", "requestId": "r", "status": "maybe"}, None),
        ([1], None),
    ],
)
def test_parse_signal(payload, expected):
    assert hitl.parse_signal(json.dumps(payload).encode()) == expected


@pytest.mark.parametrize("raw", [b"", b"{", b"\xff\xfe", b"null", b"[" * 100000])
def test_parse_signal_never_raises_on_junk(raw):
    assert hitl.parse_signal(raw) is None


def _stored(**changes):
    base = {
        "requestId": "r", "sessionId": "s", "actionType": "git_merge", "message": "m",
        "context": {}, "status": "pending", "userId": "u", "tenantId": "t1",
        "createdAt": 1, "expiresAt": 2,
    }  # fmt: skip
    return hitl.HitlRequest.from_json({**base, **changes})


def test_state_machine_moves_only_from_pending():
    moved = _stored().moved_to("approved")
    assert moved is not None and moved.to_json()["status"] == "approved"
    for final in ("approved", "rejected", "timeout", "cancelled"):
        assert _stored(status=final).moved_to("rejected") is None


def test_visibility_is_by_tenant_only():
    assert _stored().visible_to("t1", "anyone-of-t1")
    assert not _stored().visible_to("t2", "u")
    assert not _stored().visible_to(None, "u")


def test_a_request_opened_in_no_tenant_is_visible_only_to_its_own_user():
    assert _stored(tenantId=None).visible_to(None, "u")
    assert not _stored(tenantId=None).visible_to(None, "somebody-else")
    assert not _stored(tenantId=None).visible_to("t1", "u")


def test_a_stored_request_round_trips_and_keeps_fields_it_does_not_know():
    raw = json.dumps({**_stored().to_json(), "addedByJava": [1, 2]}).encode()
    request = hitl.HitlRequest.decode(raw)
    assert request is not None
    assert json.loads(request.encode()) == json.loads(raw)


@pytest.mark.parametrize(
    "changes",
    [{"status": "bogus"}, {"requestId": 7}, {"createdAt": "1"}, {"tenantId": 3}, {"context": []}],
)
def test_a_malformed_stored_request_is_none(changes):
    assert _stored(**changes) is None


def test_sensitive_actions_follow_the_table_order():
    assert sensitive_actions("hello") == []
    assert sensitive_actions("Please MERGE") == ["git_merge"]
    assert sensitive_actions("배포 and 메일 and merge") == ["git_merge", "send_email", "deploy"]
    assert sensitive_actions("Deploy the e-mail? no: email") == ["send_email", "deploy"]


def test_endings_send_the_contract_events():
    kinds = {
        "completed": ["end"],
        "rejected": ["error"],
        "timeout": ["failed", "error", "end"],
        "internal": ["error"],
        "shutdown": ["error"],
    }
    for kind, expected in kinds.items():
        ending = endings.Ending(kind, reason="r", request_id="req_1")  # type: ignore[arg-type]
        assert [name for name, _ in ending.events("sess_1")] == expected
    assert endings.timed_out("req_1").events("s")[2][1]["status"] == "failed"
    assert endings.rejected("why").events("s")[0][1]["errorType"] == "RejectionError"


def test_ids():
    assert new_session_id().startswith("sess_") and len(new_session_id()) == 37
    assert new_request_id().startswith("req_") and len(new_request_id()) == 36
    assert check_path_id("req_AZ-09_x", "id") == "req_AZ-09_x"
    for bad in ("", "a/b", "a.b", "x" * 129, "ü"):
        with pytest.raises(ValidationError):
            check_path_id(bad, "id")


def test_settings_defaults_follow_the_contract():
    settings = Settings.from_env({})
    assert (settings.host, settings.port, settings.workers) == ("0.0.0.0", 9000, 1)
    assert settings.redis_url is None and settings.secret == ""
    assert settings.heartbeat_seconds == 15 and settings.hitl_timeout_seconds == 300
    assert (
        settings.request_ttl_seconds,
        settings.session_ttl_seconds,
        settings.signal_ttl_seconds,
    ) == (1800, 3600, 300)
    assert settings.event_delay_seconds == 0.05 and settings.max_streams_per_user == 20
    assert settings.max_sessions == 10000 and settings.max_body_bytes == 65536
    assert settings.send_timeout_seconds == 30 and settings.shutdown_grace_seconds == 10
    assert (
        settings.metrics is False
        and settings.log_level == "INFO"
        and settings.jwt_leeway_seconds == 30
    )


def test_settings_read_the_environment_and_cli_wins():
    env = {"AURA_PORT": "9100", "REDIS_URL": "", "SECRET_KEY": "a" * 32, "JWT_SECRET": "b" * 32,
           "AURA_METRICS": "1", "AURA_HEARTBEAT_SECONDS": "2.5", "AURA_LOG_LEVEL": "debug"}  # fmt: skip
    settings = Settings.from_env(env, port=9200, host=None)
    assert settings.port == 9200 and settings.host == "0.0.0.0"
    assert settings.redis_url is None and settings.secret == "a" * 32
    assert (
        settings.metrics is True
        and settings.heartbeat_seconds == 2.5
        and settings.log_level == "DEBUG"
    )
    assert Settings.from_env({"JWT_SECRET": "b" * 32}).secret == "b" * 32


@pytest.mark.parametrize(
    "env", [{"AURA_PORT": "x"}, {"AURA_PORT": "-1"}, {"AURA_HEARTBEAT_SECONDS": "0"}, {"AURA_METRICS": "maybe"},
            {"AURA_WORKERS": "0"}, {"AURA_HITL_TIMEOUT_SECONDS": "nan"}]
)  # fmt: skip
def test_bad_settings_are_refused_by_name(env):
    with pytest.raises(ConfigError, match=next(iter(env))):
        Settings.from_env(env)


def test_an_editable_schema_is_checked_once_and_a_bad_one_every_time(monkeypatch):
    from jsonschema import Draft202012Validator

    from aura_trio.hitl import edits

    checks = []
    real = Draft202012Validator.check_schema
    monkeypatch.setattr(
        Draft202012Validator, "check_schema", lambda schema: (checks.append(schema), real(schema))
    )
    schema = {"type": "object", "properties": {"step": {"const": 7}, "note": {"maxLength": 9}}}
    same = {"properties": {"note": {"maxLength": 9}, "step": {"const": 7}}, "type": "object"}
    assert edits.check_schema(schema) is schema
    assert edits.check_schema(same) is same  # the same JSON: not checked again
    assert len(checks) == 1
    bad = {"type": "object", "properties": {"note": {"maxLength": -1}}}
    for _ in range(2):
        with pytest.raises(ValueError, match="not a valid JSON Schema"):
            edits.check_schema(bad)
    assert len(checks) == 3
    with pytest.raises(ValueError, match="not a valid JSON Schema"):
        edits.check_schema({"enum": {1, 2}})  # not JSON at all


def test_a_read_only_argument_keeps_its_proposed_value():
    from aura_trio.hitl.edits import check_edited_args

    schema = {"properties": {"who": {"type": "string", "readOnly": True}, "n": {}}}
    check_edited_args(schema, {"who": "alice", "n": 9}, {"who": "alice", "n": 1})
    with pytest.raises(ValidationError, match="who cannot be edited"):
        check_edited_args(schema, {"who": "mallory", "n": 1}, {"who": "alice", "n": 1})
