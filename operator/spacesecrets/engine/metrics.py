"""Prometheus metrics of the operator.

Engine layer (prometheus-client only). One registry per `Metrics`, so tests and several operators in
one process don't collide; `serve()` exposes it on /metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from spacesecrets.core.settings import metrics_address


@dataclass(frozen=True)
class Snapshot:
    """What the per-object gauges show: each space's version; each flow's synced version and
    how many versions it is behind its space (namespace, flow, synced, behind)."""

    spaces: list[tuple[str, int]]
    flows: list[tuple[str, str, int, int]]


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.reconcile_seconds = Histogram(
            "spacesecrets_reconcile_duration_seconds",
            "Time spent reconciling one object.",
            ["kind"],
            registry=r,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.unseal_failures = Counter(
            "spacesecrets_unseal_failures_total",
            "Sealed values or specs rejected, by reason.",
            ["reason"],
            registry=r,
        )
        self.projection_writes = Counter(
            "spacesecrets_projection_writes_total", "Writes of flow targets.", ["kind"], registry=r
        )
        self.pod_refreshes = Counter(
            "spacesecrets_pod_refreshes_total",
            "Pods nudged to refresh a target volume at once after its update.",
            registry=r,
        )
        self.events_dropped = Gauge(
            "spacesecrets_events_dropped",
            "Events not posted because the posting queue was full.",
            registry=r,
        )
        self.key_ring_age = Gauge(
            "spacesecrets_key_ring_age_seconds", "Age of the current sealing key.", registry=r
        )

    def report_state(self, state: Callable[[], Snapshot]) -> None:
        """Per-space and per-flow versions, read from `state` at scrape time.

        The operator already holds these figures; a labelled Gauge would keep a second copy of
        them as three small objects a series (about 1.5 KB a space with one flow), and a series
        whose space or flow is gone would stay until somebody removed it.
        """
        self.registry.register(_StateCollector(state))

    def serve(self, port: int, addr: str | None = None) -> tuple[str, int]:
        """Serve /metrics on `addr` (default: the configured SPACESECRETS_METRICS_ADDRESS, see
        `settings.metrics_address`) and `port` (0: any free port); returns the bound address."""
        server, _ = start_http_server(
            port, addr=metrics_address() if addr is None else addr, registry=self.registry
        )
        host, bound, *_ = server.server_address
        return str(host), int(bound)


class _StateCollector(Collector):
    def __init__(self, state: Callable[[], Snapshot]) -> None:
        self._state = state

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = self._state()
        space_version = GaugeMetricFamily(
            "spacesecrets_space_version", "Current version of each space.", labels=["namespace"]
        )
        for namespace, version in state.spaces:
            space_version.add_metric([namespace], version)
        synced = GaugeMetricFamily(
            "spacesecrets_flow_synced_version",
            "Space version each flow was issued.",
            labels=["namespace", "flow"],
        )
        behind = GaugeMetricFamily(
            "spacesecrets_flow_versions_behind",
            "How many versions each flow is behind its space.",
            labels=["namespace", "flow"],
        )
        for namespace, flow, version, versions_behind in state.flows:
            synced.add_metric([namespace, flow], version)
            behind.add_metric([namespace, flow], versions_behind)
        yield space_version
        yield synced
        yield behind


class ShardMetrics:
    """One shard's figures (engine.shards), each read at scrape time and labelled with the
    member, so the series of every replica can be summed or told apart."""

    def __init__(self, metrics: Metrics, member: str) -> None:
        r = metrics.registry
        self.namespaces = Gauge(
            "spacesecrets_shard_namespaces", "Namespaces this shard serves.", ["shard"], registry=r
        ).labels(member)
        self.queue_depth = Gauge(
            "spacesecrets_shard_queue_depth",
            "Objects waiting in this shard's work queue.",
            ["shard"],
            registry=r,
        ).labels(member)
        self.members = Gauge(
            "spacesecrets_shard_members", "Live members this shard sees.", ["shard"], registry=r
        ).labels(member)
        self.fenced = Gauge(
            "spacesecrets_shard_fenced",
            "1 while this shard serves nothing because it could not renew its Lease.",
            ["shard"],
            registry=r,
        ).labels(member)
        self.leads = Gauge(
            "spacesecrets_shard_leads",
            "1 on the one shard that rotates the key ring and drops expired histories.",
            ["shard"],
            registry=r,
        ).labels(member)
        self.handovers = Gauge(
            "spacesecrets_shard_handovers",
            "Namespaces this shard adopted or released since it started.",
            ["shard", "direction"],
            registry=r,
        )
        self.member = member
