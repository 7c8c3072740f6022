"""From kopf's events to reconciles: what changed, what to queue, when to retry, when to tick.

Engine layer (asyncio and a thread pool; no kopf). The kopf handlers pass every event here. Changes
are level-based: a SpaceSecrets is reconciled when its uid, generation or rollback annotations
differ from what its last successful reconcile saw, and a FlowSecretSync when its uid, generation or
authorization stamp do, or when it carries a Sync now request its status does not record as
handled. Nothing is written to the objects for this bookkeeping -- kopf's own per-object
annotations cost a patch per object -- so a restart simply reconciles everything once, and an
unchanged object costs no write. Retries and every flow's autosync ticks are timers in the work
queue's heap.

Only what may pass is retried on a timer: a temporary failure (a conflict, throttling, the API
server away) backs off up to MAX_RETRY_SECONDS, and a bug a few times. A permanent one (refused,
invalid, gone) was reported by the reconcile, once, and a timer would only repeat the refusal: the
object is reconciled again when something it depends on changes -- its own next event, a drift of
its target, its space's reconcile, or, for a flow, its next autosync tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

from spacesecrets.core import schedule
from spacesecrets.core.decisions import status_digest
from spacesecrets.engine.app import Engine
from spacesecrets.engine.flows import SpaceNotReady
from spacesecrets.engine.state import FlowEntry
from spacesecrets.engine.workqueue import Key, WorkQueue
from spacesecrets.kube import AlreadyExists, NamespaceTerminating, NotFound, Permanent, Temporary
from spacesecrets.names import RESTORED_ANNOTATION, ROLLBACK_ANNOTATION, QueueReason

log = logging.getLogger("spacesecrets")

SPACE, FLOW = "space", "flow"
TICK = QueueReason.AUTOSYNC
DELETED = QueueReason.DELETED
MAX_RETRY_SECONDS = 30.0
MAX_BUG_RETRIES = 5  # then the object waits for a change, like a permanent failure
PEERING_CHECK_SECONDS = 5.0


def _key(kind: str, body: Mapping[str, Any]) -> Key:
    meta = body["metadata"]
    return kind, str(meta["namespace"]), str(meta["name"])


def pack(body: Mapping[str, Any]) -> bytes:
    """A space's body as one compact document, without its managedFields, while it waits in the
    queue: at a cold start every space waits at once, and thousands of parsed bodies held for
    a minute between the reconciles' own allocations would leave the heap fragmented."""
    meta = {k: v for k, v in body["metadata"].items() if k != "managedFields"}
    return json.dumps({**body, "metadata": meta}, separators=(",", ":")).encode()


def space_essence(body: Mapping[str, Any]) -> tuple[object, ...]:
    """What a reconcile of a SpaceSecrets depends on, besides its history."""
    meta = body["metadata"]
    annotations = meta.get("annotations") or {}
    return (
        meta.get("uid"),
        meta.get("generation"),
        annotations.get(ROLLBACK_ANNOTATION),
        annotations.get(RESTORED_ANNOTATION),
    )


def _flow_essence(entry: FlowEntry) -> tuple[object, ...]:
    """What a sync of a FlowSecretSync depends on, besides its Sync now request (an approval
    changes only the API server's stamp of who authorized the flow)."""
    return entry.uid, entry.generation, entry.authorized_by


def _flow_reason(
    entry: FlowEntry, seen: tuple[object, ...] | None, asked: str | None
) -> str | None:
    """Why a flow's event queues it, if it does. A new Sync now request not handled yet (also
    one made while no operator ran, or in the manifest a flow is created with); else a change of
    what its sync depends on. Our own status write, or a request already handled, queues
    nothing."""
    if entry.sync_now != asked and entry.sync_now_request() is not None:
        return QueueReason.SYNC_NOW
    if seen == _flow_essence(entry):
        return None
    if seen is not None:
        return QueueReason.UPDATE
    return QueueReason.RESUME if entry.synced_version is not None else QueueReason.CREATE


class Controller:
    def __init__(self, engine: Engine, workers: int = 16) -> None:
        self.engine = engine
        self.workers = workers
        self.queue = WorkQueue(rank=self._rank, ranks=3)
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix="reconcile")
        self.active = True  # False while a peer with a higher priority serves (peering mode)
        self.gate = threading.Event()  # set while active: the watch feeds deliver only then
        self._bodies: dict[Key, bytes] = {}  # spaces waiting for a reconcile, packed
        self._handled: dict[Key, tuple[object, ...]] = {}
        # a space's status: the one its last reconcile left, and the last the watch brought
        # while a reconcile ran (the echo of its write and the write's answer race)
        self._left: dict[Key, str] = {}
        self._late: dict[Key, tuple[str, Mapping[str, Any]]] = {}
        self._running: set[Key] = set()
        self._ticks: dict[Key, tuple[float, float, str]] = {}  # flow -> period, next, uid
        self._failures: dict[Key, int] = {}
        self._retries: dict[Key, float] = {}  # when each failed key is tried again
        self._waiting: dict[str, set[Key]] = {}  # namespace -> flows waiting for its space
        self._tasks: list[asyncio.Task[None]] = []
        # around each reconcile: whether this process serves the namespace (engine.shards)
        self.serving: Callable[[str], contextlib.AbstractContextManager[bool]] = _everywhere

    def _rank(self, key: Key) -> int:
        """A per-namespace pipeline: a flow whose space has a recorded version goes first, so
        each space's flows are projected as soon as it is ready, not after every other space;
        then the spaces; then the flows still waiting for theirs (a space's reconcile moves them
        up, `_succeeded`). What a flow is handed is its space's recorded version whatever the
        order: only a reconcile that wrote the history makes the space known."""
        kind, ns, _ = key
        if kind == SPACE:
            return 1
        return 0 if self.engine.state.space(ns) is not None else 2

    # -- events, on the event loop ------------------------------------------------------------

    def space_event(self, event_type: str, body: Mapping[str, Any]) -> None:
        key = _key(SPACE, body)
        gone = event_type == "DELETED"
        self.engine.state.observe_space(body["metadata"], deleted=gone)
        if gone or body["metadata"].get("deletionTimestamp"):
            self._bodies.pop(key, None)
            self._forget_space(key)
            self.queue.forget(key)
            if gone:
                self.queue.add(key, DELETED)
            return
        if self._handled.get(key) != space_essence(body):
            self._bodies[key] = pack(body)
            self.queue.add(key, QueueReason.CHANGE)
            return
        # nothing its reconcile depends on changed: its status, unless it is the one we left
        # (someone else's write, e.g. a killed shard's last request applied after our read)
        digest = status_digest(body.get("status"))
        if key in self._running:
            self._late[key] = digest, body  # judged when the reconcile has said what it left
        elif key in self._left and self._left[key] != digest:
            self._status_drifted(key, body)

    def _status_drifted(self, key: Key, body: Mapping[str, Any]) -> None:
        self._left.pop(key, None)
        self._bodies[key] = pack(body)
        self.queue.add(key, QueueReason.STATUS_DRIFT)

    def _forget_space(self, key: Key) -> None:
        self._handled.pop(key, None)
        self._left.pop(key, None)
        self._late.pop(key, None)

    def flow_event(self, event_type: str, body: Mapping[str, Any]) -> None:
        key = _key(FLOW, body)
        _, ns, name = key
        if event_type == "DELETED":
            self.engine.state.forget_flow(ns, name)
            self._forget(key)
            return
        before = self.engine.state.flow(ns, name)
        seen = _flow_essence(before) if before else None
        asked = before.sync_now if before else None
        entry = self.engine.state.register_flow(body)
        if entry.deleting:  # its target is left to garbage collection
            self._forget(key)
            return
        reason = _flow_reason(entry, seen, asked)
        if reason is not None:
            self.queue.add(key, reason)
        autosync = str((body.get("spec") or {}).get("autosync", "1m"))
        period = schedule.period_seconds(autosync, self.engine.settings.autosync_scale)
        self._arm_tick(key, entry.uid, period)

    def flow_saved(self, namespace: str, name: str) -> None:
        self.queue.add((FLOW, namespace, name), QueueReason.SAVE)

    def target_drifted(self, namespace: str, name: str) -> None:
        self.queue.add((FLOW, namespace, name), QueueReason.DRIFT)

    def owners_drifted(self, namespace: str) -> None:
        """Someone else deleted or edited a space's owners RoleBinding: repair it now."""
        store = self.engine.state.owners(namespace)
        if store is not None:
            self.queue.add((SPACE, namespace, store.name), QueueReason.OWNERS_DRIFT)

    def _forget(self, key: Key) -> None:
        self.queue.forget(key)
        self._ticks.pop(key, None)
        self._failures.pop(key, None)
        self._retries.pop(key, None)

    # -- ticks --------------------------------------------------------------------------------

    def _arm_tick(self, key: Key, uid: str, period: float, after: float | None = None) -> None:
        armed = self._ticks.get(key)
        if after is None and armed is not None and armed[0] == period and armed[2] == uid:
            return  # already ticking at this period
        when = schedule.next_tick(uid, period, time.time() if after is None else after)
        self._ticks[key] = (period, when, uid)
        self.queue.add_at(when, key, TICK)

    def _fire(self, when: float, key: Key, reason: str) -> None:
        if reason != TICK:  # a retry, unless the key succeeded since
            if self._retries.get(key) != when:
                return
            if self.active:
                del self._retries[key]
                self.queue.add(key, reason)
            else:  # kopf decides when a standby takes over; our view of it may lag
                self._retry_after(PEERING_CHECK_SECONDS, key, reason)
            return
        armed = self._ticks.get(key)
        if armed is None or armed[1] != when:
            return  # re-armed at another period, or the flow is gone
        period, _, uid = armed
        self._arm_tick(key, uid, period, after=when)
        _, ns, name = key
        if self.active and self.engine.flows.needs_tick(ns, name):
            self.queue.add(key, TICK)

    # -- running ------------------------------------------------------------------------------

    def start(
        self, peering: Callable[[], Mapping[str, Any]] | None = None, priority: int = 0
    ) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._worker()) for _ in range(self.workers)]
        self._tasks.append(loop.create_task(self._timers()))
        if peering is not None:
            self._tasks.append(loop.create_task(self._follow_peering(peering, priority)))
        else:
            self._set_active(True)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def _timers(self) -> None:
        while True:
            await self.queue.wait_for_timers(60.0)
            for when, key, reason in self.queue.due(time.time()):
                try:
                    self._fire(when, key, reason)
                except Exception:  # one timer's bug must not stop every tick and retry
                    log.exception("a timer of %s %s/%s failed", *key)

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            key, reason = await self.queue.get()
            self.engine.kube.hold_normal_events(True)
            packed = self._bodies.get(key)
            body = json.loads(packed) if packed is not None else None
            if body is not None:  # the event of our own status write must not queue it again
                self._handled[key] = space_essence(body)
            self._running.add(key)
            try:
                done = await loop.run_in_executor(self.executor, self._reconcile, key, reason, body)
            except Exception as exc:
                self._running.discard(key)
                self._failed(key, reason, exc)
            else:
                self._running.discard(key)
                self._succeeded(key, packed, done.status)
                for flow in done.told:  # a deleted store's flows, through the queue like the rest
                    self.queue.add(flow, QueueReason.SPACE_DELETED)
            finally:
                self._late.pop(key, None)
                self.queue.done(key)
                if self.queue.idle:
                    self.engine.kube.hold_normal_events(False)

    def _reconcile(self, key: Key, reason: str, body: Mapping[str, Any] | None) -> Done:
        """One reconcile, in a worker thread. Nothing when another shard serves the namespace
        now."""
        with self.serving(key[1]) as ours:
            return self._reconcile_served(key, reason, body) if ours else Done()

    def _reconcile_served(self, key: Key, reason: str, body: Mapping[str, Any] | None) -> Done:
        kind, ns, _ = key
        if kind == FLOW:
            self.engine.flows.sync(ns, key[2], reason=reason)
        elif body is not None:
            return Done(status=self.engine.spaces.reconcile(body))
        elif reason == DELETED and self.engine.spaces.deleted(ns):
            return Done(tuple((FLOW, ns, entry.name) for entry in self.engine.state.flows_in(ns)))
        elif reason == QueueReason.OWNERS_DRIFT:
            self.engine.owners.repair(ns)
        return Done()

    def _failed(self, key: Key, reason: str, exc: Exception) -> None:
        self._forget_space(key)  # the next event of this object is worth a reconcile
        kind, ns, name = key
        failures = self._failures[key] = self._failures.get(key, 0) + 1
        if isinstance(exc, SpaceNotReady):
            self._waiting.setdefault(ns, set()).add(key)  # its space's reconcile wakes it
            if failures == 1:
                self._retry_after(MAX_RETRY_SECONDS, key, reason)  # once, in case none comes
            return
        if isinstance(exc, NamespaceTerminating | NotFound):
            log.debug("%s %s/%s skipped, gone or going: %s", kind, ns, name, exc)
            return
        if isinstance(exc, Permanent):  # the reconcile could not even report it
            log.warning("%s %s/%s: %s; not retried until it changes", kind, ns, name, exc)
            return
        if isinstance(exc, Temporary | AlreadyExists):
            wanted = exc.delay if isinstance(exc, Temporary) else 1.0
            delay = min(MAX_RETRY_SECONDS, max(wanted, 0.5 * 2**failures))
            log.warning("%s %s/%s: %s; retrying in %.0fs", kind, ns, name, exc, delay)
            self._retry_after(delay, key, reason)
            return
        # a bug must not stop the worker, nor fill the log: its traceback once, then one line
        # per retry, and after a few the object waits for a change
        if failures == 1:
            log.error("reconcile of %s %s/%s failed", kind, ns, name, exc_info=exc)
        why = type(exc).__name__  # its message may quote anything, a value among it
        if failures > MAX_BUG_RETRIES:
            log.error("%s %s/%s: %s again; not retried until it changes", kind, ns, name, why)
            return
        delay = min(MAX_RETRY_SECONDS, 0.5 * 2**failures)
        log.warning("%s %s/%s: %s; retrying in %.0fs", kind, ns, name, why, delay)
        self._retry_after(delay, key, reason)

    def _retry_after(self, delay: float, key: Key, reason: str) -> None:
        when = self._retries[key] = time.time() + delay
        self.queue.add_at(when, key, reason)

    def _succeeded(
        self, key: Key, packed: bytes | None, status: Mapping[str, Any] | None = None
    ) -> None:
        self._failures.pop(key, None)
        self._retries.pop(key, None)
        kind, ns, _ = key
        if kind != SPACE or packed is None:
            return  # (a space's essence was marked handled when its worker took it)
        if self._bodies.get(key) is packed:
            del self._bodies[key]
        if status is not None:
            left = self._left[key] = status_digest(status)
            late = self._late.pop(key, None)
            if late is not None and late[0] != left and key not in self._bodies:
                self._status_drifted(key, late[1])  # (a newer body queued wins over it)
        # flows waiting for this space, or failing, get another chance now rather than next tick;
        # those queued behind the other spaces move ahead of them (their rank is now the first)
        waiting = self._waiting.pop(ns, set())
        for entry in self.engine.state.flows_in(ns):
            flow = (FLOW, ns, entry.name)
            if flow in waiting or not entry.synced:
                self.queue.add(flow, QueueReason.SPACE_READY)
            else:
                self.queue.rerank(flow)  # e.g. resumed after a restart, queued for its check
        for entry in self.engine.flows.to_recheck(ns):
            self.queue.add((FLOW, ns, entry.name), QueueReason.OWNERS_CHANGED)

    # -- shards -------------------------------------------------------------------------------

    def queue_depth(self) -> int:
        return len(self.queue)

    def release(self, namespace: str) -> None:
        """Another shard serves `namespace` from now on: forget it -- what is queued, its
        timers, what is known of it. (Its reconciles in flight finished: engine.shards.)"""
        state = self.engine.state
        keys = {k for k in self._bodies if k[1] == namespace}
        keys |= {(SPACE, namespace, name) for _, name in state.live_spaces(namespace).values()}
        keys |= {(FLOW, namespace, name) for name in state.flow_names(namespace)}
        for key in keys:
            self._forget(key)
            self._bodies.pop(key, None)
            self._forget_space(key)
        self._waiting.pop(namespace, None)
        state.forget_namespace(namespace)
        self.engine.owners.forget(namespace)
        self.engine.histories.drop(namespace)

    # -- peering ------------------------------------------------------------------------------

    def _set_active(self, active: bool) -> None:
        """Serve, or stand by: the watch feeds pause while a peer of higher priority serves, and
        list afresh when it has gone (as kopf's own watches did)."""
        if active != self.active or active != self.gate.is_set():
            log.info("serving" if active else "standing by: a peer of higher priority serves")
        self.active = active
        if active:
            self.gate.set()
        else:
            self.gate.clear()

    async def _follow_peering(self, read: Callable[[], Mapping[str, Any]], priority: int) -> None:
        """kopf pauses its watches when a peer of higher priority is alive; our timers follow."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                peers = await loop.run_in_executor(self.executor, read)
                self._set_active(not _outranked(peers, priority, dt.datetime.now(dt.UTC)))
            except NotFound:
                self._set_active(True)  # no peering object: no peer to yield to
            except (Temporary, Permanent) as exc:
                log.debug("cannot read the peering object: %s", exc)
            await asyncio.sleep(PEERING_CHECK_SECONDS)


class Done(NamedTuple):
    """What a reconcile leaves to the controller: a deleted store's flows to queue, and the
    status a space's reconcile left."""

    told: tuple[Key, ...] = ()
    status: Mapping[str, Any] | None = None


@contextlib.contextmanager
def _everywhere(namespace: str) -> Iterator[bool]:
    """Without shards, this process serves every namespace."""
    yield True


def _outranked(peering: Mapping[str, Any], priority: int, now: dt.datetime) -> bool:
    for peer in (peering.get("status") or {}).values():
        if not isinstance(peer, Mapping) or int(peer.get("priority", 0)) <= priority:
            continue
        try:
            seen = dt.datetime.fromisoformat(str(peer["lastseen"]))
        except (KeyError, ValueError):
            continue
        if seen.tzinfo is None:
            seen = seen.replace(tzinfo=dt.UTC)
        if seen + dt.timedelta(seconds=int(peer.get("lifetime", 60))) > now:
            return True
    return False
