"""The operator's engine, assembled: one `State` and the collaborators that act on it, each given
what it needs explicitly. The controller and the handlers talk to these, by their methods.

Engine layer (no kopf).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from spacesecrets.core.settings import Settings
from spacesecrets.engine.flows import FlowSyncer
from spacesecrets.engine.history import HistoryStore
from spacesecrets.engine.index import SpaceIndex
from spacesecrets.engine.keyring import KeyRingStore
from spacesecrets.engine.metrics import Metrics, Snapshot
from spacesecrets.engine.owners import OwnersBinding
from spacesecrets.engine.spaces import SpaceReconciler
from spacesecrets.engine.state import State
from spacesecrets.engine.watches import Watches
from spacesecrets.kube.client import Kube


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Engine:
    def __init__(
        self,
        settings: Settings,
        kube: Kube,
        metrics: Metrics | None = None,
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        self.settings, self.kube = settings, kube
        self.metrics = metrics or Metrics()
        self.state = State()
        self.ring = KeyRingStore(settings, kube, clock)
        self.histories = HistoryStore(settings, kube, clock)
        self.index = SpaceIndex(kube, self.state)
        self.owners = OwnersBinding(kube, self.state)
        self.spaces = SpaceReconciler(
            settings, kube, self.state, self.ring, self.histories, self.index, self.owners,
            self.metrics, clock,
        )  # fmt: skip
        self.flows = FlowSyncer(
            settings, kube, self.state, self.spaces, self.index, self.histories, self.ring,
            self.metrics, clock,
        )  # fmt: skip
        self.watches = Watches(self.state)
        # read at scrape time, so the age moves between rotations without anyone writing it
        self.metrics.key_ring_age.set_function(self.ring.age)
        self.metrics.report_state(self.snapshot)

    def snapshot(self) -> Snapshot:
        """Each space's version and each issued flow's, computed when /metrics is scraped."""
        flows = []
        for entry in self.state.all_flows():
            synced = entry.synced_version
            if synced is None:
                continue
            space = self.state.space(entry.namespace)
            behind = max(0, space.version - synced) if space else 0
            flows.append((entry.namespace, entry.name, synced, behind))
        return Snapshot(self.state.space_versions(), flows)

    def start(self, keep: Callable[[str], bool] = lambda _: True) -> None:
        """What a process does before its first event: the key ring, and the listings that save
        the first reconciles their reads (of the namespaces `keep` says: a shard's own)."""
        self.ring.load()
        self.histories.prefetch(keep)
        self.index.seed(self.settings.watch_namespaces, keep)
