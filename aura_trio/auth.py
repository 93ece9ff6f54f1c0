"""HS256 bearer tokens: who is calling, and for which tenant (docs/contract.md#authentication)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import jwt

from .errors import AuthError, ForbiddenError

ALGORITHM = "HS256"


@dataclass(frozen=True, slots=True)
class Principal:
    """The verified caller: the token's claims after the header checks."""

    user_id: str
    tenant_id: str | None
    email: str | None = None
    role: str | None = None


class HeaderLookup(Protocol):
    def get(self, key: str) -> str | None: ...


def authenticate(
    headers: HeaderLookup, secret: str, leeway: float, *, trust_tenant_header: bool = False
) -> Principal:
    """Verify the bearer token and the identity headers.

    The tenant is the token's `tenant_id`. A token without one acts in no tenant,
    unless `trust_tenant_header` (a Gateway sets `X-Tenant-ID` itself and drops the
    client's): then the header names it.

    Raises:
        AuthError: no token, or one that is not a valid, current HS256 token with a `sub`.
        ForbiddenError: `X-Tenant-ID` or `X-User-ID` names someone the token does not.
    """
    token = _bearer_token(headers.get("Authorization"))
    return _principal(_decode(token, secret, leeway), headers, trust_tenant_header)


class Authenticator:
    """:func:`authenticate` for one secret, remembering the tokens it has verified.

    A token's signature and claims are checked once; later uses of the same token
    (a client's stream, then its approvals) only re-check its time claims. The
    newest `remember` tokens are kept.
    """

    def __init__(
        self,
        secret: str,
        leeway: float,
        *,
        trust_tenant_header: bool = False,
        remember: int = 4096,
    ) -> None:
        self._secret = secret
        self._leeway = leeway
        self._trust_tenant_header = trust_tenant_header
        self._remember = remember
        self._verified: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def __call__(self, headers: HeaderLookup) -> Principal:
        token = _bearer_token(headers.get("Authorization"))
        claims = self._verified.get(token)
        if claims is None:
            claims = _decode(token, self._secret, self._leeway)
            self._verified[token] = claims
            if len(self._verified) > self._remember:
                self._verified.popitem(last=False)
        else:
            self._verified.move_to_end(token)
            _check_times(claims, self._leeway)
        return _principal(claims, headers, self._trust_tenant_header)

    @property
    def remembered(self) -> int:
        """How many verified tokens are remembered now (at most `remember`)."""
        return len(self._verified)

    def remembers(self, token: str) -> bool:
        """Whether `token` is remembered as verified."""
        return token in self._verified


def _check_times(claims: Mapping[str, Any], leeway: float) -> None:
    """The time claims of an already verified token, as PyJWT checks them."""
    now = time.time()
    if now > claims["exp"] + leeway:
        raise AuthError("token expired")
    for name in ("nbf", "iat"):
        if name in claims and claims[name] > now + leeway:
            raise AuthError("token not yet valid")


def _principal(
    claims: Mapping[str, Any], headers: HeaderLookup, trust_tenant_header: bool
) -> Principal:
    user_id = claims["sub"]
    tenant = _optional_text(claims, "tenant_id")
    header_tenant = headers.get("X-Tenant-ID")
    if tenant is None and trust_tenant_header:
        tenant = header_tenant
    elif header_tenant is not None and header_tenant != tenant:
        # A header the client sets never chooses the tenant.
        raise ForbiddenError("X-Tenant-ID does not match the token's tenant")
    header_user = headers.get("X-User-ID")
    if header_user is not None and header_user != user_id:
        raise ForbiddenError("X-User-ID does not match the token's subject")
    return Principal(
        user_id=user_id,
        tenant_id=tenant,
        email=_optional_text(claims, "email"),
        role=_optional_text(claims, "role"),
    )


def mint_token(
    secret: str,
    *,
    sub: str,
    tenant_id: str | None = None,
    role: str | None = None,
    email: str | None = None,
    ttl_seconds: int = 3600,
) -> str:
    """A token shaped like the Auth Server's (integer `iat`/`exp`)."""
    now = int(time.time())
    claims: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + ttl_seconds}
    for name, value in (("tenant_id", tenant_id), ("role", role), ("email", email)):
        if value is not None:
            claims[name] = value
    return jwt.encode(claims, secret.encode("utf-8"), algorithm=ALGORITHM)


def _bearer_token(value: str | None) -> str:
    if not value:
        raise AuthError("missing Authorization header")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("Authorization must be 'Bearer <token>'")
    return token.strip()


def _decode(token: str, secret: str, leeway: float) -> dict[str, Any]:
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            secret.encode("utf-8"),
            algorithms=[ALGORITHM],
            leeway=leeway,
            options={"require": ["exp", "sub"]},
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("token expired") from None
    except jwt.ImmatureSignatureError:
        raise AuthError("token not yet valid") from None
    except jwt.InvalidTokenError as error:
        raise AuthError(f"invalid token: {_describe(error)}") from None
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise AuthError("invalid token: sub must be a non-empty string")
    return claims


def _describe(error: jwt.InvalidTokenError) -> str:
    # PyJWT's messages never contain the token or the key, only what was wrong.
    return str(error) or type(error).__name__


def _optional_text(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise AuthError(f"invalid token: {name} must be a string")
    return str(value)
