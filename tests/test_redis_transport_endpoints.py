"""The Trio-native Redis client over TLS (`rediss://`) and unix sockets (`unix://`).

Rules as in test_redis_transport.py: loopback only, free ports, real
redis-server processes of the test's own, a `trio.fail_after` bound on each test.
The certificates are made here with openssl (a throwaway CA, a server
certificate for 127.0.0.1 and localhost), in tmp_path.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import trio

from aura_trio.bus.client import open_redis_client
from aura_trio.bus.errors import TransportError
from aura_trio.bus.subscriber import serve_subscriber
from bench.harness import start_redis

from .bus_servers import Certificates, Launched, launch_redis, make_certificates
from .helpers import eventually


@pytest.fixture
def certificates(tmp_path: Path) -> Certificates:
    return make_certificates(tmp_path / "tls")


@pytest.fixture
def tls_redis(tmp_path: Path, certificates: Certificates) -> Iterator[Launched]:
    server = launch_redis(
        tmp_path,
        "--tls-cert-file", str(certificates.cert),
        "--tls-key-file", str(certificates.key),
        "--tls-ca-cert-file", str(certificates.ca),
        "--tls-auth-clients", "no",
        tls=True,
    )  # fmt: skip
    yield server
    server.kill()


async def test_rediss_with_the_servers_ca(tls_redis: Launched, certificates: Certificates) -> None:
    url = f"rediss://127.0.0.1:{tls_redis.port}/1?ssl_ca_certs={certificates.ca}"
    got: list[tuple[bytes, bytes]] = []
    async with open_redis_client(url) as client, trio.open_nursery() as nursery:
        await nursery.start(
            partial(
                serve_subscriber,
                url,
                "tls:*",
                on_message=lambda channel, payload: got.append((channel, payload)),
                on_subscribed=lambda: None,
                on_lost=lambda error: None,
            )
        )
        assert await client.execute("SET", "tls:k", "over TLS") == b"OK"
        assert await client.execute("GET", "tls:k") == b"over TLS"
        assert await client.transaction([("INCR", "tls:n"), ("INCR", "tls:n")]) == [1, 2]
        await client.execute("PUBLISH", "tls:channel", "hello")
        await eventually(lambda: got == [(b"tls:channel", b"hello")])
        nursery.cancel_scope.cancel()


async def test_rediss_with_a_wrong_ca_fails_as_store_unavailable(
    tls_redis: Launched, tmp_path: Path
) -> None:
    other = make_certificates(tmp_path / "other", name="other")
    url = f"rediss://127.0.0.1:{tls_redis.port}/0?ssl_ca_certs={other.ca}"
    async with open_redis_client(url, timeout=2.0) as client:
        with trio.fail_after(1):
            with pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED"):
                await client.execute("PING")
            with pytest.raises(TransportError):  # and fast, while it keeps trying
                await client.execute("PING")
    # Without verification (ssl_cert_reqs=none) the same server is reachable.
    unchecked = f"rediss://127.0.0.1:{tls_redis.port}/0?ssl_cert_reqs=none"
    async with open_redis_client(unchecked) as client:
        assert await client.execute("PING") == b"PONG"


async def test_rediss_checks_the_host_name(tmp_path: Path) -> None:
    elsewhere = make_certificates(tmp_path / "elsewhere", names="DNS:elsewhere.test")
    server = launch_redis(
        tmp_path,
        "--tls-cert-file", str(elsewhere.cert),
        "--tls-key-file", str(elsewhere.key),
        "--tls-ca-cert-file", str(elsewhere.ca),
        "--tls-auth-clients", "no",
        tls=True,
    )  # fmt: skip
    url = f"rediss://127.0.0.1:{server.port}/0?ssl_ca_certs={elsewhere.ca}"
    try:
        async with open_redis_client(url, timeout=2.0) as client:
            with pytest.raises(TransportError, match="mismatch"):
                await client.execute("PING")
        async with open_redis_client(f"{url}&ssl_check_hostname=false") as client:
            assert await client.execute("PING") == b"PONG"
    finally:
        server.kill()


async def test_unix_socket(tmp_path: Path) -> None:
    directory = Path(tempfile.mkdtemp(prefix="aura-bus-", dir="/tmp"))  # paths ≤ 107 bytes
    path = directory / "redis.sock"
    server = start_redis(tmp_path, "--unixsocket", str(path), "--unixsocketperm", "700")
    try:
        async with open_redis_client(f"unix://{path}?db=2") as client:
            assert await client.execute("SET", "unix:k", "v") == b"OK"
            info = await client.execute("CLIENT", "INFO")
            assert b" db=2 " in info and str(path).encode() in info
        assert server.client().get("unix:k") is None  # db 0
    finally:
        server.kill()
        shutil.rmtree(directory, ignore_errors=True)
