"""Shards against the real control plane: two, then three operator processes as members of one
ring, each as the operator's ServiceAccount with the chart's RBAC.

- every namespace is served by exactly one member, the one the ring gives it to: each target is
  written once per version, by that member (the audit log's User-Agent tells them apart);
- a member SIGKILLed: its namespaces move to the other within the lease duration, and changes
  made after the kill reach their flows, each target again written once per version;
- a member joining takes its share, and the handover writes nothing;
- at no sample is a namespace held by two members.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from tests.support.audit import audit_mark, described
from tests.support.shards import (
    LEASE_SECONDS,
    SHARD_ENV,
    no_denials,
    served,
    shard_of,
    start_shard,
    target_writes,
    writes_by_shard,
)
from tests.support.space import Space

from spacesecrets.core.sharding import owner
from spacesecrets.devtools.dev import OPERATOR_NAMESPACE, LocalCluster, OperatorProcess, wait_for
from spacesecrets.kube.client import Kube
from spacesecrets.kube.factory import kube_for
from spacesecrets.schema.manifests import OPERATOR_ROLE, SHARD_LEASES_FLOW

NAMESPACES = [f"shard-{i}" for i in range(8)]
TARGET = "flow-secrets"

pytestmark = pytest.mark.timeout(240)


@contextlib.contextmanager
def watching(procs: dict[str, OperatorProcess]) -> Iterator[list[str]]:
    """Samples which namespaces each live member holds, every 0.2 s; yields the overlaps seen."""
    overlaps: list[str] = []
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(0.2):
            seen: Counter[str] = Counter()
            for proc in list(procs.values()):
                if proc.alive():
                    with contextlib.suppress(OSError):
                        seen.update(served(proc))
            overlaps.extend(ns for ns, n in seen.items() if n > 1)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield overlaps
    finally:
        stop.set()
        thread.join(5)


def held_as_the_ring_says(
    procs: dict[str, OperatorProcess], namespaces: list[str] = NAMESPACES
) -> Callable[[], bool]:
    members = sorted(procs)

    def check() -> bool:
        return all(
            served(proc) == {ns for ns in namespaces if owner(ns, members) == member}
            for member, proc in procs.items()
        )

    return check


def versions_projected(spaces: list[Space], version: int) -> Callable[[], bool]:
    def check() -> bool:
        for space in spaces:
            try:
                docs = space.target_documents(TARGET)
            except Exception:
                return False
            if docs["SECRETS_METADATA"]["version"] != version:
                return False
        return True

    return check


def _spaces_with_flows(cluster: LocalCluster, kube: Kube, namespaces: list[str]) -> list[Space]:
    """A space with one key and a flow in each new namespace, every flow at version 1."""
    spaces = [Space(cluster, kube, ns) for ns in namespaces]
    for space in spaces:
        cluster.cp.kubectl("create", "namespace", space.ns)
        space.apply({"GREETING": f"hello {space.ns}"})
    for space in spaces:
        space.wait_version(1)
        space.kubectl_apply(space.flow("flow", TARGET))
    wait_for("every flow at version 1", versions_projected(spaces, 1), timeout=60)
    return spaces


def test_shards_serve_each_namespace_once_through_a_kill_and_a_join(
    fresh_cluster: Callable[[], LocalCluster],
) -> None:
    cluster = fresh_cluster()
    kube = kube_for(str(cluster.kubeconfig))
    procs = {m: start_shard(cluster, m) for m in ("op-a", "op-b")}
    start = audit_mark(cluster)
    spaces = _spaces_with_flows(cluster, kube, NAMESPACES)

    with watching(procs) as overlaps:
        # 1. each namespace held by the member the ring gives it to, each target written once
        wait_for("each namespace held by its member", held_as_the_ring_says(procs), timeout=30)
        audit_mark(cluster)
        writes = target_writes(writes_by_shard(cluster.cp.audit_log, start), TARGET)
        ring = ["op-a", "op-b"]
        assert writes == Counter({(ns, owner(ns, ring)): 1 for ns in NAMESPACES}), writes
        assert {owner(ns, ring) for ns in NAMESPACES} == set(ring)  # both have a share

        # 2. SIGKILL op-a: its namespaces move to op-b within the lease duration
        mark = audit_mark(cluster)
        procs.pop("op-a").kill()
        killed = time.monotonic()
        for space in spaces:
            space.apply({"GREETING": f"hello again {space.ns}"})
        wait_for("op-b holds every namespace", held_as_the_ring_says(procs), timeout=30)
        moved = time.monotonic() - killed
        wait_for("every flow at version 2", versions_projected(spaces, 2), timeout=30)
        assert moved < LEASE_SECONDS + 4, f"the namespaces moved after {moved:.1f}s"
        audit_mark(cluster)
        writes = target_writes(writes_by_shard(cluster.cp.audit_log, mark), TARGET)
        assert writes == Counter({(ns, "op-b"): 1 for ns in NAMESPACES}), writes

        # 3. op-c joins: it takes its share, and the handover writes nothing
        mark = audit_mark(cluster)
        procs["op-c"] = start_shard(cluster, "op-c")
        wait_for("op-c holds its share", held_as_the_ring_says(procs), timeout=30)
        assert served(procs["op-c"]), "op-c took nothing"
        audit_mark(cluster)
        handover = writes_by_shard(cluster.cp.audit_log, mark)
        assert handover == [], described(handover)

        # the new member serves what it took: a change reaches a flow of op-c's share
        theirs = next(s for s in spaces if owner(s.ns, sorted(procs)) == "op-c")
        mark = audit_mark(cluster)
        theirs.apply({"GREETING": "hello from op-c"})
        wait_for("op-c's flow at version 3", versions_projected([theirs], 3), timeout=20)
        audit_mark(cluster)
        writes = target_writes(writes_by_shard(cluster.cp.audit_log, mark), TARGET)
        assert writes == Counter({(theirs.ns, "op-c"): 1}), writes
    assert overlaps == [], f"namespaces held by two members at once: {sorted(set(overlaps))}"

    # which shard serves a space, as an owner sees it
    out = subprocess.run(
        [sys.executable, "-m", "spacesecrets", "status", "-n", theirs.ns],
        env={"KUBECONFIG": str(cluster.kubeconfig), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "served by  shard op-c of 2" in out, out
    no_denials(list(procs.values()))
    assert not any("Traceback" in p.log_text() for p in procs.values())


def _operator_may_list_ours(cluster: LocalCluster, allowed: bool) -> None:
    """Grant or take away the operator's `list` of SpaceSecrets and FlowSecretSyncs (its
    watches already open go on; `watch` itself stays granted)."""
    role = json.loads(cluster.cp.kubectl("get", "clusterrole", OPERATOR_ROLE, "-o", "json").stdout)
    for rule in role["rules"]:
        if "spacesecrets" in rule.get("resources", []):
            verbs = [v for v in rule["verbs"] if v != "list"]
            rule["verbs"] = [*verbs, "list"] if allowed else verbs
    cluster.cp.kubectl("replace", "-f", "-", input=json.dumps(role))


def test_an_adoption_whose_listing_fails_is_tried_again(
    fresh_cluster: Callable[[], LocalCluster],
) -> None:
    """A member dies while the survivor may not list (refused, or the API server overloaded):
    the namespaces it takes over must still be listed once it can, because their flows may have
    no event for hours -- else a later change of their space never reaches them."""
    cluster = fresh_cluster()
    kube = kube_for(str(cluster.kubeconfig))
    procs = {m: start_shard(cluster, m) for m in ("op-a", "op-b")}
    spaces = _spaces_with_flows(cluster, kube, NAMESPACES[:4])
    names = [s.ns for s in spaces]
    wait_for("each held by its member", held_as_the_ring_says(procs, names), timeout=30)
    theirs = [s for s in spaces if owner(s.ns, ["op-a", "op-b"]) == "op-a"]
    assert theirs, "op-a serves none of the spaces"

    _operator_may_list_ours(cluster, allowed=False)
    procs.pop("op-a").kill()
    survivor = procs["op-b"]
    wait_for(
        "op-b refused the listing of what it adopts",
        lambda: "cannot list" in survivor.log_text(),
        timeout=LEASE_SECONDS + 20,
    )
    _operator_may_list_ours(cluster, allowed=True)
    wait_for("op-b holds every namespace", held_as_the_ring_says(procs, names), timeout=30)
    for space in theirs:  # a change of the space: its flow was known only through the listing
        space.apply({"GREETING": f"hello again {space.ns}"})
    wait_for("op-a's former flows at version 2", versions_projected(theirs, 2), timeout=30)
    assert not any("Traceback" in p.log_text() for p in procs.values())


def _gauge(proc: OperatorProcess, name: str) -> float:
    for line in proc.metrics().splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} in the metrics")


def test_one_shard_rotates_the_key_ring_and_the_others_follow(
    fresh_cluster: Callable[[], LocalCluster],
) -> None:
    """Cluster-wide chores are done once, not by every shard: the member the operator's own
    namespace's name falls to rotates the key ring; the other reads the rotated ring."""
    cluster = fresh_cluster()
    period = 6.0
    env = {"SPACESECRETS_ROTATION_PERIOD": f"{period:g}s"}
    members = ["op-a", "op-b"]
    procs = {m: cluster.start_operator(env={**SHARD_ENV, **env, "SPACESECRETS_SHARD_MEMBER": m})
             for m in members}  # fmt: skip
    leader = owner(OPERATOR_NAMESPACE, members)
    follower = next(m for m in members if m != leader)
    wait_for("the ring stable", lambda: _gauge(procs[leader], "spacesecrets_shard_leads") == 1, 30)
    assert _gauge(procs[follower], "spacesecrets_shard_leads") == 0
    start = audit_mark(cluster)
    first = _current_kid(cluster)
    second = wait_for("a rotation", lambda: (k := _current_kid(cluster)) != first and k, 30)
    wait_for("another rotation", lambda: _current_kid(cluster) not in (first, second), 30)
    # the follower took up the rotated ring: its current key is as young as the leader's
    wait_for(
        "the follower on the rotated ring",
        lambda: _gauge(procs[follower], "spacesecrets_key_ring_age_seconds") < period,
        timeout=2 * period,
    )
    audit_mark(cluster)
    ring_writes = Counter(
        shard_of(w)
        for w in writes_by_shard(cluster.cp.audit_log, start)
        if (w.get("objectRef") or {}).get("name") == "spacesecrets-keyring"
    )
    assert set(ring_writes) == {leader}, ring_writes
    no_denials(list(procs.values()))


def _current_kid(cluster: LocalCluster) -> str:
    return cluster.cp.kubectl(
        "get", "configmap", "-n", OPERATOR_NAMESPACE, "spacesecrets-public-keys",
        "-o", "jsonpath={.data.current\\.kid}", check=False,
    ).stdout  # fmt: skip


def _flow_schema_of(cluster: LocalCluster, path: str) -> str:
    """The UID of the FlowSchema that admitted a GET of `path` by the operator (API Priority
    and Fairness names it in every response's headers)."""
    result = cluster.cp.kubectl(
        "get", "--raw", path, "-v=8", kubeconfig=cluster.operator_kubeconfig()
    )
    found = re.search(r"X-Kubernetes-Pf-Flowschema-Uid: (\S+)", result.stderr, re.IGNORECASE)
    assert found, result.stderr[-2000:]
    return found[1]


def test_the_lease_calls_have_the_priority_of_leader_election(cluster: LocalCluster) -> None:
    """A shard's renewals must not queue in the API server behind the operator's own writes: at
    20,000 spaces a renewal waited longer than the lease, the member fenced itself, and 5,120
    namespaces went to the others and back. Its Lease calls are classified in the
    `leader-election` priority level, as Kubernetes' own controllers' are; its other calls
    are not."""
    schema = json.loads(
        cluster.cp.kubectl("get", "flowschema", SHARD_LEASES_FLOW, "-o", "json").stdout
    )
    assert schema["spec"]["priorityLevelConfiguration"] == {"name": "leader-election"}
    dangling = [c for c in schema["status"]["conditions"] if c["type"] == "Dangling"]
    assert [c["status"] for c in dangling] == ["False"]  # the priority level exists
    leases = f"/apis/coordination.k8s.io/v1/namespaces/{OPERATOR_NAMESPACE}/leases"
    assert _flow_schema_of(cluster, leases) == schema["metadata"]["uid"]
    spaces = "/apis/spacesecrets.io/v1alpha1/spacesecrets?limit=1"
    assert _flow_schema_of(cluster, spaces) != schema["metadata"]["uid"]
