"""Which SpaceSecrets are live in each namespace, which one is its store, and the namespace's UID.

Engine layer. The index is filled from the watch (`State.observe_space`) and, before the first
event arrives, by one metadata-only LIST per watched scope; a "no" is confirmed with the API,
since the index may still be filling after a restart.

The namespaces' UIDs are listed once at the start too: a new history records the UID of its
namespace (a namespace deleted and created again has a new one), and at a cold start thousands
of new histories would each cost a GET. The listed UID is used only for a SpaceSecrets whose
resourceVersion is not newer than the listing: that object existed, unchanged, when the namespace
was listed, so it lives in the namespace incarnation listed. Any newer object asks the API.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from spacesecrets.core import decisions, versions
from spacesecrets.engine.state import State
from spacesecrets.kube import NotFound
from spacesecrets.kube.client import Kube, revision
from spacesecrets.names import SPACES


class SpaceIndex:
    def __init__(self, kube: Kube, state: State) -> None:
        self.kube, self.state = kube, state
        self._uids: dict[str, str] = {}  # namespace -> UID, as listed at `_listed_at`
        self._listed_at = 0
        self._lock = threading.Lock()

    def seed(
        self, namespaces: tuple[str, ...] = (), keep: Callable[[str], bool] = lambda _: True
    ) -> None:
        """Index every live SpaceSecrets before the first event arrives, so a flow seen before
        its space knows the space exists (of the namespaces `keep` says: a shard's own); and
        the namespaces' UIDs."""
        if not namespaces:
            uids, listed_at = self.kube.list_namespace_uids()
        else:
            uids, listed_at = {}, 0  # a few namespaces watched: a GET each when needed
        with self._lock:  # (of every namespace: a few bytes each, and not a reason to note one)
            self._uids, self._listed_at = uids, listed_at
        for ns in namespaces or (None,):
            try:
                items = self.kube.list_custom_metadata(SPACES, ns)
            except NotFound:  # the CRD is not served yet: no spaces, the watch fills the index
                continue
            for meta in items:
                if keep(str(meta["namespace"])):
                    self.state.observe_space(meta)

    def namespace_uid(self, namespace: str, seen: Mapping[str, Any]) -> str:
        """The UID of the namespace that the object whose metadata is `seen` lives in: from
        the listing when the object is not newer than it (each listed UID serves one new
        history, then is dropped), else from the API."""
        with self._lock:
            uid = self._uids.pop(namespace, None)
            listed = uid is not None and 0 < revision(seen) <= self._listed_at
        return uid if uid is not None and listed else self.kube.namespace_uid(namespace)

    def _listed(self, namespace: str) -> dict[str, tuple[str, str]]:
        return {
            i["metadata"]["uid"]: (i["metadata"]["creationTimestamp"], i["metadata"]["name"])
            for i in self.kube.list_custom(SPACES, namespace)
            if not i["metadata"].get("deletionTimestamp")
        }

    def primary(self, namespace: str, history: versions.History | None = None) -> str | None:
        """The namespace's store: the one its history belongs to, else the oldest."""
        owner = history.index.get("spaceUid") if history and not history.deleted_at else None
        live = self.state.live_spaces(namespace)
        if owner and owner not in live:
            # the history's owner may simply not be indexed yet (e.g. during the first listing
            # after a restart): ask the API rather than hand its history to another object
            live = self._listed(namespace)
        return decisions.primary_store(live, owner)

    def exists(self, namespace: str) -> bool:
        """Whether the namespace has a live SpaceSecrets (the index says yes at once)."""
        return self.primary(namespace) is not None or bool(self._listed(namespace))
