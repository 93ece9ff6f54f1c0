"""A Sentinel deployment of real processes: a primary, one replica, three sentinels.

All on loopback ports of their own, each with its own directory (a sentinel
rewrites its config file), all stopped in `finally` (`processes.run_redis`,
`processes.run_sentinel`). Short timeouts: a primary silent for 1 s is down, a
failover is retried after 3 s.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from bench.harness import HOST, RedisServer, sentinel_binary

from .helpers import eventually
from .processes import run_redis, run_sentinel

MASTER = "m"
# A primary whose replicas sync at once (the default waits 5 s for more of them).
PRIMARY = ("--repl-diskless-sync-delay", "0")

requires_sentinel = pytest.mark.skipif(
    sentinel_binary() is None, reason="redis-sentinel is not installed (Debian: redis-sentinel)"
)


@dataclass
class Deployment:
    servers: list[RedisServer]  # the first one started as the primary, the other as its replica
    sentinels: list[RedisServer]

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """`start_server` overrides for Sentinel mode, without REDIS_URL."""
        endpoints = tuple((HOST, sentinel.port) for sentinel in self.sentinels)
        return {
            "redis_url": None,
            "redis_sentinels": endpoints,
            "redis_sentinel_master": MASTER,
            **overrides,
        }

    def primary_port(self) -> int | None:
        """The port the first sentinel that answers names, if any."""
        for sentinel in self.sentinels:
            if sentinel.process.poll() is not None:
                continue
            client = sentinel.client(timeout=1.0)
            try:
                answer = client.execute_command("SENTINEL", "get-master-addr-by-name", MASTER)
            except redis.RedisError:
                continue
            finally:
                client.close()
            if answer:
                return int(answer[1])
        return None

    def server_on(self, port: int) -> RedisServer:
        return next(server for server in self.servers if server.port == port)

    async def promoted(self, old_port: int, within: float = 30.0) -> RedisServer:
        """The new primary, once the sentinels name another than `old_port`."""
        port = await eventually(
            lambda: (p := self.primary_port()) != old_port and p, within=within, step=0.05
        )
        return self.server_on(port)


def _ready(sentinel: RedisServer, replicas: int) -> bool:
    client = sentinel.client(timeout=1.0)
    try:
        others = client.execute_command("SENTINEL", "sentinels", MASTER)
        known = client.execute_command("SENTINEL", "replicas", MASTER)
    except redis.RedisError:
        return False
    finally:
        client.close()
    return len(others) == 2 and len(known) == replicas


def _replicating(replica: RedisServer) -> bool:
    client = replica.client(timeout=1.0)
    try:
        return client.info("replication").get("master_link_status") == "up"
    except redis.RedisError:
        return False
    finally:
        client.close()


@asynccontextmanager
async def sentinel_deployment(
    directory: Path, *, replicas: int = 1, sentinel_ports: list[int | None] | None = None
) -> AsyncIterator[Deployment]:
    """Started and settled: the replicas in sync, every sentinel knowing the other two
    and the replicas (so a failover can be agreed on at once). `sentinel_ports`:
    the sentinels' ports, when the test chose them."""
    ports = sentinel_ports or [None, None, None]
    async with AsyncExitStack() as stack:
        primary = await stack.enter_async_context(run_redis(directory / "primary", *PRIMARY))
        replicas_ = [
            await stack.enter_async_context(
                run_redis(
                    directory / f"replica{n}", *PRIMARY, "--replicaof", HOST, str(primary.port)
                )
            )
            for n in range(replicas)
        ]
        sentinels = [
            await stack.enter_async_context(
                run_sentinel(directory / f"sentinel{n}", primary.port, port=port)
            )
            for n, port in enumerate(ports)
        ]
        for replica in replicas_:
            await eventually(lambda r=replica: _replicating(r), within=15, step=0.05)
        for sentinel in sentinels:
            await eventually(lambda s=sentinel: _ready(s, replicas), within=30, step=0.1)
        yield Deployment([primary, *replicas_], sentinels)
