"""Restoring versions: a rollback to a kept version (as a new version), and a new store taking
over the history a deleted one left -- only for its former owners.

Engine layer. Who may restore is `core.provenance.restore_refusal`; this module reads the
histories (`HistoryStore`), sets aside the ones it may not hand over, and re-seals for rollback.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from spacesecrets.core import crypto, provenance, versions
from spacesecrets.engine.history import HistoryStore
from spacesecrets.kube.client import Kube
from spacesecrets.names import (
    CREATED_BY,
    RESTORE_FROM,
    RESTORED_ANNOTATION,
    ROLLBACK_ANNOTATION,
    SPACES,
)


class Taken(NamedTuple):
    """The history a store goes on with (None: it starts afresh), its resourceVersion, and what
    to report about a deleted store's history: (continued, message), or None."""

    history: versions.History | None
    rv: str
    outcome: tuple[bool, str] | None = None


class Restorer:
    def __init__(self, kube: Kube, histories: HistoryStore) -> None:
        self.kube, self.histories = kube, histories

    def take(self, body: Mapping[str, Any], history: versions.History | None, rv: str) -> Taken:
        """The history a SpaceSecrets continues. Its own; or, for a new store, the history a
        deleted one left -- only when a former owner (or a cluster admin) created it in the same
        namespace, or asked for it by uid (`restore-from`). Anyone else starts afresh at version
        1: the old history is set aside (kept for the retention period) and the refusal says who
        may restore it."""
        meta = body["metadata"]
        ns, uid = meta["namespace"], meta["uid"]
        annotations = meta.get("annotations") or {}
        restore_from = str(annotations.get(RESTORE_FROM) or "")
        if history is not None and history.index.get("spaceUid") in (None, uid):
            return Taken(history, rv)  # its own (or one that never had a store)
        if history is None and not restore_from:
            return Taken(None, rv)
        candidate = history
        if restore_from and (history is None or history.index.get("spaceUid") != restore_from):
            candidate = self.histories.read_archive(ns, restore_from)
        if candidate is None:
            return self._afresh(
                history,
                rv,
                f"no history of a deleted SpaceSecrets with uid {restore_from[:40]!r} is kept "
                f"for namespace {ns}; this SpaceSecrets starts at version 1",
            )
        former = provenance.FormerSpace.of(candidate.index)
        creator = provenance.Identity.parse(annotations.get(CREATED_BY))
        namespace_uid = self.kube.namespace_uid(ns)
        refusal = provenance.restore_refusal(
            former, ns, namespace_uid, creator, restore_from or None
        )
        if refusal is not None:
            return self._afresh(history, rv, refusal)
        candidate.index["namespaceUid"] = namespace_uid  # restored into this namespace now
        message = (
            f"continues the history of the deleted SpaceSecrets {former.name} "
            f"(uid {former.uid}, version {candidate.version})"
        )
        if candidate is not history:
            if history is not None:
                self.histories.archive(history)
            self.histories.write(candidate, rv)  # the archived history takes the namespace's place
            self.histories.drop_archive(former.uid)
            candidate, rv = self.histories.read(ns)
        return Taken(candidate, rv, (True, message))

    def _afresh(self, history: versions.History | None, rv: str, why: str) -> Taken:
        if history is not None:
            self.histories.archive(history)
        return Taken(None, rv, (False, why))

    def rollback(
        self, body: Mapping[str, Any], history: versions.History | None, ring: crypto.KeyRing
    ) -> str | None:
        """Put version N back into the spec, re-sealed, with the annotation that says so (the
        next reconcile records it as a new version). What is wrong when N is not kept."""
        meta = body["metadata"]
        ns, name = meta["namespace"], meta["name"]
        raw = str((meta.get("annotations") or {}).get(ROLLBACK_ANNOTATION))
        try:
            target = int(raw)
        except ValueError:
            target = -1
        kept = history.kept_versions() if history else []
        if history is None or target not in kept:
            self.kube.patch_custom(
                SPACES, ns, name, {"metadata": {"annotations": {ROLLBACK_ANNOTATION: None}}}
            )
            return f"cannot roll back to version {raw:.20}: kept versions are {kept}"
        data: dict[str, Any] = {
            k: {
                "format": v.format,
                "sealed": crypto.seal(ring.current.public, ns, k, v.format, v.data),
            }
            for k, v in history.values(ring, target).items()
        }
        for k in (body.get("spec") or {}).get("data") or {}:
            data.setdefault(k, None)  # merge patch: null removes keys N did not have
        annotations = {ROLLBACK_ANNOTATION: None, RESTORED_ANNOTATION: str(target)}
        patch = {"metadata": {"annotations": annotations}, "spec": {"data": data}}
        self.kube.patch_custom(SPACES, ns, name, patch)
        return None
