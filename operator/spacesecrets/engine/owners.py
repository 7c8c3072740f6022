"""The owners' RoleBinding of each space: written from `spec.owners`, repaired when someone else
deletes or edits it, never written over when spacesecrets did not make it.

Engine layer. What the binding should be is `core.access`; this module reads and writes it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from spacesecrets.core import access
from spacesecrets.engine.state import State
from spacesecrets.kube import AlreadyExists, NotFound
from spacesecrets.kube.client import Kube

log = logging.getLogger("spacesecrets")


class OwnersBinding:
    def __init__(self, kube: Kube, state: State) -> None:
        self.kube, self.state = kube, state
        self._written: dict[str, list[tuple[str, str, str]]] = {}  # ns -> subjects in place

    def ensure(
        self,
        namespace: str,
        owners: Sequence[Mapping[str, Any]],
        name: str,
        uid: str,
        fresh: bool = False,
    ) -> str | None:
        """Write the owners' RoleBinding if it differs. `fresh`: the space was never reconciled,
        so the binding most likely does not exist yet and is created without a read first.
        A RoleBinding of that name that spacesecrets did not create is never overwritten: what
        is wrong is returned, for a condition and a Warning."""
        desired = access.desired_role_binding(namespace, owners, name, uid)
        subjects = access.normalized(desired["subjects"])
        if self._written.get(namespace) == subjects:
            return None  # unchanged since we last wrote or saw it: no read needed
        if fresh:
            try:
                self.kube.create_role_binding(namespace, desired)
            except AlreadyExists:
                fresh = False
        if not fresh:
            try:
                existing = self.kube.get_role_binding(namespace, access.OWNERS_ROLE_BINDING)
            except NotFound:
                self.kube.create_role_binding(namespace, desired)
            else:
                if not access.managed(existing):
                    return access.not_managed_message(namespace)
                if not access.role_binding_current(existing, desired):
                    desired["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
                    self.kube.replace_role_binding(namespace, desired)
        self._written[namespace] = subjects
        return None

    def forget(self, namespace: str) -> None:
        """The store is gone: garbage collection removes its binding."""
        self._written.pop(namespace, None)

    def drifted(self, event_type: str, obj: Mapping[str, Any]) -> str | None:
        """An owners' RoleBinding we manage changed: the namespace whose binding to repair, when
        someone else deleted or edited it (our own writes match what the space wants)."""
        meta = obj.get("metadata") or {}
        namespace = str(meta.get("namespace", ""))
        if meta.get("name") != access.OWNERS_ROLE_BINDING:
            return None
        store = self.state.owners(namespace)
        if store is None or not self.state.live_spaces(namespace):
            return None  # no store (any more): garbage collection removes its binding
        owners = [{"kind": k, "name": n} for k, n in store.owners]
        desired = access.desired_role_binding(namespace, owners, store.name, store.uid)
        if event_type != "DELETED" and access.role_binding_current(obj, desired):
            return None
        self._written.pop(namespace, None)
        return namespace

    def repair(self, namespace: str) -> None:
        """Bring the owners' RoleBinding back to what the space's owners say."""
        store = self.state.owners(namespace)
        if store is None:
            return
        owners = [{"kind": k, "name": n} for k, n in store.owners]
        problem = self.ensure(namespace, owners, store.name, store.uid)
        if problem:
            log.warning("space %s: %s", namespace, problem)
        else:
            log.info("space %s: repaired RoleBinding %s", namespace, access.OWNERS_ROLE_BINDING)
