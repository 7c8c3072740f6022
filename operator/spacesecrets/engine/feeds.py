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
from spacesecrets.kube.watch import PAGE, Event, Feed, Resource
from spacesecrets.names import FLOW_LABEL, MANAGED_BY_LABEL

log = logging.getLogger("spacesecrets")
CUSTOM = "/apis/spacesecrets.io/v1alpha1"
RBAC = "/apis/rbac.authorization.k8s.io/v1"
Handle = Callable[[str, Mapping[str, Any]], None]
BACKLOG = 2 * PAGE  # events a feed may have waiting for the event loop before it waits too


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
            Feed(rest, resource, ns, Handoff(self.loop, handle), controller.gate)
            for resource, handle in wiring
            for ns in scopes
        ]

    def start(self) -> None:
        for feed in self.feeds:
            feed.start()

    def stop(self) -> None:
        for feed in self.feeds:
            feed.stop()

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


class Handoff:
    """A feed's events, from its thread to the event loop, in order.

    The feed does not wait for each event to be handled: a round trip between two threads costs
    more CPU than most events (measured: some 50-70 us of GIL and wake-ups an event, and a cold
    start sees about six events a namespace, most of them the echoes of our own writes). The
    feed adds to a backlog and wakes the loop only when no drain is already due; the loop takes
    the whole backlog at once. The feed waits only while `limit` events are waiting, so a
    listing still holds at most a page or two of parsed bodies at a time."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, handle: Handle, limit: int = BACKLOG
    ) -> None:
        self.loop, self.handle, self.limit = loop, handle, limit
        self._lock = threading.Lock()
        self._events: list[Event] = []  # waiting; while any are, a drain is scheduled
        self._room = threading.Event()  # set while the backlog is under its limit
        self._room.set()

    def __call__(self, events: Sequence[Event]) -> None:
        with self._lock:
            wake = not self._events
            self._events.extend(events)
            full = len(self._events) >= self.limit
            if full:
                self._room.clear()
        if wake:
            try:
                self.loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # the loop is closed: the process is ending
                return
        while full and not self._room.wait(1.0):
            if self.loop.is_closed():
                return

    def _drain(self) -> None:
        with self._lock:
            events, self._events = self._events, []
            self._room.set()
        for type_, obj in events:
            try:
                self.handle(type_, obj)
            except Exception:  # a bug in one event must not stop the feed, nor the others
                log.exception("handling a watch event failed")
