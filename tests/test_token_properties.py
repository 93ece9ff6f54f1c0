"""Hypothesis: a token that was tampered with, cut, re-signed or re-algorithmed is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import jwt
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from aura_trio.auth import authenticate
from aura_trio.errors import AuthError

from .helpers import SECRET, token

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
VALID = token("alice", "t1", ttl_seconds=3600)


def _refused(candidate: str) -> None:
    with pytest.raises(AuthError):
        authenticate({"Authorization": f"Bearer {candidate}"}, SECRET, 30)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_the_untouched_token_is_accepted():
    assert authenticate({"Authorization": f"Bearer {VALID}"}, SECRET, 30).user_id == "alice"


@PROPERTY
@given(position=st.integers(min_value=0), replacement=st.characters(codec="ascii"))
def test_any_changed_character_is_refused(position, replacement):
    index = position % len(VALID)
    assume(VALID[index] != replacement)
    _refused(VALID[:index] + replacement + VALID[index + 1 :])


@PROPERTY
@given(cut=st.integers(min_value=1, max_value=len(VALID)))
def test_any_truncation_is_refused(cut):
    _refused(VALID[: len(VALID) - cut])


@PROPERTY
@given(key=st.binary(min_size=1, max_size=80))
def test_resigned_with_another_key_is_refused(key):
    assume(key != SECRET.encode())
    head, body, _ = VALID.split(".")
    signature = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    _refused(f"{head}.{body}.{_b64(signature)}")


@PROPERTY
@given(
    alg=st.sampled_from(
        ["none", "None", "NONE", "HS384", "HS512", "hs256", "RS256", "ES256", "PS256", ""]
    )
    | st.text(max_size=10),
    resign=st.booleans(),
)
def test_any_other_algorithm_is_refused(alg, resign):
    assume(alg != "HS256")
    _, body, signature = VALID.split(".")
    head = _b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    if resign and alg in ("HS384", "HS512"):
        digest = hashlib.sha384 if alg == "HS384" else hashlib.sha512
        signature = _b64(hmac.new(SECRET.encode(), f"{head}.{body}".encode(), digest).digest())
    elif resign:
        signature = ""
    _refused(f"{head}.{body}.{signature}")


@PROPERTY
@given(
    claims=st.dictionaries(
        st.sampled_from(["sub", "exp", "iat", "nbf", "tenant_id"]),
        st.none() | st.integers() | st.text(max_size=5),
    )
)
def test_payload_swapped_under_the_old_signature_is_refused(claims):
    head, body, signature = VALID.split(".")
    new_body = _b64(json.dumps(claims).encode())
    assume(new_body != body)
    _refused(f"{head}.{new_body}.{signature}")


@PROPERTY
@given(garbage=st.text(max_size=300))
def test_arbitrary_text_is_refused(garbage):
    assume(garbage.strip() != VALID)
    try:
        jwt.decode(garbage, SECRET, algorithms=["HS256"])
    except Exception:
        _refused(garbage)
    else:
        raise AssertionError("hypothesis built a valid token by chance")
