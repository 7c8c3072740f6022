"""The kopf handlers: the only kopf-decorated module.

Edge. Each handler parses what kopf hands it, calls `reconcile.Operator`, and turns our errors into
kopf's (`Temporary` -> `kopf.TemporaryError` with its delay). No business logic lives here.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

import kopf

from spacesecrets import GROUP, schedule
from spacesecrets.kube import Kube, NamespaceTerminating, Permanent, Temporary, make_client
from spacesecrets.metrics import Metrics
from spacesecrets.projection import MANAGED_BY_LABEL
from spacesecrets.reconcile import Operator
from spacesecrets.settings import Settings

log = logging.getLogger("spacesecrets")
FINALIZER = f"{GROUP}/finalizer"
# kopf ignores every annotation under the prefix of its own storage, and users annotate with
# spacesecrets.io/rollback-to; so kopf's bookkeeping lives under a sub-domain of ours.
KOPF_PREFIX = f"operator.{GROUP}"
MANAGED = {MANAGED_BY_LABEL: "spacesecrets"}
RESCHEDULE_CHECK_SECONDS = 10.0
MEMORY_TRIM_SECONDS = 15.0


class CompactDiffBase(kopf.AnnotationsDiffBaseStorage):
    """kopf's last-handled configuration, with each sealed value replaced by a short digest.

    The handlers are level-based and never read kopf's field diffs, but kopf needs the essence to
    notice a change; digests keep that working while the annotation stays small (annotations share
    256 KiB with kubectl's own copy of the spec).
    """

    def build(self, *, body: Any, extra_fields: Any = None) -> Any:
        essence = super().build(body=body, extra_fields=extra_fields)
        data = (essence.get("spec") or {}).get("data")
        if isinstance(data, dict):
            for entry in data.values():
                if isinstance(entry, dict) and "sealed" in entry:
                    entry["sealed"] = hashlib.sha256(str(entry["sealed"]).encode()).hexdigest()[:16]
        return essence


def _operator(memo: Any) -> Operator:
    op: Operator = memo["operator"]
    return op


async def _run(fn: Callable[[], object]) -> None:
    """Run blocking API work off the event loop, mapping our errors to kopf's."""
    try:
        await asyncio.get_running_loop().run_in_executor(None, fn)
    except NamespaceTerminating as exc:
        log.debug("skipped, the namespace is being deleted: %s", exc)
    except Temporary as exc:
        raise kopf.TemporaryError(str(exc), delay=exc.delay) from None
    except Permanent as exc:
        raise kopf.TemporaryError(str(exc), delay=30) from None


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config = Settings.from_env()
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=KOPF_PREFIX, v1=False
    )
    settings.persistence.diffbase_storage = CompactDiffBase(prefix=KOPF_PREFIX, v1=False)
    settings.posting.level = logging.WARNING  # our own Events say what users care about
    # kopf re-processes an object until it sees its own last patch; under load that wait is long
    settings.persistence.consistency_timeout = 30
    # one INFO line per handled object is noise at thousands of objects; warnings stay
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 30
    settings.batching.error_delays = [1, 2, 5, 10, 20, 30]
    settings.execution.max_workers = 16
    if config.peering:
        settings.peering.name = config.peering
        settings.peering.mandatory = True
        settings.peering.clusterwide = True
        # kopf pauses every operator that sees a peer of equal or higher priority: a distinct
        # random priority per replica makes exactly one active. A short lifetime lets a standby
        # take over within seconds when the active replica dies without saying goodbye.
        settings.peering.priority = secrets.randbelow(1_000_000) + 1
        settings.peering.lifetime = 15
        settings.peering.stealth = True

    kube = Kube(make_client())
    metrics = Metrics()
    if config.metrics_port:
        metrics.serve(config.metrics_port)
    op = Operator(config, kube, metrics)
    await _run(op.load_keyring)
    await _run(op.prefetch_histories)
    memo["operator"] = op
    memo["kube"] = kube
    every = min(3600.0, max(1.0, min(config.rotation_period, config.history_retention) / 10))
    memo["maintenance"] = asyncio.create_task(maintenance(op, every))
    memo["release_memory"] = asyncio.create_task(release_memory(MEMORY_TRIM_SECONDS))


@kopf.on.probe(id="keyring")
def probe_keyring(memo: kopf.Memo, **_: Any) -> str:
    op = _operator(memo)
    return op.ring.current.kid if op.ring else "none"


# -- SpaceSecrets ---------------------------------------------------------------------------------


@kopf.on.resume(GROUP, "spacesecrets")
@kopf.on.create(GROUP, "spacesecrets")
@kopf.on.update(GROUP, "spacesecrets")
async def space_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    op = _operator(memo)
    await _run(lambda: op.reconcile_space(body))


@kopf.on.event(GROUP, "spacesecrets")
async def space_event(type: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    op = _operator(memo)
    op.observe_space(body, deleted=type == "DELETED")
    if type == "DELETED":
        await _run(lambda: op.space_deleted(body.metadata["namespace"], body.metadata["name"]))


# -- FlowSecretSync -------------------------------------------------------------------------------


@kopf.on.resume(GROUP, "flowsecretsyncs")
@kopf.on.create(GROUP, "flowsecretsyncs")
@kopf.on.update(GROUP, "flowsecretsyncs")
async def flow_saved(body: kopf.Body, memo: kopf.Memo, reason: str, **_: Any) -> None:
    """Created, changed (a "save"), or seen again after a restart: sync at once."""
    op = _operator(memo)
    entry = op.register_flow(body)
    await _run(lambda: op.sync_flow(entry.namespace, entry.name, reason=str(reason)))


@kopf.on.event(GROUP, "flowsecretsyncs")
async def flow_event(type: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    op = _operator(memo)
    if type == "DELETED":
        op.forget_flow(body.metadata["namespace"], body.metadata["name"])
    elif body.metadata.get("deletionTimestamp"):
        op.register_flow(body)  # marks it deleting: its target is left to garbage collection


@kopf.daemon(GROUP, "flowsecretsyncs", cancellation_timeout=5)
async def autosync(stopped: kopf.DaemonStopped, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Wake at this flow's autosync ticks; act only when the space moved on (no API call else)."""
    op = _operator(memo)
    ns, name, uid = body.metadata["namespace"], body.metadata["name"], body.metadata["uid"]

    def period() -> float:  # the body is kopf's live view: a changed autosync is seen here
        autosync_every = str((body.get("spec") or {}).get("autosync", "1m"))
        return schedule.period_seconds(autosync_every, op.settings.autosync_scale)

    while not stopped:
        current = period()
        tick = schedule.next_tick(uid, current, time.time())
        # sleep in bounded steps so a changed autosync takes effect without waiting out the old
        while not stopped and (now := time.time()) < tick and period() == current:
            await stopped.wait(min(tick - now, RESCHEDULE_CHECK_SECONDS))
        if stopped or period() != current:
            continue
        if not op.needs_tick(ns, name):
            continue
        try:
            await _run(lambda: op.sync_flow(ns, name, reason="autosync"))
        except kopf.TemporaryError as exc:
            log.warning("autosync of %s/%s failed, retrying: %s", ns, name, exc)
            await stopped.wait(min(current, exc.delay or 2))


@kopf.on.event("", "v1", "secrets", labels=MANAGED)
@kopf.on.event("", "v1", "configmaps", labels=MANAGED)
async def target_changed(type: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A projected target changed: restore it if someone else edited or deleted it."""
    op = _operator(memo)
    obj = dict(body)
    await _run(lambda: op.target_event(str(type), obj))


@kopf.on.event("apps", "v1", "deployments")
@kopf.on.event("apps", "v1", "statefulsets")
async def workload_changed(
    type: str, body: kopf.Body, resource: kopf.Resource, memo: kopf.Memo, **_: Any
) -> None:
    """Sync on save: a flowRef workload's pod template changed."""
    if type == "DELETED":
        return
    op = _operator(memo)
    kind = "Deployment" if resource.plural == "deployments" else "StatefulSet"
    for ns, name in op.workload_event(kind, body):
        await _run(functools.partial(op.sync_flow, ns, name, reason="save"))


# -- maintenance ----------------------------------------------------------------------------------


def _release_freed_memory() -> None:
    """Hand memory freed after a burst (a cold start reconciles everything at once) back to the
    OS: glibc keeps freed heap otherwise, and RSS would stay at the burst's high-water mark."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)


async def release_memory(every: float) -> None:
    while True:
        await asyncio.sleep(every)
        _release_freed_memory()


async def maintenance(op: Operator, every: float) -> None:
    """Rotate keys when due and drop expired history. Safe on every replica: writes are
    conditional on resourceVersion, so two replicas never both rotate."""
    while True:
        try:
            await _run(op.rotate_if_due)
            await _run(op.housekeeping)
        except kopf.TemporaryError as exc:
            log.warning("maintenance failed, retrying: %s", exc)
        await asyncio.sleep(every)


@kopf.on.cleanup()
async def stop_maintenance(memo: kopf.Memo, **_: Any) -> None:
    for name in ("maintenance", "release_memory"):
        task = memo.get(name)
        if task is not None:
            task.cancel()
