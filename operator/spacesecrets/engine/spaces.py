"""Reconciling a SpaceSecrets: open its sealed spec, record a new version in its history when the
plaintext changed, keep its owners' RoleBinding, and write its status -- only what changed.

Engine layer. The decisions are `core.decisions` and `core.versions`; the collaborators (the key
ring, the histories, the index, the owners' binding, the restorer) are passed in.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from typing import Any

from spacesecrets.core import access, crypto, decisions, provenance, versions
from spacesecrets.core.conditions import get_condition, now_rfc3339, set_condition
from spacesecrets.core.projection import SpaceView
from spacesecrets.core.settings import Settings
from spacesecrets.engine.history import HistoryStore
from spacesecrets.engine.index import SpaceIndex
from spacesecrets.engine.keyring import KeyRingStore
from spacesecrets.engine.metrics import Metrics
from spacesecrets.engine.owners import OwnersBinding
from spacesecrets.engine.restore import Restorer, Taken
from spacesecrets.engine.state import SpaceOwners, State
from spacesecrets.kube import NamespaceTerminating, NotFound, Permanent
from spacesecrets.kube.client import Kube
from spacesecrets.names import (
    RESTORED_ANNOTATION,
    ROLLBACK_ANNOTATION,
    SPACES,
    Condition,
    SpaceReason,
)

log = logging.getLogger("spacesecrets")
# in a history's index: what became of a deleted store's history when this store took over
RESTORE_OUTCOME = "restoreOutcome"
MESSAGE_LIMIT = 512  # of an API server's refusal quoted in a condition


class SpaceReconciler:
    def __init__(  # noqa: PLR0913, PLR0917 -- its collaborators, passed in by engine.app
        self,
        settings: Settings,
        kube: Kube,
        state: State,
        ring: KeyRingStore,
        histories: HistoryStore,
        index: SpaceIndex,
        owners: OwnersBinding,
        metrics: Metrics,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self.settings, self.kube, self.state = settings, kube, state
        self.ring, self.histories, self.index, self.owners = ring, histories, index, owners
        self.restorer = Restorer(kube, histories)
        self.metrics, self.clock = metrics, clock

    def now(self) -> str:
        return now_rfc3339(self.clock())

    def reconcile(self, body: Mapping[str, Any]) -> Mapping[str, Any]:
        """The status the space is left with: what was written, or the one it had."""
        namespace = body["metadata"]["namespace"]
        timer = self.metrics.reconcile_seconds.labels("SpaceSecrets").time()
        with self.state.space_lock(namespace), timer:
            try:
                return self._reconcile(body)
            except (NotFound, NamespaceTerminating):
                raise
            except Permanent as exc:
                # a retry would be refused the same way: report it, and wait for a change
                status = dict(body.get("status") or {})
                return self._failed(body, status, exc.reason, str(exc)[:MESSAGE_LIMIT])

    def _reconcile(self, body: Mapping[str, Any]) -> Mapping[str, Any]:
        meta = body["metadata"]
        ns, name = meta["namespace"], meta["name"]
        status: dict[str, Any] = dict(body.get("status") or {})
        self.state.observe_space(meta)
        if ns == self.settings.namespace:
            reason, message = SpaceReason.OPERATOR_NAMESPACE, decisions.OPERATOR_NAMESPACE_MESSAGE
            return self._failed(body, status, reason, message)
        history, rv = self.histories.read(ns)
        primary = self.index.primary(ns, history)
        if primary is not None and primary != name:
            return self._failed(body, status, *decisions.duplicate(ns, primary))
        taken = self.restorer.take(body, history, rv)
        if ROLLBACK_ANNOTATION in (meta.get("annotations") or {}):
            return self._rollback(body, status, taken.history)
        plain, errors = self._open(ns, (body.get("spec") or {}).get("data") or {})
        if errors:
            for e in errors:
                self.metrics.unseal_failures.labels(e.reason).inc()
            current = taken.history.version if taken.history else 0
            return self._failed(body, status, *decisions.why_not_ready(errors, current))
        return self._accept(body, status, taken, plain)

    def _open(
        self, ns: str, data: Mapping[str, Any]
    ) -> tuple[versions.Plain, list[versions.EntryError]]:
        plain, errors = versions.open_spec(self.ring.require(), ns, data)
        if any(e.reason == crypto.UNKNOWN_KID for e in errors):
            self.ring.load()  # another replica may have rotated; try once with the fresh ring
            plain, errors = versions.open_spec(self.ring.require(), ns, data)
        return plain, errors

    def _accept(
        self, body: Mapping[str, Any], status: dict[str, Any], taken: Taken, plain: versions.Plain
    ) -> Mapping[str, Any]:
        """Record the opened spec as the space's current version and say so."""
        meta, spec = body["metadata"], body.get("spec") or {}
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        history, change, rollback_of = self._record(body, taken, plain)
        self.remember(history, plain)
        bound = self.owners.ensure(ns, spec.get("owners") or [], name, uid, fresh=not status)
        new_status = {
            **status,
            **versions.status_fields(history, versions.sealing_kids(spec.get("data") or {})),
            "observedGeneration": int(meta.get("generation", 0)),
        }
        ready = decisions.Verdict(
            SpaceReason.UNSEALED, f"version {history.version}: {len(plain)} keys"
        )
        conditions = self._condition(body, status.get("conditions"), Condition.READY, True, ready)
        conditions = self._owners_condition(body, conditions, bound)
        conditions = self._restore_condition(body, conditions, history)
        if change:
            text = (
                f"version {change.version}: added {change.added}, changed {change.changed}, "
                f"removed {change.removed}"
            )
            if rollback_of is not None:
                message = f"version {rollback_of} restored as version {change.version}"
                verdict = decisions.Verdict(SpaceReason.ROLLED_BACK, message)
                conditions = self._condition(body, conditions, Condition.ROLLBACK, True, verdict)
                text += f" (restores version {rollback_of})"
            self.kube.event(body, "Normal", SpaceReason.VERSION_CREATED, text)
            log.info("space %s: %s", ns, text)  # key names only, like the Event
        return self._write_status(body, status, {**new_status, "conditions": conditions})

    def _record(
        self, body: Mapping[str, Any], taken: Taken, plain: versions.Plain
    ) -> tuple[versions.History, versions.Change | None, int | None]:
        """The new version, if the plaintext changed, written to the history with what a later
        restore is decided on (and what became of a deleted store's history when this one took
        the namespace); and which version it restores, for a rollback."""
        meta, ring = body["metadata"], self.ring.require()
        ns, history, rv = meta["namespace"], taken.history, taken.rv
        new_history = history is None
        if history is None:
            history = versions.History.new(ring, ns)
        rollback_of = _restored_version(meta, history, ring, plain)
        if not history.index.get("namespaceUid"):  # a new history: which namespace is it of
            history.index["namespaceUid"] = self.index.namespace_uid(ns, meta)
        facts_changed = _record_facts(history, body)
        if taken.outcome is not None:
            # kept with the history: a reconcile retried after this write still reports it
            continued, message = taken.outcome
            said = {"spaceUid": meta["uid"], "continued": continued, "message": message}
            facts_changed = facts_changed or history.index.get(RESTORE_OUTCOME) != said
            history.index[RESTORE_OUTCOME] = said
        limit = int((body.get("spec") or {}).get("historyLimit", 20))
        change = versions.record(history, ring, plain, self.now(), limit, rollback_of=rollback_of)
        rewrapped = history.rewrapped(ring)
        if change or rewrapped or new_history or facts_changed or history.deleted_at:
            history.index["deletedAt"] = None
            self.histories.write(history, rv)
        return history, change, rollback_of

    def remember(self, history: versions.History, plain: versions.Plain) -> None:
        """What flows are handed: the space's current version and who owns it."""
        index = history.index
        view = SpaceView.of(
            namespace=history.namespace,
            version=history.version,
            created_at=str(index.get("createdAt")),
            updated_at=str(index.get("updatedAt")),
            keys=index.get("keys", {}),
            values=plain,
        )
        owners = tuple((str(k), str(n)) for k, n in index.get("owners") or [])
        name, uid = str(index.get("spaceName") or ""), str(index.get("spaceUid"))
        self.state.remember_space(view, SpaceOwners(name, uid, owners))

    def load(self, namespace: str) -> bool:
        """Load a space's current version from the history (e.g. for a flow before its space's
        first reconcile after a restart or an adoption). False when there is nothing to load.

        Under the space's lock, and only if no reconcile has remembered the space meanwhile: a
        reconcile running at the same time may be writing a newer version, and a history read
        before that write must not replace it in memory (the space's flows would be handed the
        older version, and their ticks would see nothing to do until the next change)."""
        with self.state.space_lock(namespace):
            if self.state.space(namespace) is not None:
                return True
            history, _ = self.histories.read(namespace, keep=True)
            if history is None or history.deleted_at or not history.version:
                return False
            self.remember(history, history.values(self.ring.require()))
            return True

    def deleted(self, namespace: str) -> bool:
        """A SpaceSecrets is gone. True when it was the store: its history is kept for the
        retention period (its flows keep their data, and are told)."""
        if self.index.primary(namespace) is not None:
            return False  # a duplicate was deleted, the store remains
        with self.state.space_lock(namespace):  # not undone by a `load` reading before the mark
            self.state.forget_space(namespace)
            self.owners.forget(namespace)
            self.histories.mark_deleted(namespace)
        return True

    # -- status -----------------------------------------------------------------------------------

    def _condition(
        self,
        body: Mapping[str, Any],
        conditions: list[dict[str, Any]] | None,
        type_: str,
        ok: bool,
        verdict: decisions.Verdict,
    ) -> list[dict[str, Any]]:
        generation = int(body["metadata"].get("generation", 0))
        return set_condition(
            conditions or [], type_, ok, *verdict, generation=generation, now=self.now()
        )

    def _restore_condition(
        self,
        body: Mapping[str, Any],
        conditions: list[dict[str, Any]],
        history: versions.History,
    ) -> list[dict[str, Any]]:
        """`Restore`: whether this store continues the history a deleted one left, as decided
        when it took the namespace (kept in the history; a Warning or a Normal Event the first
        time the status says so)."""
        said = history.index.get(RESTORE_OUTCOME) or {}
        if said.get("spaceUid") != body["metadata"]["uid"]:
            return conditions  # decided for another store, or never: nothing to say
        continued, message = bool(said.get("continued")), str(said.get("message") or "")
        reason = SpaceReason.RESTORED if continued else SpaceReason.RESTORE_NOT_ALLOWED
        old = get_condition(conditions, Condition.RESTORE) or {}
        if (old.get("reason"), old.get("message")) != (reason, message):
            self.kube.event(body, "Normal" if continued else "Warning", reason, message)
        restore = decisions.Verdict(reason, message)
        return self._condition(body, conditions, Condition.RESTORE, continued, restore)

    def _owners_condition(
        self, body: Mapping[str, Any], conditions: list[dict[str, Any]], problem: str | None
    ) -> list[dict[str, Any]]:
        """`OwnersBound`: whether the owners' RoleBinding is the one the operator keeps (said
        only when it is not, and when that is mended)."""
        old = get_condition(conditions, Condition.OWNERS_BOUND) or {}
        if problem is None:
            if not old:
                return conditions  # the usual case says nothing: no condition to keep
            message = f"RoleBinding {access.OWNERS_ROLE_BINDING} binds the owners"
            bound = decisions.Verdict(SpaceReason.BOUND, message)
            return self._condition(body, conditions, Condition.OWNERS_BOUND, True, bound)
        reason = SpaceReason.ROLE_BINDING_NOT_OWNED
        if (old.get("reason"), old.get("message")) != (reason, problem):
            self.kube.event(body, "Warning", reason, problem)
        unbound = decisions.Verdict(reason, problem)
        return self._condition(body, conditions, Condition.OWNERS_BOUND, False, unbound)

    def _failed(
        self, body: Mapping[str, Any], status: dict[str, Any], reason: str, message: str
    ) -> Mapping[str, Any]:
        generation = int(body["metadata"].get("generation", 0))
        new_status = decisions.failed_status(
            status, Condition.READY, reason, message, generation=generation, now=self.now()
        )
        old = get_condition(status.get("conditions") or [], Condition.READY) or {}
        if (old.get("reason"), old.get("message"), old.get("observedGeneration")) != (
            reason,
            message,
            generation,
        ):
            self.kube.event(body, "Warning", reason, message)
        meta = body["metadata"]
        log.warning(
            "space %s/%s not accepted: %s: %s", meta["namespace"], meta["name"], reason, message
        )
        return self._write_status(body, status, new_status)

    def _rollback(
        self, body: Mapping[str, Any], status: dict[str, Any], history: versions.History | None
    ) -> Mapping[str, Any]:
        problem = self.restorer.rollback(body, history, self.ring.require())
        if problem is None:
            target = (body["metadata"].get("annotations") or {}).get(ROLLBACK_ANNOTATION)
            message = f"restoring version {target} as a new version"
            self.kube.event(body, "Normal", SpaceReason.ROLLED_BACK, message)
            return status
        # a refused rollback is its own condition: the space itself stays Ready
        reason = SpaceReason.ROLLBACK_FAILED
        refused = decisions.Verdict(reason, problem)
        conditions = self._condition(
            body, status.get("conditions"), Condition.ROLLBACK, False, refused
        )
        self.kube.event(body, "Warning", reason, problem)
        return self._write_status(body, status, {**status, "conditions": conditions})

    def _write_status(
        self, body: Mapping[str, Any], old: Mapping[str, Any], new: Mapping[str, Any]
    ) -> Mapping[str, Any]:
        """Patch the status only when it changed: an unchanged object costs no write."""
        if dict(new) == dict(old):
            return old
        meta = body["metadata"]
        patch = decisions.status_patch(old, new)
        self.kube.patch_status(SPACES, meta["namespace"], meta["name"], patch)
        return new


def _restored_version(
    meta: Mapping[str, Any],
    history: versions.History,
    ring: crypto.KeyRing,
    plain: versions.Plain,
) -> int | None:
    """The version a rollback put back into the spec, if the spec still holds exactly it."""
    try:
        version = int(str((meta.get("annotations") or {}).get(RESTORED_ANNOTATION)))
    except ValueError:
        return None
    if version not in history.kept_versions():
        return None
    same = versions.serialize_plain(history.values(ring, version)) == versions.serialize_plain(
        plain
    )
    return version if same else None


def _record_facts(history: versions.History, body: Mapping[str, Any]) -> bool:
    """Keep in the history what a later restore is decided on: which store it belongs to and
    its owners (beside the UID of its namespace). True if any changed."""
    meta = body["metadata"]
    owners = provenance.owners_of((body.get("spec") or {}).get("owners") or [])
    facts = {
        "spaceUid": meta["uid"],
        "spaceName": meta["name"],
        "owners": [list(o) for o in owners],
    }
    changed = any(history.index.get(k) != v for k, v in facts.items())
    history.index.update(facts)
    return changed
