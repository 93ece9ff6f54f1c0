"""Prometheus metrics, on a registry per app (several apps can share a test process).

With several worker processes the supervisor sets `PROMETHEUS_MULTIPROC_DIR`, and
any worker's `/metrics` answers for all of them (prometheus-client's multiprocess
mode).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import trio
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

_WAIT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_LAG_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """What an operator watches: sessions, events, HITL waits and decisions, Redis."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.open_sessions = Gauge(
            "aura_open_sessions", "Streams open now", registry=r, multiprocess_mode="livesum"
        )
        self.sessions = Counter("aura_sessions", "Streams ended, by ending", ["ending"], registry=r)
        self.events = Counter("aura_events", "Events sent, by type", ["type"], registry=r)
        self.hitl_wait = Histogram(
            "aura_hitl_wait_seconds",
            "Time from a hitl event to its outcome",
            registry=r,
            buckets=_WAIT_BUCKETS,
        )
        self.decisions = Counter(
            "aura_hitl_decisions",
            "HITL requests by outcome: approved, rejected, timeout, cancelled",
            ["kind"],
            registry=r,
        )
        self.redis_subscriptions = Counter(
            "aura_redis_subscriptions",
            "Times the signal subscription was (re-)established; above 1 means reconnects",
            registry=r,
        )
        self.subscriber_lag = Histogram(
            "aura_subscriber_lag_seconds",
            "From the subscriber reading a signal to its session handling it (0: at once)",
            registry=r,
            buckets=_LAG_BUCKETS,
        )
        self._event_counters: dict[str, Counter] = {}
        # Per process (not summed across workers): what a leak would show in.
        ProcessCollector(registry=r)
        r.register(_RuntimeCollector())

    def event_sent(self, event_type: str) -> None:
        counter = self._event_counters.get(event_type)
        if counter is None:
            counter = self._event_counters[event_type] = self.events.labels(event_type)
        counter.inc()

    def render(self) -> bytes:
        """The exposition text; call from the Trio thread (task counts walk its tree)."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)


def live_tasks() -> Iterator[trio.lowlevel.Task]:
    """Every Trio task alive in this run (none outside Trio)."""
    try:
        pending = [trio.lowlevel.current_root_task()]
    except RuntimeError:
        return
    while pending:
        task = pending.pop()
        if task is None:
            continue
        yield task
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)


class _RuntimeCollector(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "aura_trio_tasks", "Trio tasks alive", value=sum(1 for _ in live_tasks())
        )
        yield GaugeMetricFamily(
            "aura_threads",
            "Threads alive (Redis workers, subscriber)",
            value=threading.active_count(),
        )
