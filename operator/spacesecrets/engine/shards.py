"""This process as one member of the ring of shards: its Lease, the others', and what it serves.

Engine layer (asyncio, a thread for the API calls; no kopf). `core.sharding` decides; this module
renews the member's Lease, reads the others', and applies each decision to the controller:
- `admit` is the predicate the kopf handlers ask at every SpaceSecrets and FlowSecretSync event:
  an event of a namespace this member does not serve is dropped before it leaves a trace in
  memory;
- `serving` wraps each reconcile: it refuses one of a namespace no longer served, and counts the
  reconciles in flight, so a release waits for them before the member publishes the view that
  lets another member begin;
- the namespaces gained are listed (their SpaceSecrets and FlowSecretSyncs) and handed to the
  controller as if the watch had delivered them; the reconciles find everything in place and write
  nothing;
- a namespace lost is forgotten by the controller: queue, timers, state.

One Lease per member (`spacesecrets-shard-<member>`, in the operator's namespace, labelled
`names.SHARD_LABEL`), renewed every `renew` seconds; the view is in an annotation.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from spacesecrets.core import sharding
from spacesecrets.engine.metrics import ShardMetrics
from spacesecrets.kube import AlreadyExists, NotFound, Permanent, Temporary
from spacesecrets.kube.client import Kube, revision
from spacesecrets.names import FLOWS, SHARD_LABEL, SHARD_VIEW_ANNOTATION, SPACES

log = logging.getLogger("spacesecrets")
LEASE_PREFIX = "spacesecrets-shard-"
STALE_LEASES = 20  # lease durations after which a dead member's Lease is deleted


class Served(Protocol):
    """What the ring needs of the controller."""

    def space_event(self, event_type: str, body: Mapping[str, Any]) -> None: ...
    def flow_event(self, event_type: str, body: Mapping[str, Any]) -> None: ...
    def release(self, namespace: str) -> None: ...
    def queue_depth(self) -> int: ...


@dataclass(frozen=True)
class ShardConfig:
    member: str
    namespace: str  # the operator's, where the Leases live
    duration: float = 15.0  # a Lease not renewed for this long is a dead member's
    renew: float = 3.0
    margin: float = 5.0  # a member stops serving this long before others may count it dead

    @property
    def lease(self) -> str:
        return LEASE_PREFIX + self.member


def lease_body(config: ShardConfig, view: sharding.View, now: dt.datetime) -> dict[str, Any]:
    """The member's Lease as it renews it (the resourceVersion is added by the caller)."""
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": config.lease,
            "namespace": config.namespace,
            "labels": {SHARD_LABEL: "member"},
            "annotations": {SHARD_VIEW_ANNOTATION: ",".join(view)},
        },
        "spec": {
            "holderIdentity": config.member,
            "leaseDurationSeconds": max(1, round(config.duration)),
            "renewTime": stamp,
        },
    }


class Shards:
    """The member's side of the ring: membership, and the gate in front of the controller."""

    def __init__(
        self,
        config: ShardConfig,
        kube: Kube,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.config, self.kube, self.clock, self.wall = config, kube, clock, wall
        me = config.member
        self.ring = sharding.Ring(me, acting=(me,), published=())
        self.controller: Served | None = None
        self.adopted = self.released = 0  # handovers, for the metrics
        self._cond = threading.Condition()
        self._inflight: dict[str, int] = {}
        self._known: set[str] = set()
        self._floors: dict[tuple[str, str, str], int] = {}  # listed at adoption: older is stale
        self._adopting: dict[str, set[tuple[str, str]]] = {}
        self._unadopted: set[str] = set()  # served, but their listing failed: tried again
        self._releasing: set[str] = set()  # released with a reconcile still in flight
        self._published: sharding.View = ()  # the view our Lease shows
        self._to_adopt: set[str] = set()  # given by a round, not yet listed
        self._adopter: asyncio.Task[None] | None = None
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="shard")  # the Lease calls
        self._seen: dict[str, tuple[str, float]] = {}  # lease -> (resourceVersion, first seen)
        self._rv = ""  # of our own Lease
        self._renewed: float | None = None  # when the last successful renewal began
        self._task: asyncio.Task[None] | None = None

    # -- the gate -------------------------------------------------------------------------------

    def owns(self, namespace: str) -> bool:
        return self.ring.may_serve(namespace)

    def leads(self) -> bool:
        """Whether this member does the ring's cluster-wide chores (key rotation, history
        clean-up): the one that serves the operator's own namespace's name, which no space
        may use, so exactly one member at a time, handed over like any namespace."""
        return self.owns(self.config.namespace)

    def note(self, namespace: str) -> bool:
        """Remember that `namespace` exists (a later handover considers it); whether it is
        served now."""
        with self._cond:  # with `apply`'s swap of the ring: seen by the old ring's handover or
            self._known.add(namespace)  # admitted by the new one, never missed by both
            return self.owns(namespace)

    def admit(self, kind: str, body: Mapping[str, Any]) -> bool:
        """Whether a watch event of a SpaceSecrets (`kind` "space") or FlowSecretSync ("flow")
        reaches the controller."""
        meta = body.get("metadata") or {}
        ns, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        if not self.note(ns):
            return False
        key = (kind, ns, name)
        with self._cond:
            floor = self._floors.get(key)
            if floor is not None:
                if revision(meta) < floor:
                    return False  # a watch event older than what the adoption listed
                del self._floors[key]
            delivered = self._adopting.get(ns)
            if delivered is not None:
                delivered.add((kind, name))
        return True

    @contextlib.contextmanager
    def serving(self, namespace: str) -> Iterator[bool]:
        """Around one reconcile: True when the namespace is served, held until it returns."""
        with self._cond:
            ours = self.owns(namespace)
            if ours:
                self._inflight[namespace] = self._inflight.get(namespace, 0) + 1
        try:
            yield ours
        finally:
            if ours:
                with self._cond:
                    left = self._inflight[namespace] = self._inflight[namespace] - 1
                    if not left:
                        del self._inflight[namespace]
                        self._cond.notify_all()

    def served(self) -> int:
        with self._cond:
            known = list(self._known)
        return sum(1 for ns in known if self.owns(ns))

    def _wait_idle(self, namespaces: Iterable[str], timeout: float) -> bool:
        wanted = set(namespaces)
        with self._cond:
            return self._cond.wait_for(lambda: not wanted & self._inflight.keys(), timeout)

    # -- the Leases -----------------------------------------------------------------------------

    def _renew(self) -> sharding.View:
        """Publish the acting view, creating the Lease on the first call; the view published.

        The ring keeps acting on the view published before until the Leases are read again:
        only a read made after the renewal may let this member begin to serve."""
        started = self.clock()
        view = self._publishable()
        body = lease_body(self.config, view, self.wall())
        if self._rv:
            body["metadata"]["resourceVersion"] = self._rv
            out = self.kube.replace_lease(self.config.namespace, body)
        else:
            try:
                out = self.kube.create_lease(self.config.namespace, body)
            except AlreadyExists:  # a Lease of an earlier life of this member
                current = self.kube.get_lease(self.config.namespace, self.config.lease)
                body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
                out = self.kube.replace_lease(self.config.namespace, body)
        self._rv = str(out["metadata"]["resourceVersion"])
        self._renewed = started
        self._published = view
        return view

    def _publishable(self) -> sharding.View:
        """The acting view; but while a namespace it takes from this member still has a
        reconcile in flight, the view published before, which still claims it: no other member
        begins to serve a namespace before our last write to it is done, however long that
        write takes (under load a reconcile can outlast the wait of a release)."""
        with self._cond:
            busy = any(ns in self._inflight and not self.owns(ns) for ns in self._releasing)
        return self._published if busy and self._published else self.ring.acting

    def _read(self, published: sharding.View) -> sharding.Ring:
        """The ring as the Leases show it now (a consistent LIST, made after our renewal)."""
        now = self.clock()
        others: dict[str, sharding.View] = {}
        present = set()
        for lease in self.kube.list_leases(self.config.namespace, SHARD_LABEL):
            meta = lease["metadata"]
            name, rv = str(meta["name"]), str(meta.get("resourceVersion", ""))
            member, view = sharding.published_view(lease)
            present.add(name)
            seen = self._seen.get(name)
            if seen is None or seen[0] != rv:
                seen = self._seen[name] = (rv, now)
            if not member or member == self.config.member:
                continue
            age = now - seen[1]
            if not sharding.expired(age, self.config.duration):
                others[member] = view
            elif age > STALE_LEASES * self.config.duration:
                self._drop_stale(name, rv)
        for name in set(self._seen) - present:
            del self._seen[name]  # deleted: its member left
        return self._ring(others, published)

    def _ring(self, others: Mapping[str, sharding.View], published: sharding.View) -> sharding.Ring:
        renewed = self._renewed
        fenced = renewed is None or sharding.fenced(
            self.clock() - renewed, self.config.duration, self.config.margin
        )
        acting = sharding.view(self.config.member, others)
        return sharding.Ring(self.config.member, acting, published, others, fenced)

    def _drop_stale(self, name: str, rv: str) -> None:
        with contextlib.suppress(NotFound, Temporary, Permanent):
            self.kube.delete_lease(self.config.namespace, name, rv)
            log.info("shard %s: deleted the Lease of a long dead member: %s", self.ring.me, name)

    async def leave(self) -> None:
        """At a clean stop: serve nothing, let what is in flight finish, and delete the Lease,
        so that the others take over at once rather than after the lease duration."""
        await self.stop()
        ring = self.ring
        self.ring = sharding.Ring(ring.me, ring.acting, ring.published, ring.others, fenced=True)
        with self._cond:
            known = list(self._known)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self._wait_idle, known, self.config.margin)
        if self._rv:
            with contextlib.suppress(NotFound, Temporary, Permanent):
                await loop.run_in_executor(
                    None, self.kube.delete_lease, self.config.namespace, self.config.lease, self._rv
                )

    # -- rounds ---------------------------------------------------------------------------------

    async def round(self, wait: bool = True) -> sharding.Handover:
        """Publish the acting view, read the ring, and apply the handover it implies (its
        adoptions awaited, unless not `wait`). The Lease calls have threads of their own: a
        renewal must never queue behind the listing of an adoption or other API work."""
        loop = asyncio.get_running_loop()
        try:
            published = await loop.run_in_executor(self._pool, self._renew)
            ring = await loop.run_in_executor(self._pool, self._read, published)
        except (Temporary, Permanent) as exc:
            log.warning("shard %s: cannot renew or read the Leases: %s", self.ring.me, exc)
            ring = self._ring(self.ring.others, self.ring.published)  # (fenced in time)
        return await self.apply(ring, wait)

    async def apply(self, ring: sharding.Ring, wait: bool = True) -> sharding.Handover:
        """Swap in `ring`: release at once what it takes away (before the next renewal
        publishes it), and adopt what it gives -- awaited if `wait`, else in the background, so
        that the renewals go on while a large adoption lists (at 20,000 namespaces a listing
        under load outlasted the lease, and the ring thrashed)."""
        with self._cond:  # one step with `note`: a namespace first seen now is either in `known`
            known = list(self._known)  # (and adopted below) or admitted by the new ring
            before, self.ring = self.ring, ring  # from here on the gate refuses what is released
        change = sharding.handover(before, ring, known)
        with self._cond:  # released earlier, whose reconciles have finished since
            done = {ns for ns in self._releasing if ns not in self._inflight or self.owns(ns)}
            self._releasing -= done
        self._forget(done)
        if change.release:
            await self._release(change.release)
        with self._cond:
            self._unadopted -= change.release
            retry = frozenset(ns for ns in self._unadopted if self.owns(ns))
        if change.adopt or retry:
            self._to_adopt |= change.adopt | retry
            if self._adopter is None or self._adopter.done():
                self._adopter = asyncio.get_running_loop().create_task(self._adopt_pending())
            if wait:
                await asyncio.shield(self._adopter)
        if before.acting != ring.acting or before.fenced != ring.fenced:
            log.info(
                "shard %s: members %s%s; serving %d namespaces",
                ring.me, ",".join(ring.acting), " (fenced)" if ring.fenced else "", self.served(),
            )  # fmt: skip
        return change

    async def _release(self, namespaces: frozenset[str]) -> None:
        loop = asyncio.get_running_loop()
        # what is in flight finishes before the next renewal tells the others to begin
        timeout = max(1.0, self.config.margin)
        if not await loop.run_in_executor(self._pool, self._wait_idle, namespaces, timeout):
            log.warning(
                "shard %s: reconciles still in flight at a release: the view that releases "
                "them is published once they are done",
                self.ring.me,
            )
        with self._cond:
            busy = namespaces & self._inflight.keys()
            self._releasing |= busy
        self._forget(namespaces - busy)
        self.released += len(namespaces)
        log.debug("shard %s: released %s", self.ring.me, sorted(namespaces))

    def _forget(self, namespaces: Iterable[str]) -> None:
        """The controller forgets what it knew of namespaces released and no longer busy."""
        for ns in sorted(namespaces):
            if self.controller is not None and not self.owns(ns):
                self.controller.release(ns)

    async def _adopt_pending(self) -> None:
        """Adopt what the rounds gave, one adoption at a time; what a round gives meanwhile
        is adopted next (and each namespace only if still served when its listing is in)."""
        while self._to_adopt:
            batch, self._to_adopt = frozenset(self._to_adopt), set()
            try:
                await self._adopt(batch)
            except Exception:  # the ring must outlive a bug in one adoption
                log.exception("shard %s: an adoption failed", self.ring.me)
                with self._cond:
                    self._unadopted |= batch

    async def _adopt(self, namespaces: frozenset[str]) -> None:
        """List the gained namespaces' objects and hand them to the controller, skipping any the
        watch delivered meanwhile (newer than the listing). One paged listing of each kind for
        them all, not two per namespace: a ring change moves about 1/N of every namespace, and
        thousands when a member of a large ring dies. A listing that fails is tried again at
        the next round: a namespace's objects may have no event for hours."""
        loop = asyncio.get_running_loop()
        with self._cond:
            for ns in namespaces:
                self._adopting[ns] = set()
        try:
            listed = await loop.run_in_executor(None, self._list, namespaces)
        except (Temporary, Permanent) as exc:
            log.warning("shard %s: cannot list %d namespaces to adopt: %s", self.ring.me,
                        len(namespaces), exc)  # fmt: skip
            with self._cond:
                for ns in namespaces:
                    self._adopting.pop(ns, None)
                self._unadopted |= namespaces
            return
        for ns in sorted(namespaces):
            with self._cond:
                delivered = self._adopting.pop(ns, set())
                self._unadopted.discard(ns)
            if self.controller is None or not self.owns(ns):
                continue
            for kind, body in listed.get(ns, ()):
                meta = body["metadata"]
                if (kind, meta["name"]) in delivered:
                    continue
                with self._cond:
                    self._floors[(kind, ns, meta["name"])] = revision(meta)
                if kind == "space":
                    self.controller.space_event("ADDED", body)
                else:
                    self.controller.flow_event("ADDED", body)
        self.adopted += len(namespaces)
        log.debug("shard %s: adopted %s", self.ring.me, sorted(namespaces))

    def _list(self, namespaces: frozenset[str]) -> dict[str, list[tuple[str, dict[str, Any]]]]:
        """Each namespace's SpaceSecrets and FlowSecretSyncs, as ("space" | "flow", body)."""
        out: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for kind, plural in (("space", SPACES), ("flow", FLOWS)):
            for body in self.kube.iter_custom(plural):
                ns = str(body["metadata"].get("namespace", ""))
                if ns in namespaces:
                    body["metadata"].pop("managedFields", None)  # many are held at once
                    out.setdefault(ns, []).append((kind, body))
        return out

    async def join(self, timeout: float) -> None:
        """Before the watches start: renew and read until the ring is stable (every live member
        publishes the same view), `timeout` at most -- so the first listing is admitted by the
        ring it will be served by, and little is adopted later."""
        deadline = self.clock() + timeout
        # read before the first renewal: a Lease that claimed every namespace at once would
        # make the others stop serving until they read it
        loop = asyncio.get_running_loop()
        with contextlib.suppress(Temporary, Permanent):
            await self.apply(await loop.run_in_executor(self._pool, self._read, ()))
        while True:
            await self.round()
            if (self.ring.stable() and not self.ring.fenced) or self.clock() >= deadline:
                return
            await asyncio.sleep(min(1.0, self.config.renew))

    def report(self, metrics: ShardMetrics) -> None:
        """The shard's gauges, read at scrape time."""
        metrics.namespaces.set_function(self.served)
        metrics.members.set_function(lambda: len(self.ring.acting))
        metrics.fenced.set_function(lambda: float(self.ring.fenced))
        metrics.leads.set_function(lambda: float(self.leads()))
        metrics.handovers.labels(metrics.member, "adopted").set_function(lambda: self.adopted)
        metrics.handovers.labels(metrics.member, "released").set_function(lambda: self.released)
        metrics.queue_depth.set_function(
            lambda: self.controller.queue_depth() if self.controller else 0
        )

    def start(self, controller: Served) -> None:
        self.controller = controller
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.config.renew)
            try:
                await self.round(wait=False)
            except Exception:  # the ring must outlive a bug in one round
                log.exception("shard %s: a round failed", self.ring.me)

    async def stop(self) -> None:
        for task in (self._task, self._adopter):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
