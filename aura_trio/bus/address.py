"""Where and how to reach Redis: a URL made into a frozen :class:`RedisAddress`.

The URL is read by redis-py's own `redis.connection.parse_url` (no parser of ours),
so `redis://`, `rediss://` and `unix://` mean here what they mean to redis-py:
user and password in the authority, the db in the path or `?db=`, TLS settings in
the query (`ssl_ca_certs`, `ssl_ca_path`, `ssl_certfile`, `ssl_keyfile`,
`ssl_password`, `ssl_cert_reqs=none|optional|required`, `ssl_check_hostname`,
`ssl_min_version`, `ssl_ciphers`, `ssl_include_verify_flags`,
`ssl_exclude_verify_flags`) and `client_name`. redis-py's pool and socket options
(`socket_timeout`, `socket_connect_timeout`, `max_connections`, ...) are accepted
and ignored: the timeouts are the client's settings. Anything else is refused
with ValueError, so a misspelt TLS option cannot go unnoticed.

A connection does not hold an address but a :data:`Locator`: an async callable it
asks at every (re)connect. :func:`fixed` is the locator of one known address; a
Sentinel locator (asking `SENTINEL get-master-addr-by-name`) fits the same slot
and returns ``address.primary_at(host, port)`` (`bus/sentinel.py`).
"""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redis.connection import parse_url, to_bool

DEFAULT_PORT = 6379

# redis-py options that tune its own pool or sockets: meaningless here, accepted so
# that a URL written for redis-py still works.
_IGNORED_OPTIONS = frozenset(
    {
        "socket_timeout",
        "socket_connect_timeout",
        "socket_keepalive",
        "socket_read_size",
        "retry_on_timeout",
        "retry_on_error",
        "max_connections",
        "health_check_interval",
        "timeout",
        "legacy_responses",
    }
)
_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


@dataclass(frozen=True, slots=True)
class TLSSettings:
    """How to make the TLS session of a `rediss://` address (redis-py's defaults)."""

    ca_certs: str | None = None
    ca_path: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    cert_reqs: ssl.VerifyMode = ssl.CERT_REQUIRED
    check_hostname: bool = True
    min_version: ssl.TLSVersion | None = None
    ciphers: str | None = None
    include_verify_flags: tuple[ssl.VerifyFlags, ...] = ()
    exclude_verify_flags: tuple[ssl.VerifyFlags, ...] = ()

    def context(self) -> ssl.SSLContext:
        """A client context as redis-py's `SSLConnection` makes it.

        Raises:
            ssl.SSLError, OSError: a certificate or key file cannot be loaded.
        """
        context = ssl.create_default_context()
        context.check_hostname = self.check_hostname and self.cert_reqs != ssl.CERT_NONE
        context.verify_mode = self.cert_reqs
        for flag in self.include_verify_flags:
            context.verify_flags |= flag
        for flag in self.exclude_verify_flags:
            context.verify_flags &= ~flag
        if self.certfile or self.keyfile:
            context.load_cert_chain(self.certfile or "", self.keyfile, self.password)
        if self.ca_certs is not None or self.ca_path is not None:
            context.load_verify_locations(cafile=self.ca_certs, capath=self.ca_path)
        if self.min_version is not None:
            context.minimum_version = self.min_version
        if self.ciphers:
            context.set_ciphers(self.ciphers)
        return context


@dataclass(frozen=True, slots=True)
class RedisAddress:
    """One Redis server and how to open a session with it.

    `path` set: a unix socket (host and port unused). `tls` set: TLS over TCP, the
    server's name checked against `host` (if the settings say so). The session is
    opened with `AUTH [username] password` if a password is given, `SELECT db` if
    db is not 0, and `CLIENT SETNAME client_name` if one is given. `primary_only`
    (Sentinel's addresses): `ROLE` is asked too, and a replica refused.
    """

    host: str = "localhost"
    port: int = DEFAULT_PORT
    path: str | None = None
    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    db: int = 0
    tls: TLSSettings | None = None
    client_name: str | None = None
    primary_only: bool = False

    def at(self, host: str, port: int) -> RedisAddress:
        """The same credentials, db and TLS settings on another server."""
        return dataclasses.replace(self, host=host, port=port, path=None)

    def primary_at(self, host: str, port: int) -> RedisAddress:
        """:meth:`at`, where a connection must find a primary (Sentinel's answer)."""
        return dataclasses.replace(self.at(host, port), primary_only=True)

    def describe(self) -> str:
        """Where, for logs and errors: never the password."""
        if self.path is not None:
            return f"unix:{self.path}"
        scheme = "rediss" if self.tls is not None else "redis"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}/{self.db}"


Locator = Callable[[], Awaitable[RedisAddress]]
"""Asked at every (re)connect for the server to connect to; may raise StoreUnavailable."""


def fixed(address: RedisAddress) -> Locator:
    """The locator of one known address."""

    async def locate() -> RedisAddress:
        return address

    return locate


AddressLike = RedisAddress | str | Locator
"""A URL, an address, or a locator asked at every (re)connect."""


def as_locator(address: AddressLike) -> Locator:
    """The locator `address` stands for (a URL is parsed here, once)."""
    if isinstance(address, str):
        return fixed(parse_redis_url(address))
    if isinstance(address, RedisAddress):
        return fixed(address)
    return address


def parse_redis_url(url: str) -> RedisAddress:
    """The address a `redis://`, `rediss://` or `unix://` URL names.

    Raises:
        ValueError: not such a URL, or an option this transport does not know.
    """
    options: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
    connection_class = options.pop("connection_class", None)
    tls_options = {k: options.pop(k) for k in list(options) if k.startswith("ssl_")}
    for name in _IGNORED_OPTIONS:
        options.pop(name, None)
    protocol = options.pop("protocol", 2)
    if protocol != 2:
        raise ValueError(f"only RESP2 is spoken here, not protocol={protocol}")
    known = {field.name for field in dataclasses.fields(RedisAddress)} - {"primary_only"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown option(s) in the Redis URL: {', '.join(unknown)}")
    tls = None
    if connection_class is not None and connection_class.__name__ == "SSLConnection":
        tls = _tls_settings(tls_options)
    elif tls_options:
        raise ValueError(f"TLS options in a URL without TLS: {', '.join(sorted(tls_options))}")
    return RedisAddress(**options, tls=tls)


def _tls_settings(options: dict[str, Any]) -> TLSSettings:
    reqs = options.pop("ssl_cert_reqs", "required")
    if reqs not in _CERT_REQS:
        raise ValueError(f"ssl_cert_reqs must be one of {', '.join(_CERT_REQS)}, not {reqs!r}")
    min_version = options.pop("ssl_min_version", None)
    # A bool already with redis-py's parsers, a string with older ones.
    check_hostname = to_bool(options.pop("ssl_check_hostname", True))  # type: ignore[no-untyped-call]
    settings = TLSSettings(
        ca_certs=options.pop("ssl_ca_certs", None),
        ca_path=options.pop("ssl_ca_path", None),
        certfile=options.pop("ssl_certfile", None),
        keyfile=options.pop("ssl_keyfile", None),
        password=options.pop("ssl_password", None),
        cert_reqs=_CERT_REQS[reqs],
        check_hostname=check_hostname is not False,
        min_version=None if min_version is None else ssl.TLSVersion(int(min_version)),
        ciphers=options.pop("ssl_ciphers", None),
        include_verify_flags=tuple(options.pop("ssl_include_verify_flags", ())),
        exclude_verify_flags=tuple(options.pop("ssl_exclude_verify_flags", ())),
    )
    if options:
        raise ValueError(f"unsupported TLS option(s) in the Redis URL: {', '.join(options)}")
    return settings
