"""Running nginx with the committed Gateway config (deploy/gateway/nginx.conf) for a test."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import trio

from aura_trio import client
from bench.harness import PortClash, pick_port

from .helpers import HOST, auth, eventually

CONFIG = Path(__file__).resolve().parent.parent / "deploy" / "gateway" / "nginx.conf"
# Debian and the nginx.org packages put it in sbin, which is not on a user's PATH.
_PLACES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")
_TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def find_nginx() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    return next((place for place in _PLACES if os.access(place, os.X_OK)), None)


def _replace(text: str, old: str, new: str, count: int) -> str:
    """`text` with `old` replaced; it must occur exactly `count` times (no silent drift)."""
    assert text.count(old) == count, f"{old!r} occurs {text.count(old)}x in {CONFIG}, not {count}x"
    return text.replace(old, new)


def render_config(*, listen_port: int, upstream_port: int, directory: Path) -> str:
    """The committed config with only addresses and writable paths changed.

    Everything that decides routing and streaming (locations, `proxy_pass`, headers,
    buffering, timeouts) is used as committed. One directive is added: nginx ignores
    the upstream's `X-Accel-Buffering: no`, so that only the config's own settings
    can make a stream arrive as it is written.
    """
    text = CONFIG.read_text()
    text = _replace(text, "listen 8080;", f"listen 127.0.0.1:{listen_port};", 1)
    text = _replace(text, "server aura:9000;", f"server 127.0.0.1:{upstream_port};", 2)
    extra = [f"{name}_temp_path {directory / name};" for name in _TEMP_PATHS]
    extra.append("proxy_ignore_headers X-Accel-Buffering;")
    return _replace(text, "\nhttp {\n", "\nhttp {\n    " + "\n    ".join(extra) + "\n", 1)


@dataclass
class Gateway:
    """A running nginx; the shortcuts speak the Gateway's `/api/...` paths."""

    port: int
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stream(
        self, message: str, *, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> AbstractAsyncContextManager[client.SSEStream]:
        target = f"/api/aura/test/stream?message={quote(message)}"
        return client.open_sse(HOST, self.port, target, headers=headers or auth(), **kwargs)

    async def request(
        self, method: str, target: str, *, headers: dict[str, str] | None = None, body: Any = None
    ) -> client.HttpResponse:
        headers = auth() if headers is None else headers
        return await client.request(HOST, self.port, method, target, headers=headers, body=body)


async def _start_nginx(binary: str, directory: Path, config: Path, log_path: Path) -> trio.Process:
    main = [f"daemon off; pid {directory / 'nginx.pid'};"]
    if os.geteuid() == 0:  # else the workers would run as `nobody`
        main.append("user root;")
    command = [binary, "-p", str(directory), "-e", str(log_path), "-c", str(config)]
    with log_path.open("wb") as log_file:
        return await trio.lowlevel.open_process(
            [*command, "-g", " ".join(main)], stdout=log_file, stderr=log_file
        )


async def _bound(process: trio.Process, directory: Path, log_path: Path) -> str:
    """What nginx is doing: "bound" once its pid file names it (it writes the file
    after binding its sockets), "taken" if its port was taken, "" until then."""
    pid_file = trio.Path(directory / "nginx.pid")
    if await pid_file.exists() and (await pid_file.read_text()).strip() == str(process.pid):
        return "bound"
    log = await trio.Path(log_path).read_text()
    if "Address already in use" in log:
        return "taken"
    if process.poll() is not None:
        raise RuntimeError(f"nginx exited with {process.returncode}: {log}")
    return ""


async def _stop(process: trio.Process) -> None:
    with trio.CancelScope(shield=True):
        process.terminate()  # SIGTERM: nginx's fast shutdown
        with trio.move_on_after(5):
            await process.wait()
        if process.poll() is None:
            process.kill()
            await process.wait()


@asynccontextmanager
async def run_gateway(
    binary: str, directory: Path, *, upstream_port: int
) -> AsyncIterator[Gateway]:
    """nginx in the foreground as the current user, everything it writes in `directory`.

    It listens on a port `bench.harness.pick_port` chose, outside the ephemeral range;
    if nginx still cannot bind it, it is started again on another one.
    """
    await trio.Path(directory).mkdir(parents=True, exist_ok=True)
    config = directory / "nginx.conf"
    log_path = directory / "nginx.log"
    for _ in range(5):
        listen_port = pick_port()
        await trio.Path(config).write_text(
            render_config(listen_port=listen_port, upstream_port=upstream_port, directory=directory)
        )
        await trio.Path(directory / "nginx.pid").unlink(missing_ok=True)
        process = await _start_nginx(binary, directory, config, log_path)
        try:
            outcome = await eventually(
                partial(_bound, process, directory, log_path), within=10, step=0.02
            )
        except BaseException:
            await _stop(process)
            raise
        if outcome == "bound":
            break
        await _stop(process)
    else:
        raise PortClash("nginx found no free port in 5 tries")
    try:
        yield Gateway(listen_port, log_path)
    finally:
        await _stop(process)
