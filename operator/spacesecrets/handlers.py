"""The kopf handlers: the only kopf-decorated module.

Edge, and the only module that imports kopf. kopf runs the operator's life: start-up (the engine,
the controller and the watch feeds, `engine.feeds`, which deliver the objects' events to the
controller), the health probes, peering between replicas, maintenance and clean-up. Our errors
become kopf's (`Temporary` -> `kopf.TemporaryError` with its delay). No business logic lives here.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import logging
import secrets
from collections.abc import Callable
from typing import Any

import kopf

from spacesecrets.core.settings import Settings
from spacesecrets.engine.app import Engine
from spacesecrets.engine.controller import Controller
from spacesecrets.engine.feeds import Feeds
from spacesecrets.engine.metrics import Metrics, ShardMetrics
from spacesecrets.engine.shards import ShardConfig, Shards
from spacesecrets.kube import NamespaceTerminating, Permanent, Temporary
from spacesecrets.kube.client import CONNECTIONS, Kube
from spacesecrets.kube.transport import Rest

log = logging.getLogger("spacesecrets")
WORKERS = 16  # reconciles at once: each holds one of the client's connections while it waits
MEMORY_TRIM_SECONDS = 15.0


def _engine(memo: Any) -> Engine:
    engine: Engine = memo["engine"]
    return engine


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
    settings.posting.level = logging.WARNING  # our own Events say what users care about
    # kopf runs the start-up, the probes and peering; the objects are watched by our own feeds
    # (engine.feeds), which cost a fraction of kopf's per-event processing
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 30
    settings.execution.max_workers = 4  # kopf's own pool; reconciles run in the controller's
    priority = 0
    if config.peering:
        settings.peering.name = config.peering
        settings.peering.mandatory = True
        settings.peering.clusterwide = True
        # kopf pauses every operator that sees a peer of equal or higher priority: a distinct
        # random priority per replica makes exactly one active. A short lifetime lets a standby
        # take over within seconds when the active replica dies without saying goodbye.
        settings.peering.priority = priority = secrets.randbelow(1_000_000) + 1
        settings.peering.lifetime = 15
        settings.peering.stealth = True

    # kopf runs this again after a temporary failure (an API server still starting answers 429):
    # what binds a port or starts a thread is done on the first attempt only
    if "kube" not in memo:
        rest = Rest.from_environment(connections=CONNECTIONS)
        if config.shard_member:
            rest.user_agent = f"spacesecrets/{config.shard_member}"
        memo["rest"] = rest
        kube = Kube(rest)
        kube.post_events_in_background()
        metrics = Metrics()
        metrics.events_dropped.set_function(lambda: kube.events_dropped)
        if config.metrics_port:
            metrics.serve(config.metrics_port, config.metrics_address)
        memo["kube"], memo["metrics"] = kube, metrics
    kube, metrics = memo["kube"], memo["metrics"]
    shards = await _join_shards(config, kube, memo)
    engine = Engine(config, kube, metrics)
    await _run(functools.partial(engine.start, shards.note) if shards else engine.start)
    controller = Controller(engine, workers=WORKERS)
    if config.peering:
        controller.start(functools.partial(kube.get_peering, config.peering), priority)
    else:
        controller.start()
    if shards is not None:
        controller.serving = shards.serving
        shards.start(controller)
    memo["engine"] = engine
    memo["controller"] = controller
    admit = shards.admit if shards is not None else None  # only the namespaces it serves
    feeds = Feeds(memo["rest"], engine, controller, memo.get("namespaces") or (), admit)
    feeds.start()
    memo["feeds"] = feeds
    every = min(3600.0, max(1.0, min(config.rotation_period, config.history_retention) / 10))
    leads = shards.leads if shards is not None else lambda: True
    memo["maintenance"] = asyncio.create_task(maintenance(engine, every, leads))
    memo["release_memory"] = asyncio.create_task(release_memory(MEMORY_TRIM_SECONDS))


async def _join_shards(config: Settings, kube: Kube, memo: kopf.Memo) -> Shards | None:
    """With a member id, this process is one shard: it joins the ring before the watches
    start, so that their first listing is admitted by the ring that serves it."""
    if not config.shard_member:
        return None
    if "shards" not in memo:
        lease = config.shard_lease
        shard = ShardConfig(
            config.shard_member, config.namespace, lease, config.shard_renew, margin=lease / 3
        )
        memo["shards"] = Shards(shard, kube)
        memo["shards"].report(ShardMetrics(memo["metrics"], config.shard_member))
    shards: Shards = memo["shards"]
    await shards.join(timeout=config.shard_lease)
    return shards


@kopf.on.probe(id="keyring")
def probe_keyring(memo: kopf.Memo, **_: Any) -> str:
    ring = _engine(memo).ring.ring
    return ring.current.kid if ring else "none"


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


async def maintenance(engine: Engine, every: float, leads: Callable[[], bool]) -> None:
    """Rotate keys when due and drop expired history, on one shard of the ring (`leads`); the
    others read the rotated ring. (Safe on every replica anyway: writes are conditional on
    resourceVersion, so two replicas never both rotate.)"""
    while True:
        try:
            if leads():
                await _run(engine.ring.rotate_if_due)
                await _run(engine.histories.housekeeping)
            else:
                await _run(engine.ring.refresh_if_due)
        except kopf.TemporaryError as exc:
            log.warning("maintenance failed, retrying: %s", exc)
        await asyncio.sleep(every)


@kopf.on.cleanup()
async def stop_maintenance(memo: kopf.Memo, **_: Any) -> None:
    feeds = memo.get("feeds")
    if feeds is not None:
        feeds.stop()
    for name in ("maintenance", "release_memory"):
        task = memo.get(name)
        if task is not None:
            task.cancel()
    shards = memo.get("shards")
    if shards is not None:  # serve nothing more, then leave the ring: the others take over
        await shards.leave()
    controller = memo.get("controller")
    if controller is not None:
        await controller.stop()


def run(watch: tuple[str, ...] = (), verbose: bool = False) -> None:
    """Run the operator until it is stopped: kopf's watches, these handlers, the engine."""
    settings = Settings.from_env()
    namespaces = list(watch) or list(settings.watch_namespaces)
    kopf.configure(
        verbose=verbose,
        log_format=kopf.LogFormat.JSON if settings.log_json else kopf.LogFormat.PLAIN,
        log_prefix=False,
    )
    liveness = settings.liveness_url() if settings.health_port else None
    asyncio.run(
        kopf.operator(
            clusterwide=not namespaces,
            namespaces=namespaces,
            standalone=not settings.peering,
            peering_name=settings.peering or None,
            liveness_endpoint=liveness,
            memo=kopf.Memo(namespaces=namespaces),
        )
    )
