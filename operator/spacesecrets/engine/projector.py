"""Writing a flow's target and status: the target brought to the space's current version when it
differs, the status written when it changed, and the Events that say what happened.

Engine layer. The documents and the target object are `core.projection`; the status is
`core.decisions`. The only writer of a FlowSecretSync's conditions, and the one that records an
owner's Sync now request as handled.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from typing import Any

from spacesecrets.core import decisions, projection
from spacesecrets.core.conditions import get_condition, now_rfc3339
from spacesecrets.core.projection import SpaceView
from spacesecrets.engine.metrics import Metrics
from spacesecrets.engine.pods import PodRefresher
from spacesecrets.engine.state import FlowEntry
from spacesecrets.kube import NotFound, Temporary
from spacesecrets.kube.client import Kube, revision
from spacesecrets.names import FLOWS, Condition, FlowReason, QueueReason

log = logging.getLogger("spacesecrets")


class Projector:
    def __init__(
        self,
        kube: Kube,
        metrics: Metrics,
        clock: Callable[[], dt.datetime],
        refresher: PodRefresher | None,
        stored: Callable[[FlowEntry, Mapping[str, Any], int], None],
    ) -> None:
        """`stored(entry, status, resourceVersion)`: a status write's answer, for the state."""
        self.kube, self.metrics, self.clock = kube, metrics, clock
        self.refresher, self.stored = refresher, stored

    def now(self) -> str:
        return now_rfc3339(self.clock())

    def read_target(self, entry: FlowEntry) -> dict[str, Any] | None:
        try:
            return self.kube.get(entry.spec.target_kind, entry.namespace, entry.spec.target_name)
        except NotFound:
            return None

    def project(
        self,
        entry: FlowEntry,
        space: SpaceView,
        existing: Mapping[str, Any] | None,
        reason: str,
    ) -> None:
        """Write the target if it differs from the space's current version, then the status.
        `existing` is ours or absent (the caller has checked)."""
        flow, ns = entry.spec, entry.namespace
        status = entry.status
        same_version = entry.synced_version == space.version and status.get("issuedAt")
        issued_at = str(status["issuedAt"]) if same_version else self.now()
        docs = projection.documents(space, flow, issued_at)
        desired = projection.desired_target(ns, flow, docs, space.version, issued_at)
        written = False
        if existing is None:
            entry.target_fingerprint = projection.fingerprint(
                self.kube.create(flow.target_kind, ns, desired)
            )
            written = True
            if reason == QueueReason.DRIFT:
                self._restored(entry)
        elif not projection.up_to_date(existing, desired):
            entry.target_fingerprint = projection.fingerprint(existing)  # its deletion: a drift
            if existing.get("immutable") is True:
                self.failed(
                    entry,
                    FlowReason.TARGET_IMMUTABLE,
                    f"{flow.target_kind} {flow.target_name} was made immutable by someone else "
                    "and cannot be updated; delete it and it is recreated",
                )
                return
            self._replace(entry, existing, desired, reason)
            written = True
        else:
            entry.target_fingerprint = projection.fingerprint(existing)
            issued_at = projection.issued_at_of(existing) or issued_at
        if written:
            self._written(entry, space)
        configmap = flow.target_name if flow.target_kind == "ConfigMap" else None
        new_status = decisions.synced_status(
            status,
            space.version,
            issued_at,
            generation=entry.generation,
            now=self.now(),
            configmap=configmap,
        )
        self.write_status(entry, new_status)

    def _written(self, entry: FlowEntry, space: SpaceView) -> None:
        flow = entry.spec
        self.metrics.projection_writes.labels(flow.target_kind).inc()
        if entry.synced_version != space.version:
            message = f"version {space.version} issued to {flow.target_kind} {flow.target_name}"
            self.kube.event(entry.body(), "Normal", FlowReason.ISSUED, message)
        if flow.target_kind == "ConfigMap":
            message = (
                f"values are projected into ConfigMap {flow.target_name}, readable "
                "by every ConfigMap reader in the namespace"
            )
            self.kube.event(entry.body(), "Warning", FlowReason.CONFIGMAP_TARGET, message)

    def _replace(
        self,
        entry: FlowEntry,
        existing: Mapping[str, Any],
        desired: dict[str, Any],
        reason: str,
    ) -> None:
        """Overwrite a target of ours that differs from what it should hold; say so when someone
        else changed it, as a Warning when they left a document that does not even parse."""
        flow, ns = entry.spec, entry.namespace
        unreadable = projection.unreadable_documents(existing)
        desired["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
        try:
            written = self.kube.replace(flow.target_kind, ns, desired)
        except NotFound:  # deleted since it was read: its deletion event syncs again
            raise Temporary(f"{flow.target_kind} {ns}/{flow.target_name} vanished", 1) from None
        entry.target_fingerprint = projection.fingerprint(written)
        if self.refresher is not None:  # pods mounting the old documents get the new ones now
            revision = str(written["metadata"]["resourceVersion"])
            self.refresher.refresh(ns, flow.target_kind, flow.target_name, revision)
        if unreadable:
            self.kube.event(
                entry.body(),
                "Warning",
                FlowReason.TARGET_UNREADABLE,
                f"{flow.target_kind} {flow.target_name} held {' and '.join(unreadable)} that "
                "does not parse, written by someone else, and is restored",
            )
        elif reason == QueueReason.DRIFT:
            self._restored(entry)

    def _restored(self, entry: FlowEntry) -> None:
        flow = entry.spec
        self.kube.event(
            entry.body(),
            "Normal",
            FlowReason.TARGET_RESTORED,
            f"{flow.target_kind} {flow.target_name} was changed or deleted "
            "by someone else and is restored",
        )

    def failed(self, entry: FlowEntry, reason: str, message: str) -> None:
        """`Synced=False` for `reason`; its Warning is posted once, when the condition flips."""
        status = entry.status
        old = get_condition(status.get("conditions") or [], Condition.SYNCED) or {}
        new_status = decisions.failed_status(
            status, Condition.SYNCED, reason, message, generation=entry.generation, now=self.now()
        )
        # the condition written is what says the Warning was posted: a status write refused
        # must not leave an Event posted on every attempt
        self.write_status(entry, new_status)
        if (old.get("reason"), old.get("message")) != (reason, message):
            self.kube.event(entry.body(), "Warning", reason, message)
            log.warning(
                "flow %s/%s not synced: %s: %s", entry.namespace, entry.name, reason, message
            )

    def write_status(self, entry: FlowEntry, new_status: dict[str, Any]) -> None:
        """Write the status if it changed; a pending Sync now request is answered in the same
        write (the sync that writes is the one that handled it, whatever its outcome)."""
        old = entry.status
        request = entry.sync_now_request()
        if request is not None:
            new_status = decisions.sync_now_handled(new_status, request, self.now())
        if new_status != old:
            patch = decisions.status_patch(old, new_status)
            stored = self.kube.patch_status(FLOWS, entry.namespace, entry.name, patch, answer=True)
            self.stored(entry, stored.get("status") or new_status, revision(stored["metadata"]))
        if request is not None and entry.synced:
            flow = entry.spec
            message = (
                f"FlowSecretSync {entry.name} synced now: {flow.target_kind} {flow.target_name} "
                f"holds version {entry.synced_version}"
            )
            self.kube.event(entry.body(), "Normal", FlowReason.SYNCED_NOW, message)
