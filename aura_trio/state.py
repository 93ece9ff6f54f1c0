"""What every handler and session of one app shares."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import trio

from .agents import Agent
from .auth import Authenticator
from .bus.redis_bus import RedisBus
from .hitl.liveness import Liveness
from .hitl.store import HitlStore
from .metrics import Metrics
from .sessions.grain_clock import GrainClock
from .sessions.registry import SessionRegistry
from .settings import Settings

log = logging.getLogger(__name__)


@dataclass
class AuraState:
    """The pieces of one app, and what its lifespan and shutdown do with them."""

    settings: Settings
    agent: Agent
    bus: RedisBus
    store: HitlStore
    registry: SessionRegistry
    metrics: Metrics
    liveness: Liveness
    authenticator: Authenticator
    heartbeat_clock: GrainClock
    bus_scope: trio.CancelScope = field(default_factory=trio.CancelScope)

    async def drain(self, within: float) -> None:
        """End every open stream with `ServerShutdown` and wait up to `within` seconds."""
        self.registry.drain()
        with trio.move_on_after(within):
            await self.registry.wait_empty()
        if len(self.registry):
            log.warning("%d streams still open after the shutdown grace", len(self.registry))
