"""Prometheus metrics of the operator.

Edge (prometheus-client only). One registry per `Metrics`, so tests and several operators in one
process don't collide; `serve()` exposes it on /metrics.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.space_version = Gauge(
            "spacesecrets_space_version",
            "Current version of each space.",
            ["namespace"],
            registry=r,
        )
        self.flow_synced_version = Gauge(
            "spacesecrets_flow_synced_version",
            "Space version each flow was issued.",
            ["namespace", "flow"],
            registry=r,
        )
        self.flow_versions_behind = Gauge(
            "spacesecrets_flow_versions_behind",
            "How many versions each flow is behind its space.",
            ["namespace", "flow"],
            registry=r,
        )
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
        self.events_dropped = Gauge(
            "spacesecrets_events_dropped",
            "Events not posted because the posting queue was full.",
            registry=r,
        )
        self.key_ring_age = Gauge(
            "spacesecrets_key_ring_age_seconds", "Age of the current sealing key.", registry=r
        )

    def observe_flow(
        self, namespace: str, flow: str, synced: int | None, behind: int | None
    ) -> None:
        if synced is not None:
            self.flow_synced_version.labels(namespace, flow).set(synced)
        if behind is not None:
            self.flow_versions_behind.labels(namespace, flow).set(behind)

    def forget_flow(self, namespace: str, flow: str) -> None:
        for gauge in (self.flow_synced_version, self.flow_versions_behind):
            with contextlib.suppress(KeyError):
                gauge.remove(namespace, flow)

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:  # noqa: S104 -- scraped in-cluster
        start_http_server(port, addr=addr, registry=self.registry)
