"""What the watches of objects the operator does not reconcile itself mean: a target someone else
changed or deleted (drift), and a flowRef workload whose pod template changed (a save).

Engine layer, memory only: each answers which flows to queue, never calls the API.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from spacesecrets.core import projection
from spacesecrets.engine.state import State
from spacesecrets.names import FLOW_LABEL


class Watches:
    def __init__(self, state: State) -> None:
        self.state = state

    def target_changed(self, event_type: str, obj: Mapping[str, Any]) -> tuple[str, str] | None:
        """A managed target changed: the flow to sync when someone else changed or deleted it
        (our own writes match the fingerprint we kept of them)."""
        meta = obj.get("metadata") or {}
        flow_name = (meta.get("labels") or {}).get(FLOW_LABEL)
        entry = self.state.flow(str(meta.get("namespace", "")), str(flow_name))
        if entry is None or entry.deleting:
            return None
        if entry.target_fingerprint is None:
            return None  # not seen by this process yet: the flow's own first sync reads it
        if entry.spec.target_name != meta.get("name") or entry.spec.target_kind != obj.get(
            "kind", entry.spec.target_kind
        ):
            return None
        if event_type == "DELETED" or projection.fingerprint(obj) != entry.target_fingerprint:
            return entry.namespace, entry.name
        return None

    def workload_changed(self, kind: str, obj: Mapping[str, Any]) -> list[tuple[str, str]]:
        """A Deployment or StatefulSet changed: the flows it saved (pod template changed)."""
        meta = obj.get("metadata") or {}
        ns, name = str(meta.get("namespace")), meta.get("name")
        digest = projection.template_hash(obj)
        saved = []
        for entry in self.state.flows_in(ns):
            if entry.flow_ref != (kind, name):
                continue
            previous, entry.template_hash = entry.template_hash, digest
            if previous is not None and previous != digest and entry.spec.sync_on_save:
                saved.append((entry.namespace, entry.name))
        return saved
