"""A namespace changing hands while its space changes, against the real control plane: what the
new server of a namespace holds in memory is the space's newest recorded version, whatever order
its first reconcile and its flows' first syncs run in.

- the race itself, in one engine: a flow's load of its space (before the space's first reconcile
  after an adoption) reads the history, and the space's reconcile writes a newer version before
  that load has remembered what it read; the newer version must stay;
- the same race as a rolling upgrade provokes it: every shard replaced, one by one, while every
  space keeps changing; each flow must then reach its space's last version at its next ticks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from tests.support.shards import start_shard
from tests.support.space import Space

from spacesecrets.core import crypto
from spacesecrets.core.settings import Settings
from spacesecrets.devtools.dev import OPERATOR_NAMESPACE, LocalCluster, OperatorProcess, wait_for
from spacesecrets.engine.app import Engine
from spacesecrets.kube.factory import kube_for

pytestmark = pytest.mark.timeout(300)

TARGET = "flow-secrets"
# ticks every 6 s (autosync "1m" scaled); the chart's lease and renewal
ROLL_ENV = {
    "SPACESECRETS_AUTOSYNC_SCALE": "0.1",
    "SPACESECRETS_SHARD_LEASE": "15s",
    "SPACESECRETS_SHARD_RENEW": "3s",
}
TICK_SECONDS = 6.0


def _space_body(engine: Engine, ns: str, value: str) -> dict[str, Any]:
    ring = engine.ring.require()
    sealed = crypto.seal(ring.current.public, ns, "GREETING", "text", value.encode())
    return {
        "apiVersion": "spacesecrets.io/v1alpha1",
        "kind": "SpaceSecrets",
        "metadata": {"name": "secrets", "namespace": ns},
        "spec": {
            "owners": [{"kind": "User", "name": "alice@example.com"}],
            "data": {"GREETING": {"format": "text", "sealed": sealed}},
        },
    }


def test_a_load_that_read_an_older_history_does_not_replace_the_newer_version(
    fresh_cluster: Callable[[], LocalCluster],
) -> None:
    """The interleaving is forced: the load's read of the history is held until the space's
    reconcile has had its chance to run (the one pause no real fault gives on demand); the reads
    and writes themselves are the API server's."""
    cluster = fresh_cluster()
    kube = kube_for(str(cluster.kubeconfig))
    engine = Engine(Settings(namespace=OPERATOR_NAMESPACE), kube)
    engine.ring.load()
    ns = "handover-race"
    cluster.cp.kubectl("create", "namespace", ns)

    def applied(value: str) -> dict[str, Any]:
        cluster.cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(_space_body(engine, ns, value)))
        return kube.get_custom("spacesecrets", ns, "secrets")

    assert engine.spaces.reconcile(applied("one"))["version"] == 1
    engine.state.forget_namespace(ns)  # as a shard that adopts the namespace knows nothing of it
    newer = applied("two")

    read_done, go = threading.Event(), threading.Event()
    read = engine.histories.read

    def held_read(namespace: str, keep: bool = False) -> Any:
        out = read(namespace, keep)
        if keep:  # the load's read (the reconcile's takes the copy)
            read_done.set()
            go.wait(30)
        return out

    engine.histories.read = held_read  # type: ignore[method-assign]
    loads: list[bool] = []
    loader = threading.Thread(target=lambda: loads.append(engine.spaces.load(ns)))
    loader.start()
    assert read_done.wait(30), "the load did not read the history"
    statuses: list[Any] = []
    reconciler = threading.Thread(target=lambda: statuses.append(engine.spaces.reconcile(newer)))
    reconciler.start()
    # the reconcile either runs to the end now (nothing holds it back) or waits for the load
    reconciler.join(timeout=3)
    go.set()
    loader.join(30)
    reconciler.join(30)
    assert loads == [True]
    assert [s["version"] for s in statuses] == [2]
    space = engine.state.space(ns)
    assert space is not None
    assert space.version == 2, "the load put back the version it had read before the reconcile"


def test_a_rolling_replacement_of_every_shard_leaves_each_flow_at_its_space_s_version(
    fresh_cluster: Callable[[], LocalCluster],
) -> None:
    """As `helm upgrade` rolls the chart's two replicas: a new one joins, an old one leaves
    cleanly, and again, while every space keeps changing; then each flow reaches the version its
    space last recorded, by its next ticks (a flow resumed by its new server may keep the version
    it was issued until its tick). Before the fix, one run in five left a flow a version behind
    for good: its new server's memory held the older version, so its ticks saw nothing to do.
    The forced interleaving above is the deterministic check; this one is the scenario."""
    cluster = fresh_cluster()
    kube = kube_for(str(cluster.kubeconfig))

    def start(member: str) -> OperatorProcess:
        return start_shard(cluster, member, env=ROLL_ENV)

    def versions() -> dict[str, int]:
        return {s.ns: int((s.get().get("status") or {}).get("version", 0)) for s in spaces}

    procs = {m: start(m) for m in ("old-a", "old-b")}
    spaces = [Space(cluster, kube, f"roll-{i}") for i in range(12)]
    for space in spaces:
        cluster.cp.kubectl("create", "namespace", space.ns)
        space.apply({"GREETING": "hello 0"})
    for space in spaces:
        space.wait_version(1)
        space.kubectl_apply(space.flow("flow", TARGET))
    stop = threading.Event()

    def changes() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            for space in spaces:
                space.apply({"GREETING": f"hello {n}"})

    changing = threading.Thread(target=changes)
    changing.start()
    try:
        procs["new-a"] = start("new-a")
        procs.pop("old-a").stop()
        procs["new-b"] = start("new-b")
        procs.pop("old-b").stop()
        # the changes go on until every space has a version made after the last old one left
        left = versions()
        wait_for(
            "a version of every space made by the new replicas",
            lambda: all(v > left[ns] for ns, v in versions().items()),
            timeout=60,
        )
    finally:
        stop.set()
        changing.join()

    def settled() -> dict[str, int] | None:
        out = {}
        for space in spaces:
            body = space.get()
            status = body.get("status") or {}
            if status.get("observedGeneration") != body["metadata"]["generation"]:
                return None
            out[space.ns] = int(status["version"])
        return out

    final = wait_for("every change reconciled", settled, timeout=60)

    def behind() -> dict[str, tuple[int, int]]:
        out = {}
        for space in spaces:
            got = int(space.target_documents(TARGET)["SECRETS_METADATA"]["version"])
            if got != final[space.ns]:
                out[space.ns] = (got, final[space.ns])
        return out

    try:
        wait_for("every flow at its space's version", lambda: not behind(), 3 * TICK_SECONDS + 10)
    except TimeoutError:
        raise AssertionError(f"flows behind their spaces (target, space): {behind()}") from None
    for proc in procs.values():
        assert "Traceback" not in proc.log_text()
