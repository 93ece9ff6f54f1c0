"""Authentication (docs/contract.md#authentication) over real HTTP: every bad token is a 401 in the envelope.

In-process servers; each async test is bounded by conftest's default 60 s.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import shutil
import time
from pathlib import Path

import jwt
import pytest
import trio

from aura_trio import Settings, create_app
from aura_trio.cli import main
from aura_trio.errors import AuthError
from aura_trio.settings import ConfigError

from .helpers import SECRET, auth, stream_target, token

ROUTES = [
    ("GET", stream_target("hi")),
    ("POST", "/aura/test/stream"),
    ("GET", "/aura/hitl/requests/req_x"),
    ("GET", "/aura/hitl/signals/sess_x"),
    ("POST", "/aura/hitl/approve/req_x"),
    ("POST", "/aura/hitl/reject/req_x"),
]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jjwt_style(claims: dict, secret: str = SECRET, header: dict | None = None) -> str:
    """A token built the way Java's jjwt builds it: no `typ`, HMAC-SHA256 over UTF-8 bytes."""
    head = _b64(json.dumps(header or {"alg": "HS256"}, separators=(",", ":")).encode())
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    signature = hmac.new(secret.encode("utf-8"), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(signature)}"


def _claims(**overrides) -> dict:
    now = int(time.time())
    claims = {"sub": "alice", "tenant_id": "t1", "iat": now, "exp": now + 600}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _bad_tokens() -> dict[str, str]:
    now = int(time.time())
    valid = token()
    head, body, signature = valid.split(".")
    none_head = _b64(b'{"alg":"none"}')
    return {
        "expired": jwt.encode(_claims(exp=now - 120, iat=now - 600), SECRET, algorithm="HS256"),
        "not yet valid": jwt.encode(_claims(nbf=now + 600), SECRET, algorithm="HS256"),
        "issued in the future": jwt.encode(_claims(iat=now + 600), SECRET, algorithm="HS256"),
        "bad signature": jwt.encode(
            _claims(), "another-secret-of-at-least-32-bytes!!", algorithm="HS256"
        ),
        "alg none": jwt.encode(_claims(), None, algorithm="none"),
        "alg none, signature kept": f"{none_head}.{body}.{signature}",
        "HS512": jwt.encode(_claims(), SECRET, algorithm="HS512"),
        "missing sub": jwt.encode(_claims(sub=None), SECRET, algorithm="HS256"),
        "numeric sub": jjwt_style(_claims(sub=12345)),
        "missing exp": jjwt_style(_claims(exp=None)),
        "garbage": "not-a-token",
        "truncated": valid[:-5],
        "tampered payload": f"{head}.{_b64(json.dumps(_claims(sub='admin')).encode())}.{signature}",
    }


@pytest.mark.parametrize("case", list(_bad_tokens()))
async def test_bad_token_is_401_on_every_route(aura, case):
    bad = _bad_tokens()[case]
    for method, target in ROUTES:
        response = await aura.request(method, target, headers={"Authorization": f"Bearer {bad}"})
        assert response.status == 401, (case, target)
        assert response.headers["www-authenticate"].startswith("Bearer")
        body = response.json()
        assert (
            body["status"] == "ERROR"
            and body["success"] is False
            and body["errorCode"] == "UNAUTHORIZED"
        )
        assert bad not in response.body.decode() and SECRET not in response.body.decode()


async def test_missing_or_malformed_header_is_401(aura):
    for headers in (
        {},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer"},
        {"Authorization": token()},
    ):
        for method, target in ROUTES:
            response = await aura.request(method, target, headers=headers)
            assert response.status == 401, (headers, target)
            assert response.headers["www-authenticate"].startswith("Bearer")


async def test_identity_header_mismatch_is_403(aura):
    for headers in (
        {**auth("alice", "t1"), "X-Tenant-ID": "t2"},
        {**auth("alice", "t1"), "X-User-ID": "bob"},
    ):
        for method, target in ROUTES:
            response = await aura.request(method, target, headers=headers)
            assert response.status == 403, (headers, target)
            assert response.json()["errorCode"] == "FORBIDDEN"


async def test_matching_identity_headers_and_leeway_are_accepted(aura):
    now = int(time.time())
    slightly_expired = jwt.encode(_claims(exp=now - 10, iat=now - 600), SECRET, algorithm="HS256")
    headers = {
        "Authorization": f"Bearer {slightly_expired}",
        "X-Tenant-ID": "t1",
        "X-User-ID": "alice",
    }
    async with aura.stream("hi", headers=headers) as stream:
        assert stream.status == 200
        await stream.read_body()


async def test_a_header_never_chooses_the_tenant_of_a_token_without_one(aura, raw_redis):
    """Regression: a token without `tenant_id` plus `X-Tenant-ID: t1` could read and
    approve tenant t1's pending request (the tenant fell back to the header)."""
    async with aura.stream("merge", headers=auth("victim", "t1")) as victim:
        frames = await victim.events_until("hitl")
        request_id = frames[-1].json()["data"]["requestId"]
        intruder = {**auth("mallory", None), "X-Tenant-ID": "t1"}
        assert (
            await aura.request("GET", f"/aura/hitl/requests/{request_id}", headers=intruder)
        ).status == 403
        assert (await aura.approve(request_id, headers=intruder)).status == 403
        no_tenant = auth("mallory", None)
        assert (
            await aura.request("GET", f"/aura/hitl/requests/{request_id}", headers=no_tenant)
        ).status == 404
        assert (await aura.approve(request_id, headers=no_tenant)).status == 404
        assert json.loads(raw_redis.get(f"hitl:request:{request_id}"))["status"] == "pending"
        assert (await aura.approve(request_id, headers=auth("victim", "t1"))).status == 200
        await victim.read_body()


async def test_a_token_without_a_tenant_acts_in_no_tenant_only_for_its_own_user(aura, raw_redis):
    own = auth("alice", None)
    async with aura.stream("merge", headers=own) as stream:
        frames = await stream.events_until("hitl")
        request_id = frames[-1].json()["data"]["requestId"]
        assert json.loads(raw_redis.get(f"hitl:request:{request_id}"))["tenantId"] is None
        assert (await aura.approve(request_id, headers=auth("bob", None))).status == 404
        assert (await aura.approve(request_id, headers=auth("bob", "t1"))).status == 404
        assert (await aura.approve(request_id, headers=own)).status == 200
        await stream.read_body()


async def test_behind_a_trusted_gateway_the_header_names_the_tenant(start_server, raw_redis):
    aura = await start_server(trust_tenant_header=True)
    headers = {**auth("alice", None), "X-Tenant-ID": "from-gateway"}
    async with aura.stream("merge", headers=headers) as stream:
        frames = await stream.events_until("hitl")
        request_id = frames[-1].json()["data"]["requestId"]
        stored = json.loads(raw_redis.get(f"hitl:request:{request_id}"))
        assert stored["tenantId"] == "from-gateway"
        assert (await aura.approve(request_id, headers=auth("bob", "t1"))).status == 404
        # A token's own tenant still wins over the header.
        mismatched = {**auth("bob", "t1"), "X-Tenant-ID": "from-gateway"}
        assert (await aura.approve(request_id, headers=mismatched)).status == 403
        colleague = {**auth("carol", None), "X-Tenant-ID": "from-gateway"}
        assert (await aura.approve(request_id, headers=colleague)).status == 200
        await stream.read_body()


async def test_jjwt_style_token_is_accepted(aura):
    headers = {"Authorization": f"Bearer {jjwt_style(_claims(email='a@x.io', role='ADMIN'))}"}
    async with aura.stream("hi", headers=headers) as stream:
        assert stream.status == 200
        assert (await stream.read_body()).endswith(b"data: [DONE]\n\n")


JAVA_MINTER = """
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;
import java.nio.charset.StandardCharsets;
import java.util.Base64;

public class Mint {
    public static void main(String[] args) throws Exception {
        Base64.Encoder b64 = Base64.getUrlEncoder().withoutPadding();
        long now = System.currentTimeMillis() / 1000;
        String header = b64.encodeToString("{\\"alg\\":\\"HS256\\"}".getBytes(StandardCharsets.UTF_8));
        String payload = b64.encodeToString(("{\\"sub\\":\\"alice\\",\\"tenant_id\\":\\"t1\\",\\"role\\":\\"USER\\",\\"iat\\":"
            + now + ",\\"exp\\":" + (now + 600) + "}").getBytes(StandardCharsets.UTF_8));
        Mac mac = Mac.getInstance("HmacSHA256");
        mac.init(new SecretKeySpec(args[0].getBytes(StandardCharsets.UTF_8), "HmacSHA256"));
        byte[] sig = mac.doFinal((header + "." + payload).getBytes(StandardCharsets.UTF_8));
        System.out.print(header + "." + payload + "." + b64.encodeToString(sig));
    }
}
"""


@pytest.mark.skipif(shutil.which("javac") is None, reason="no JDK on this machine")
async def test_token_minted_by_java_is_accepted(aura, tmp_path: Path):
    # Bounded by conftest's default 60 s, which can cancel these (a blocking
    # subprocess.run held the Trio loop: only its own timeouts could fire).
    await trio.Path(tmp_path / "Mint.java").write_text(JAVA_MINTER)
    await trio.run_process(["javac", "Mint.java"], cwd=tmp_path)
    minted = await trio.run_process(
        ["java", "-cp", str(tmp_path), "Mint", SECRET], capture_stdout=True
    )
    java_token = minted.stdout.decode()
    async with aura.stream("hi", headers={"Authorization": f"Bearer {java_token}"}) as stream:
        assert stream.status == 200
        await stream.read_body()


def test_short_secret_is_refused_at_start(redis_server):
    with pytest.raises(ConfigError, match="at least 32"):
        create_app(Settings(redis_url=redis_server.url, secret="x" * 31))
    # 32 bytes of UTF-8 is enough, however few characters that is.
    create_app(Settings(redis_url=redis_server.url, secret="비밀" * 6))


@pytest.fixture
def root_logging_restored():
    """`main()` points the root logger at this test's captured stderr, which is
    closed after it: later tests' log lines would fail to write there."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("root_logging_restored")
def test_serve_without_secret_refuses_and_says_how(monkeypatch, capsys):
    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.delenv("JWT_SECRET", raising=False)
    assert main(["serve", "--port", "0"]) == 2
    message = capsys.readouterr().err
    assert "SECRET_KEY" in message and "--dev" in message
    monkeypatch.setenv("JWT_SECRET", "short")
    assert main(["serve", "--port", "0"]) == 2
    assert "at least 32" in capsys.readouterr().err


@pytest.mark.usefixtures("root_logging_restored")
def test_token_command_signs_with_the_configured_secret(monkeypatch, capsys):
    monkeypatch.setenv("SECRET_KEY", SECRET)
    monkeypatch.setenv("JWT_SECRET", "ignored-because-SECRET_KEY-wins-000000")
    assert main(["token", "--sub", "u1", "--tenant", "t9", "--role", "ADMIN", "--ttl", "120"]) == 0
    printed = capsys.readouterr().out.strip()
    claims = jwt.decode(printed, SECRET, algorithms=["HS256"])
    assert claims["sub"] == "u1" and claims["tenant_id"] == "t9" and claims["role"] == "ADMIN"
    assert isinstance(claims["iat"], int) and claims["exp"] - claims["iat"] == 120


async def test_a_remembered_token_is_still_refused_once_it_expires(start_server):
    """Verified tokens are remembered, but their expiry is checked on every use."""
    aura = await start_server(jwt_leeway_seconds=0)
    short = jwt.encode(_claims(exp=int(time.time()) + 2), SECRET, algorithm="HS256")
    headers = {"Authorization": f"Bearer {short}"}
    assert (await aura.request("GET", "/aura/hitl/requests/req_x", headers=headers)).status == 404
    # Not synchronisation: the wall clock must pass the token's expiry (2 s), which
    # is what this test is about.
    await trio.sleep(max(0.0, _claims()["iat"] + 3 - time.time()))
    expired = await aura.request("GET", "/aura/hitl/requests/req_x", headers=headers)
    assert expired.status == 401
    assert expired.json()["message"] == "token expired"


def test_authenticator_remembers_only_valid_tokens_and_a_bounded_number():
    from aura_trio.auth import Authenticator

    authenticator = Authenticator(SECRET, 30, remember=3)
    tokens = [token(f"u{n}") for n in range(5)]
    for n, value in enumerate(tokens):
        assert authenticator({"Authorization": f"Bearer {value}"}).user_id == f"u{n}"
    assert authenticator.remembered == 3
    future = jwt.encode(_claims(nbf=int(time.time()) + 600), SECRET, algorithm="HS256")
    for _ in range(2):
        with pytest.raises(AuthError, match="not yet valid"):
            authenticator({"Authorization": f"Bearer {future}"})
    assert not authenticator.remembers(future)
