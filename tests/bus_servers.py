"""Redis servers for the transport tests that conftest's `start_redis` cannot start.

`start_redis` checks readiness with an unauthenticated plain-TCP PING, which a
server with `requirepass`, an ACL user, or TLS only refuses; these wait for the
port (or socket) to accept instead. Loopback only, ports the OS handed out.
"""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from aura_trio.embedded_redis import find_server_binary
from bench.harness import pick_port as free_port


@dataclass
class Launched:
    """A redis-server started by :func:`launch_redis`; :meth:`restart` keeps its options."""

    directory: Path
    port: int
    options: tuple[str, ...]
    process: subprocess.Popen[bytes]

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)

    def restart(self) -> None:
        """SIGKILL it and start it again on the same port (its data is gone)."""
        self.kill()
        self.process = _spawn(self.directory, self.options)
        _wait_until_accepting(self.port, self.process)


def launch_redis(
    directory: Path, *options: str, port: int | None = None, tls: bool = False
) -> Launched:
    """redis-server on 127.0.0.1:`port` with `options`, once it accepts connections.

    `tls`: the port speaks TLS only (`--port 0 --tls-port port`); the options must
    then name the certificate files.
    """
    port = port or free_port()
    listen = ("--port", "0", "--tls-port", str(port)) if tls else ("--port", str(port))
    full = (*listen, *options)
    process = _spawn(directory, full)
    _wait_until_accepting(port, process)
    return Launched(directory, port, full, process)


def _spawn(directory: Path, options: tuple[str, ...]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [find_server_binary(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(directory), "--logfile", str(directory / "redis.log"), *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _wait_until_accepting(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


@dataclass(frozen=True)
class Certificates:
    ca: Path
    cert: Path
    key: Path


def make_certificates(
    directory: Path, name: str = "test", names: str = "IP:127.0.0.1,DNS:localhost"
) -> Certificates:
    """A throwaway CA and a server certificate it signed, for `names` (subjectAltName)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / f"{name}-ca.crt", directory / f"{name}-ca.key"
    cert, key = directory / f"{name}-server.crt", directory / f"{name}-server.key"
    request, extensions = directory / f"{name}-server.csr", directory / f"{name}-server.ext"
    extensions.write_text(
        f"subjectAltName={names}\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2",
             "-subj", f"/CN={name} test CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    _openssl("req", *ec, "-keyout", key, "-out", request, "-subj", "/CN=localhost")
    _openssl("x509", "-req", "-in", request, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
             "-out", cert, "-days", "2", "-extfile", extensions)  # fmt: skip
    return Certificates(ca, cert, key)


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=30)
