"""Syncing a FlowSecretSync: whether it may be handed its space's current version at all, whether
it keeps its target against other flows, whether a resumed flow keeps the version it was
issued (unless an owner's Sync now request is pending), and then the projection.

Engine layer. The decisions are `core.decisions` (why not synced, who yields, may keep issued);
this module gathers what they need -- from memory first, from the API when it must.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from spacesecrets.core import decisions, projection, provenance, schedule
from spacesecrets.core.conditions import get_condition
from spacesecrets.core.projection import Claimant, Ownership, SpaceView
from spacesecrets.core.settings import Settings
from spacesecrets.engine.history import HistoryStore
from spacesecrets.engine.index import SpaceIndex
from spacesecrets.engine.keyring import KeyRingStore
from spacesecrets.engine.metrics import Metrics
from spacesecrets.engine.pods import PodRefresher
from spacesecrets.engine.projector import Projector
from spacesecrets.engine.spaces import MESSAGE_LIMIT, SpaceReconciler
from spacesecrets.engine.state import FlowEntry, State
from spacesecrets.kube import AlreadyExists, NamespaceTerminating, NotFound, Permanent, Temporary
from spacesecrets.kube.client import Kube
from spacesecrets.names import Condition, QueueReason

ABSENT = "absent"  # a flowRef workload that does not exist (yet): its creation is a save


class SpaceNotReady(Temporary):
    """A flow's space exists but has no accepted version yet: the flow waits for it."""


class FlowSyncer:
    def __init__(  # noqa: PLR0913, PLR0917 -- its collaborators, passed in by engine.app
        self,
        settings: Settings,
        kube: Kube,
        state: State,
        spaces: SpaceReconciler,
        index: SpaceIndex,
        histories: HistoryStore,
        ring: KeyRingStore,
        metrics: Metrics,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self.settings, self.kube, self.state = settings, kube, state
        self.spaces, self.index, self.histories, self.ring = spaces, index, histories, ring
        self.metrics, self.clock = metrics, clock
        refresher = PodRefresher(kube, metrics, enabled=settings.refresh_pods)
        self.projector = Projector(kube, metrics, clock, refresher, state.flow_status_stored)

    def needs_tick(self, namespace: str, name: str) -> bool:
        """At an autosync tick: is there anything to do? Answered from memory alone."""
        entry = self.state.flow(namespace, name)
        if entry is None or entry.deleting:
            return False
        space = self.state.space(namespace)
        if space is None:
            return entry.synced  # a space vanished: report it; otherwise nothing to do
        return entry.synced_version != space.version or not entry.synced

    def approval_problem(self, entry: FlowEntry) -> str | None:
        """Why a flow must get nothing: no current owner created, changed or approved it."""
        store = self.state.owners(entry.namespace)
        owners = store.owners if store else ()
        return provenance.flow_approval_problem(
            entry.authorized_by, entry.name, entry.namespace, owners
        )

    def to_recheck(self, namespace: str) -> list[FlowEntry]:
        """After a space's reconcile: flows issued before whose authorization no longer holds
        (an owner removed), so that they stop at once rather than at their next change."""
        return [e for e in self.state.flows_in(namespace) if e.synced and self.approval_problem(e)]

    def sync(self, namespace: str, name: str, *, reason: str) -> None:
        entry = self.state.flow(namespace, name)
        if entry is None or entry.deleting:
            return
        with entry.lock, self.metrics.reconcile_seconds.labels("FlowSecretSync").time():
            if reason == QueueReason.SPACE_READY and entry.synced and not entry.sync_now_request():
                return  # synced already: a new version waits for the flow's tick, save or request
            self._seed_template_hash(entry)
            try:
                self._sync(entry, reason)
            except (NotFound, NamespaceTerminating):
                raise
            except Permanent as exc:
                # a retry would be refused the same way: report it, and wait for a change
                self.projector.failed(entry, exc.reason, str(exc)[:MESSAGE_LIMIT])

    def _seed_template_hash(self, entry: FlowEntry) -> None:
        """Remember the flowRef's pod template as it is now, so the next change is a save."""
        if entry.flow_ref is None or entry.template_hash is not None:
            return
        kind, name = entry.flow_ref
        try:
            workload = self.kube.get_workload(kind, entry.namespace, name)
            entry.template_hash = projection.template_hash(workload)
        except NotFound:
            entry.template_hash = ABSENT  # its creation will count as a save

    def _space(self, namespace: str) -> SpaceView | None:
        space = self.state.space(namespace)
        if space is None and self.index.exists(namespace):
            if not self.spaces.load(namespace):
                raise SpaceNotReady(f"the space of {namespace} is not reconciled yet", delay=1)
            space = self.state.space(namespace)
        return space

    def _sync(self, entry: FlowEntry, reason: str) -> None:
        flow, ns = entry.spec, entry.namespace
        space = None if ns == self.settings.namespace else self._space(ns)
        facts = decisions.FlowFacts(
            namespace=ns,
            operator_namespace=self.settings.namespace,
            has_space=space is not None,
            approval_problem=self.approval_problem(entry) if space is not None else None,
            target_kind=flow.target_kind,
            configmaps_allowed=self.settings.allow_configmap_targets,
            missing_keys=projection.missing_keys(space, flow) if space is not None else [],
            version=space.version if space is not None else 0,
        )
        verdict = decisions.why_not_synced(facts)
        if verdict is not None:
            self.projector.failed(entry, *verdict)
            return
        assert space is not None  # (no space is a verdict)
        rivals = self._rivals(entry)
        unread = _never_reconciled(entry) and not rivals
        existing = None if unread else self.projector.read_target(entry)
        if self._yields(entry, existing, rivals):
            return
        # a Sync now request pending (made while no operator ran) is not a resume: it syncs
        resumed = reason == QueueReason.RESUME and existing is not None
        resumed = resumed and entry.sync_now_request() is None
        if resumed and existing is not None and self._keeps_issued_version(entry, space, existing):
            entry.target_fingerprint = projection.fingerprint(existing)
            return
        try:
            self.projector.project(entry, space, existing, reason)
        except AlreadyExists:
            # a target after all: `_yields` keeps its fingerprint, so the next pass reads first
            existing = self.projector.read_target(entry)
            if not self._yields(entry, existing, rivals):
                self.projector.project(entry, space, existing, reason)

    def _yields(
        self, entry: FlowEntry, existing: Mapping[str, Any] | None, rivals: list[Claimant]
    ) -> bool:
        """Whether the target is not this flow's to write (reported): it is someone else's, or
        another FlowSecretSync keeps it."""
        if existing is None and not rivals:
            return False
        if existing is not None:  # seen: when it carries this flow's name, its changes are news
            entry.target_fingerprint = projection.fingerprint(existing)
        mine = Claimant(entry.created, entry.name, entry.uid)
        keeper = projection.keeper(existing, [mine, *rivals])
        verdict = decisions.why_yield(
            keeper, entry.uid, entry.spec.target_kind, entry.spec.target_name
        )
        if verdict is not None:
            self.projector.failed(entry, *verdict)
        return verdict is not None

    def _keeps_issued_version(
        self, entry: FlowEntry, space: SpaceView, existing: Mapping[str, Any]
    ) -> bool:
        """After a restart, a flow behind its space keeps the version it was issued, if its
        target still holds exactly that version (checked against the history)."""
        period = schedule.period_seconds(entry.spec.autosync, self.settings.autosync_scale)
        resume = decisions.Resume(
            synced_version=entry.synced_version,
            synced=entry.synced,
            observed_generation=entry.status.get("observedGeneration"),
            generation=entry.generation,
            space_version=space.version,
            space_updated_at=space.updated_at,
            last_tick=schedule.last_tick(entry.uid, period, self.clock().timestamp()),
            target_ours=projection.ownership(existing, entry.uid) is Ownership.OURS,
        )
        if not decisions.may_keep_issued_version(resume) or entry.synced_version is None:
            return False
        history, _ = self.histories.read(entry.namespace, keep=True)
        if history is None:
            return False
        try:
            values = history.values(self.ring.require(), entry.synced_version)
        except LookupError:
            return False  # no longer kept: the flow moves on to the current version
        return projection.holds_issued(
            existing, entry.namespace, entry.spec, entry.synced_version, values
        )

    def _rivals(self, entry: FlowEntry) -> list[Claimant]:
        """The other FlowSecretSyncs this process knows that name the same target (one no
        current owner approved claims nothing)."""
        target = (entry.spec.target_kind, entry.spec.target_name)
        return [
            Claimant(e.created, e.name, e.uid)
            for e in self.state.flows_in(entry.namespace)
            if e.uid != entry.uid
            and (e.spec.target_kind, e.spec.target_name) == target
            and not self.approval_problem(e)
        ]


def _never_reconciled(entry: FlowEntry) -> bool:
    """A flow never reconciled has most likely no target yet: it is created without a read
    first (if one exists after all, the create fails and it is read). A flow whose status shows
    any Synced condition was reconciled before, by this process or an earlier one, and its target
    is read: after a restart a failing flow must not try a create each time."""
    return (
        entry.synced_version is None
        and entry.target_fingerprint is None
        and get_condition(entry.status.get("conditions") or [], Condition.SYNCED) is None
    )
