"""Configuration read from the environment (docs/contract.md#configuration)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from types import SimpleNamespace

MIN_SECRET_BYTES = 32


class ConfigError(Exception):
    """Raised at start-up when the environment holds an unusable setting."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Every tunable of the service; built by :meth:`from_env`, frozen afterwards."""

    host: str = "0.0.0.0"
    port: int = 9000
    workers: int = 1
    redis_url: str | None = None
    # Sentinel mode when both are set: the primary is asked of these sentinels.
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    redis_sentinel_master: str | None = None
    # Replicas a request or an API decision must reach (WAIT) before it is shown/answered.
    redis_min_replicas: int = 0
    secret: str = ""
    jwt_leeway_seconds: float = 30.0
    heartbeat_seconds: float = 15.0
    hitl_timeout_seconds: float = 300.0
    request_ttl_seconds: int = 1800
    session_ttl_seconds: int = 3600
    signal_ttl_seconds: int = 300
    event_delay_seconds: float = 0.05
    max_streams_per_user: int = 20
    max_sessions: int = 10000
    max_body_bytes: int = 65536
    send_timeout_seconds: float = 30.0
    shutdown_grace_seconds: float = 10.0
    metrics: bool = False
    # Only behind a Gateway that sets X-Tenant-ID itself and drops the client's.
    trust_tenant_header: bool = False
    log_level: str = "INFO"
    # (ours) `module:callable` returning the agent, called with these settings.
    agent: str | None = None
    # (ours) how often every waiting session's stored
    # signal is re-read, the safety net for a PUBLISH nobody received.
    signal_poll_seconds: float = 5.0
    worker_ttl_seconds: int = 15
    # `Origin`s allowed to open a WebSocket (lower case, no trailing slash); None: any.
    ws_allowed_origins: frozenset[str] | None = None
    keep_alive_seconds: float = 5.0
    redis_timeout_seconds: float = 3.0
    # Command connections per process, whatever the number of sessions (plus one
    # for the subscriber): each is pipelined and shared by every caller.
    redis_connections: int = 2
    # Roles that may read the audit log; its length per tenant (approximate cap).
    audit_roles: tuple[str, ...] = ("ADMIN",)
    audit_max_len: int = 10_000
    # Every this many seconds the collector's young survivors are frozen (0: never).
    gc_freeze_seconds: float = 1.0
    listen_backlog: int = 2048

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Read the environment; keyword overrides (e.g. from the CLI) win when not None."""
        env = os.environ if environ is None else environ
        reader = _Reader(env)
        d = SimpleNamespace(**{f.name: f.default for f in dataclasses.fields(cls)})
        values: dict[str, object] = {
            "host": reader.text("AURA_HOST", d.host),
            "port": reader.integer("AURA_PORT", d.port, minimum=0),
            "workers": reader.integer("AURA_WORKERS", d.workers, minimum=1),
            "redis_url": env.get("REDIS_URL") or None,
            "redis_sentinels": reader.endpoints("REDIS_SENTINELS", default_port=26379),
            "redis_sentinel_master": reader.text("REDIS_SENTINEL_MASTER", "") or None,
            "redis_min_replicas": reader.integer(
                "AURA_REDIS_MIN_REPLICAS", d.redis_min_replicas, minimum=0
            ),
            "secret": env.get("SECRET_KEY") or env.get("JWT_SECRET") or "",
            "jwt_leeway_seconds": reader.number("AURA_JWT_LEEWAY_SECONDS", d.jwt_leeway_seconds),
            "heartbeat_seconds": reader.number(
                "AURA_HEARTBEAT_SECONDS", d.heartbeat_seconds, positive=True
            ),
            "hitl_timeout_seconds": reader.number(
                "AURA_HITL_TIMEOUT_SECONDS", d.hitl_timeout_seconds, positive=True
            ),
            "request_ttl_seconds": reader.integer(
                "AURA_REQUEST_TTL_SECONDS", d.request_ttl_seconds, minimum=1
            ),
            "session_ttl_seconds": reader.integer(
                "AURA_SESSION_TTL_SECONDS", d.session_ttl_seconds, minimum=1
            ),
            "signal_ttl_seconds": reader.integer(
                "AURA_SIGNAL_TTL_SECONDS", d.signal_ttl_seconds, minimum=1
            ),
            "event_delay_seconds": reader.number("AURA_EVENT_DELAY_SECONDS", d.event_delay_seconds),
            "max_streams_per_user": reader.integer(
                "AURA_MAX_STREAMS_PER_USER", d.max_streams_per_user, minimum=1
            ),
            "max_sessions": reader.integer("AURA_MAX_SESSIONS", d.max_sessions, minimum=1),
            "max_body_bytes": reader.integer("AURA_MAX_BODY_BYTES", d.max_body_bytes, minimum=1),
            "send_timeout_seconds": reader.number(
                "AURA_SEND_TIMEOUT_SECONDS", d.send_timeout_seconds, positive=True
            ),
            "shutdown_grace_seconds": reader.number(
                "AURA_SHUTDOWN_GRACE_SECONDS", d.shutdown_grace_seconds
            ),
            "metrics": reader.flag("AURA_METRICS", d.metrics),
            "trust_tenant_header": reader.flag("AURA_TRUST_TENANT_HEADER", d.trust_tenant_header),
            "log_level": reader.text("AURA_LOG_LEVEL", d.log_level).upper(),
            "agent": env.get("AURA_AGENT") or None,
            "signal_poll_seconds": reader.number(
                "AURA_SIGNAL_POLL_SECONDS", d.signal_poll_seconds, positive=True
            ),
            "worker_ttl_seconds": reader.integer(
                "AURA_WORKER_TTL_SECONDS", d.worker_ttl_seconds, minimum=1
            ),
            "redis_connections": reader.integer(
                "AURA_REDIS_CONNECTIONS", d.redis_connections, minimum=1
            ),
            "audit_roles": reader.names("AURA_AUDIT_ROLES", d.audit_roles),
            "audit_max_len": reader.integer("AURA_AUDIT_MAX_LEN", d.audit_max_len, minimum=1),
            "gc_freeze_seconds": reader.number("AURA_GC_FREEZE_SECONDS", d.gc_freeze_seconds),
            "ws_allowed_origins": reader.origins("AURA_WS_ALLOWED_ORIGINS"),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)  # type: ignore[arg-type]
        settings.check_sentinel()
        return settings

    @property
    def sentinel_mode(self) -> bool:
        """Both REDIS_SENTINELS and REDIS_SENTINEL_MASTER are set."""
        return bool(self.redis_sentinels) and self.redis_sentinel_master is not None

    def check_sentinel(self) -> None:
        """Raise :class:`ConfigError` unless the Sentinel settings are both set or both unset,
        and REDIS_URL (kept for password, db and TLS) names no unix socket."""
        if bool(self.redis_sentinels) != (self.redis_sentinel_master is not None):
            given, missing = (
                ("REDIS_SENTINELS", "REDIS_SENTINEL_MASTER")
                if self.redis_sentinels
                else ("REDIS_SENTINEL_MASTER", "REDIS_SENTINELS")
            )
            raise ConfigError(
                f"{given} is set but {missing} is not: Sentinel mode needs both "
                "(the sentinels' host:port list and the monitored primary's name)"
            )
        if self.sentinel_mode and (self.redis_url or "").startswith("unix:"):
            raise ConfigError(
                "REDIS_URL names a unix socket, but in Sentinel mode the primary is a TCP "
                "address the sentinels give (REDIS_URL only lends its password, db and TLS)"
            )

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def check_secret(self) -> None:
        """Raise :class:`ConfigError` unless the HS256 secret is usable."""
        if not self.secret:
            raise ConfigError(
                "no JWT secret: set SECRET_KEY (or JWT_SECRET) to the Auth Server's HS256 secret, "
                f"at least {MIN_SECRET_BYTES} bytes, or run with --dev for an ephemeral one"
            )
        size = len(self.secret.encode("utf-8"))
        if size < MIN_SECRET_BYTES:
            raise ConfigError(
                f"the JWT secret is {size} bytes; HS256 needs at least {MIN_SECRET_BYTES} "
                "(SECRET_KEY / JWT_SECRET)"
            )


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def _raw(self, name: str) -> str | None:
        value = self._env.get(name)
        return value.strip() if value is not None and value.strip() else None

    def text(self, name: str, default: str) -> str:
        return self._raw(name) or default

    def integer(self, name: str, default: int, *, minimum: int) -> int:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not an integer") from None
        if value < minimum:
            raise ConfigError(f"{name}={value} must be at least {minimum}")
        return value

    def number(self, name: str, default: float, *, positive: bool = False) -> float:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a number") from None
        if value < 0 or (positive and value == 0) or value != value:
            raise ConfigError(f"{name}={raw} must be {'> 0' if positive else '>= 0'}")
        return value

    def names(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        """A comma-separated list; empty items dropped."""
        raw = self._raw(name)
        if raw is None:
            return default
        return tuple(item.strip() for item in raw.split(",") if item.strip())

    def endpoints(self, name: str, *, default_port: int) -> tuple[tuple[str, int], ...]:
        """Comma-separated `host:port` (`[v6]:port`; port optional); empty items dropped."""
        raw = self._raw(name)
        if raw is None:
            return ()
        endpoints = []
        for item in (part.strip() for part in raw.split(",")):
            if not item:
                continue
            host, port = item, str(default_port)
            if item.startswith("["):
                host, _, rest = item[1:].partition("]")
                if rest:
                    port = rest.removeprefix(":")
            elif item.count(":") == 1:
                host, port = item.split(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigError(f"{name}: {item!r} is not host:port")
            endpoints.append((host, int(port)))
        if not endpoints:
            raise ConfigError(f"{name}={raw!r} names no sentinel (host:port,...)")
        return tuple(endpoints)

    def origins(self, name: str) -> frozenset[str] | None:
        raw = self._raw(name)
        if raw is None:
            return None
        origins = frozenset(o.strip().rstrip("/").lower() for o in raw.split(",") if o.strip())
        if not origins or any("://" not in o for o in origins):
            raise ConfigError(f"{name}={raw!r} must be comma-separated origins (https://host)")
        return origins

    def flag(self, name: str, default: bool) -> bool:
        raw = self._raw(name)
        if raw is None:
            return default
        if raw.lower() in {"1", "true", "yes", "on"}:
            return True
        if raw.lower() in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"{name}={raw!r} is not a flag (use 1 or 0)")
