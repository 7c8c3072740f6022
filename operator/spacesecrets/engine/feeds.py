"""What the operator watches, and what each event means: the feeds wired to the controller.

Engine layer (no kopf). Each resource is followed by a `kube.watch.Feed` in a thread of its own;
its events are handed to the event loop, where the controller and the engine's watches (memory
only) decide what to queue. A page of a listing is taken before the next is read.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from spacesecrets.engine.app import Engine
from spacesecrets.engine.controller import Controller
from spacesecrets.kube.transport import Rest
from spacesecrets.kube.watch import Event, Feed, Resource
from spacesecrets.names import FLOW_LABEL, MANAGED_BY_LABEL

log = logging.getLogger("spacesecrets")
CUSTOM = "/apis/spacesecrets.io/v1alpha1"
RBAC = "/apis/rbac.authorization.k8s.io/v1"
Handle = Callable[[str, Mapping[str, Any]], None]


class Feeds:
    def __init__(
        self,
        rest: Rest,
        engine: Engine,
        controller: Controller,
        namespaces: Sequence[str] = (),
        admit: Callable[[str, Mapping[str, Any]], bool] | None = None,
    ) -> None:
        """`admit(kind, body)`: whether a SpaceSecrets ("space") or FlowSecretSync ("flow")
        event reaches the controller (with shards, only those of the namespaces served)."""
        self.engine, self.controller, self.admit = engine, controller, admit
        self.loop = asyncio.get_running_loop()
        targets = FLOW_LABEL  # projected targets only: present, whatever the flow
        owned = f"{MANAGED_BY_LABEL}=spacesecrets"  # our owners' RoleBindings
        wiring: list[tuple[Resource, Handle]] = [
            (Resource(CUSTOM, "spacesecrets", "SpaceSecrets"), self._space),
            (Resource(CUSTOM, "flowsecretsyncs", "FlowSecretSync"), self._flow),
            (Resource("/api/v1", "secrets", "Secret", targets), self._target),
            (Resource("/api/v1", "configmaps", "ConfigMap", targets), self._target),
            (
                Resource(
                    "/apis/rbac.authorization.k8s.io/v1", "rolebindings", "RoleBinding", owned
                ),
                self._binding,
            ),
            (Resource("/apis/apps/v1", "deployments", "Deployment"), self._workload),
            (Resource("/apis/apps/v1", "statefulsets", "StatefulSet"), self._workload),
        ]
        scopes: list[str | None] = [*namespaces] or [None]  # None: cluster-wide
        self.feeds = [
            Feed(rest, resource, ns, self._deliverer(handle), controller.gate)
            for resource, handle in wiring
            for ns in scopes
        ]

    def start(self) -> None:
        for feed in self.feeds:
            feed.start()

    def stop(self) -> None:
        for feed in self.feeds:
            feed.stop()

    def _deliverer(self, handle: Handle) -> Callable[[Sequence[Event]], None]:
        """Hand events to `handle` on the event loop, and wait until it has taken them."""

        def run(events: Sequence[Event], taken: threading.Event) -> None:
            try:
                for type_, obj in events:
                    handle(type_, obj)
            except Exception:  # a bug in one event must not stop the feed
                log.exception("handling a watch event failed")
            finally:
                taken.set()

        def deliver(events: Sequence[Event]) -> None:
            taken = threading.Event()
            self.loop.call_soon_threadsafe(run, events, taken)
            while not taken.wait(1.0):
                if self.loop.is_closed():
                    return

        return deliver

    # -- what the events mean -----------------------------------------------------------------

    def _space(self, type_: str, body: Mapping[str, Any]) -> None:
        if self.admit is None or self.admit("space", body):
            self.controller.space_event(type_, body)

    def _flow(self, type_: str, body: Mapping[str, Any]) -> None:
        """Created, changed (a "save"), or seen again after a restart: synced at once. Deleted:
        its target is left to garbage collection."""
        if self.admit is None or self.admit("flow", body):
            self.controller.flow_event(type_, body)

    def _target(self, type_: str, body: Mapping[str, Any]) -> None:
        """A projected target changed: restore it if someone else edited or deleted it."""
        flow = self.engine.watches.target_changed(type_, body)
        if flow is not None:
            self.controller.target_drifted(*flow)

    def _binding(self, type_: str, body: Mapping[str, Any]) -> None:
        """An owners' RoleBinding changed: repair it at once if someone else changed it."""
        namespace = self.engine.owners.drifted(type_, body)
        if namespace is not None:
            self.controller.owners_drifted(namespace)

    def _workload(self, type_: str, body: Mapping[str, Any]) -> None:
        """Sync on save: a flowRef workload's pod template changed."""
        if type_ == "DELETED":
            return
        kind = str(body.get("kind") or "")
        for ns, name in self.engine.watches.workload_changed(kind, body):
            self.controller.flow_saved(ns, name)
