"""Which SpaceSecrets are live in each namespace, and which one is its store.

Engine layer. The index is filled from the watch (`State.observe_space`) and, before the first
event arrives, by one metadata-only LIST per watched scope; a "no" is confirmed with the API,
since the index may still be filling after a restart.
"""

from __future__ import annotations

from collections.abc import Callable

from spacesecrets.core import decisions, versions
from spacesecrets.engine.state import State
from spacesecrets.kube import NotFound
from spacesecrets.kube.client import Kube
from spacesecrets.names import SPACES


class SpaceIndex:
    def __init__(self, kube: Kube, state: State) -> None:
        self.kube, self.state = kube, state

    def seed(
        self, namespaces: tuple[str, ...] = (), keep: Callable[[str], bool] = lambda _: True
    ) -> None:
        """Index every live SpaceSecrets before the first event arrives, so a flow seen before
        its space knows the space exists (of the namespaces `keep` says: a shard's own)."""
        for ns in namespaces or (None,):
            try:
                items = self.kube.list_custom_metadata(SPACES, ns)
            except NotFound:  # the CRD is not served yet: no spaces, the watch fills the index
                continue
            for meta in items:
                if keep(str(meta["namespace"])):
                    self.state.observe_space(meta)

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
