"""What the operator knows between events: every accepted space's current version and owners,
every FlowSecretSync with what it was last issued, and the index of live SpaceSecrets.

Engine layer (no API calls). One `State` is shared by the reconcilers; each piece of it is read
and changed through the methods here, never through another class's dictionaries.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

from spacesecrets.core import decisions
from spacesecrets.core.conditions import get_condition
from spacesecrets.core.projection import FlowSpec, SpaceView
from spacesecrets.core.provenance import Owner
from spacesecrets.kube.client import revision
from spacesecrets.names import AUTHORIZED_BY, SYNC_NOW, Condition


@dataclass(slots=True)
class FlowEntry:
    """What the operator knows of one FlowSecretSync between events.

    The operator holds one for every flow as long as it runs: the status as the API server last
    stored it is kept packed as JSON, with the two figures read between syncs beside it, and the
    resourceVersion it was stored at. It comes from our own status writes and from the watch:
    a status someone else wrote later (a killed operator's last request, applied after its
    successor read the flow; another shard during a handover; a person) replaces ours, or the
    operator would go on believing the flow holds what it wrote and never sync it again.
    """

    namespace: str
    name: str
    uid: str
    created: str
    spec: FlowSpec
    flow_ref: tuple[str, str] | None
    generation: int
    packed_status: bytes = field(default=b"{}", repr=False)
    synced_version: int | None = None
    synced: bool = False
    deleting: bool = False
    target_fingerprint: str | None = None
    template_hash: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    authorized_by: str | None = None  # the API server's stamp (names.AUTHORIZED_BY)
    sync_now: str | None = None  # an owner's Sync now request (names.SYNC_NOW), as last seen
    status_revision: int = 0  # the resourceVersion the status was stored at (0: unknown)

    @property
    def status(self) -> dict[str, Any]:
        """The status as last written (a fresh copy)."""
        return cast(dict[str, Any], json.loads(self.packed_status))

    @status.setter
    def status(self, status: Mapping[str, Any]) -> None:
        self.packed_status = json.dumps(status, separators=(",", ":")).encode()
        value = status.get("syncedVersion")
        self.synced_version = int(value) if value is not None else None
        cond = get_condition(status.get("conditions") or [], Condition.SYNCED)
        self.synced = bool(cond and cond.get("status") == "True")

    def sync_now_request(self) -> str | None:
        """The Sync now request not handled yet, if any (decided against the status written)."""
        if not self.sync_now:
            return None  # (the common case answers without unpacking the status)
        return decisions.sync_now_request(self.sync_now, self.status)

    def body(self) -> dict[str, Any]:
        """Just enough of the object to post an Event about it."""
        return {
            "apiVersion": "spacesecrets.io/v1alpha1",
            "kind": "FlowSecretSync",
            "metadata": {"name": self.name, "namespace": self.namespace, "uid": self.uid},
        }


class SpaceOwners(NamedTuple):
    """Who owns a space's current store (from its spec, kept with its history)."""

    name: str
    uid: str
    owners: tuple[Owner, ...]


class State:
    """The shared in-memory state, behind one lock."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._spaces: dict[str, SpaceView] = {}
        self._owners: dict[str, SpaceOwners] = {}
        self._flows: dict[tuple[str, str], FlowEntry] = {}
        self._flows_by_ns: dict[str, dict[str, FlowEntry]] = {}  # the same, by namespace
        self._live: dict[str, dict[str, tuple[str, str]]] = {}  # ns -> uid -> (created, name)
        self._space_locks: dict[str, threading.Lock] = {}

    # -- spaces ---------------------------------------------------------------------------------

    def space(self, namespace: str) -> SpaceView | None:
        return self._spaces.get(namespace)

    def owners(self, namespace: str) -> SpaceOwners | None:
        return self._owners.get(namespace)

    def remember_space(self, view: SpaceView, owners: SpaceOwners) -> None:
        with self._lock:
            self._spaces[view.namespace] = view
            self._owners[view.namespace] = owners

    def forget_space(self, namespace: str) -> None:
        with self._lock:
            self._spaces.pop(namespace, None)
            self._owners.pop(namespace, None)

    def space_versions(self) -> list[tuple[str, int]]:
        with self._lock:
            return [(ns, view.version) for ns, view in self._spaces.items()]

    def space_lock(self, namespace: str) -> threading.Lock:
        """One reconcile of a namespace's store at a time."""
        with self._lock:
            return self._space_locks.setdefault(namespace, threading.Lock())

    # -- the index of live SpaceSecrets ---------------------------------------------------------

    def observe_space(self, meta: Mapping[str, Any], deleted: bool = False) -> None:
        with self._lock:
            known = self._live.setdefault(str(meta["namespace"]), {})
            if deleted or meta.get("deletionTimestamp"):
                known.pop(str(meta["uid"]), None)
            else:
                known[str(meta["uid"])] = (
                    str(meta.get("creationTimestamp", "")),
                    str(meta["name"]),
                )

    def live_spaces(self, namespace: str) -> dict[str, tuple[str, str]]:
        """uid -> (creationTimestamp, name) of the namespace's live SpaceSecrets, as indexed."""
        with self._lock:
            return dict(self._live.get(namespace, {}))

    # -- flows ----------------------------------------------------------------------------------

    def flow(self, namespace: str, name: str) -> FlowEntry | None:
        return self._flows.get((namespace, name))

    def register_flow(self, body: Mapping[str, Any]) -> FlowEntry:
        meta = body["metadata"]
        spec = body.get("spec") or {}
        ref = spec.get("flowRef")
        key = (str(meta["namespace"]), str(meta["name"]))
        flow = FlowSpec.from_body(meta["name"], meta["uid"], spec)
        flow_ref = (str(ref["kind"]), str(ref["name"])) if ref else None
        with self._lock:
            entry = self._flows.get(key)
            if entry is None or entry.uid != meta["uid"]:
                entry = FlowEntry(
                    namespace=key[0],
                    name=key[1],
                    uid=meta["uid"],
                    created=str(meta.get("creationTimestamp", "")),
                    spec=flow,
                    flow_ref=flow_ref,
                    generation=int(meta.get("generation", 0)),
                )
                entry.status = body.get("status") or {}
                entry.status_revision = revision(meta)
                self._flows[key] = entry
                self._flows_by_ns.setdefault(key[0], {})[key[1]] = entry
            else:
                self._stored(entry, body.get("status") or {}, revision(meta))
                if entry.flow_ref != flow_ref:
                    entry.template_hash = None
                entry.spec, entry.flow_ref = flow, flow_ref
                entry.generation = int(meta.get("generation", 0))
            entry.deleting = bool(meta.get("deletionTimestamp"))
            annotations = meta.get("annotations") or {}
            entry.authorized_by = annotations.get(AUTHORIZED_BY)
            entry.sync_now = annotations.get(SYNC_NOW)
            return entry

    def flow_status_stored(
        self, entry: FlowEntry, status: Mapping[str, Any], stored_at: int
    ) -> None:
        """Our status write of `entry` was stored at resourceVersion `stored_at` as `status`."""
        with self._lock:
            self._stored(entry, status, stored_at)

    @staticmethod
    def _stored(entry: FlowEntry, status: Mapping[str, Any], stored_at: int) -> None:
        """Keep the newer of what is held and `status`, stored at `stored_at` (resourceVersions
        order every write: an event older than our last write is not news)."""
        if stored_at > entry.status_revision:
            entry.status, entry.status_revision = status, stored_at

    def forget_flow(self, namespace: str, name: str) -> None:
        with self._lock:
            self._flows.pop((namespace, name), None)
            self._flows_by_ns.get(namespace, {}).pop(name, None)

    def flows_in(self, namespace: str) -> list[FlowEntry]:
        """The namespace's flows that are not being deleted."""
        with self._lock:
            return [e for e in self._flows_by_ns.get(namespace, {}).values() if not e.deleting]

    def all_flows(self) -> list[FlowEntry]:
        with self._lock:
            return list(self._flows.values())

    def flow_names(self, namespace: str) -> list[str]:
        """Every flow of the namespace known, being deleted or not."""
        with self._lock:
            return list(self._flows_by_ns.get(namespace, {}))

    # -- shards ---------------------------------------------------------------------------------

    def forget_namespace(self, namespace: str) -> None:
        """Everything known of a namespace another shard serves from now on."""
        with self._lock:
            self._spaces.pop(namespace, None)
            self._owners.pop(namespace, None)
            self._live.pop(namespace, None)
            self._space_locks.pop(namespace, None)
            for name in self._flows_by_ns.pop(namespace, {}):
                self._flows.pop((namespace, name), None)
