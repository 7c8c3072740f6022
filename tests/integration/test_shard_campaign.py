"""The sharding campaign: three shards serve spaces under a storm of changes while one shard after
another is SIGKILLed at a random point and started again under the same member id.

A short run is part of `make test`; `make soak` (SOAK=1) kills 20 times over more spaces. The
invariants are the reliability campaign's (tests/integration/test_campaign.py), checked from
outside: versions strictly increase and none is given twice or lost, every target converges to
its space's version with exactly the spec's values, no plaintext outside the targets; and, for the
shards, no double projection: a target is written at most once per version its space had, and no
namespace is ever held by two live shards at one sample.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import pytest
from tests.integration.test_campaign import (
    KEYS,
    SEED,
    SOAK,
    FlowDef,
    Plain,
    Sealer,
    Storm,
    Watcher,
    _custom,
    _marker,
    check_history,
    converged,
    new_space,
    operator_tracebacks,
    plaintext_hits,
)
from tests.integration.test_shards import watching
from tests.support.audit import audit_mark
from tests.support.shards import no_denials, start_shard, target_writes, writes_by_shard

from spacesecrets.core.sharding import owner
from spacesecrets.devtools.dev import LocalCluster, OperatorProcess, wait_for
from spacesecrets.kube.factory import kube_for

KILLS = 20 if SOAK else 3
SPACES = 6 if SOAK else 3
MEMBERS = ("op-a", "op-b", "op-c")

pytestmark = pytest.mark.timeout(3600 if SOAK else 300)


def test_shard_killed_during_a_change_storm(fresh_cluster: Callable[[], LocalCluster]) -> None:
    rng = random.Random(SEED)
    cluster = fresh_cluster()
    kube = kube_for(str(cluster.kubeconfig))
    procs: dict[str, OperatorProcess] = {m: start_shard(cluster, m) for m in MEMBERS}
    sealer, marker = Sealer(cluster), _marker()
    # spaces spread over the shards: at least one each when there are enough
    names = [f"storm-{i}" for i in range(40)]
    chosen: list[str] = []
    for member in MEMBERS:
        chosen += [n for n in names if owner(n, MEMBERS) == member][: max(1, SPACES // 3)]
    flows = {
        ns: [FlowDef("all", "all-secrets"), FlowDef("some", "some-secrets", ["K0"])]
        for ns in chosen
    }
    start = audit_mark(cluster)
    initial: Plain = {k: ("text", f"{marker}-init-{k}".encode()) for k in KEYS[:4]}
    for ns in chosen:
        new_space(cluster, sealer, ns, initial, flows[ns])
    for ns in chosen:
        wait_for(f"{ns}: the first version", lambda ns=ns: converged(kube, ns, flows[ns]) == 1)

    custom = _custom(cluster)
    storms = {
        ns: Storm(custom, sealer, ns, marker, random.Random(SEED + i), [initial], pace=(0.1, 0.6))
        for i, ns in enumerate(chosen)
    }
    watchers = {ns: Watcher(kube, ns) for ns in chosen}
    started = time.monotonic()
    with watching(procs) as overlaps:
        for w in watchers.values():
            w.start()
        for s in storms.values():
            s.start()
        try:
            for _ in range(KILLS):
                time.sleep(rng.uniform(0.5, 3.0))  # a random point in whatever it is doing
                victim = rng.choice(MEMBERS)
                procs[victim].kill()
                for s in storms.values():
                    assert s.error is None, s.error
                procs[victim] = start_shard(cluster, victim)
        finally:
            for s in storms.values():
                s.stop()
        stormed = time.monotonic() - started
        t0 = time.monotonic()
        for ns in chosen:
            wait_for(f"{ns}: convergence", lambda ns=ns: converged(kube, ns, flows[ns]), 120)
        converge = time.monotonic() - t0
    for w in watchers.values():
        w.stop()
    figures = {ns: check_history(kube, ns, storms[ns].states, watchers[ns]) for ns in chosen}

    # no double projection: a target written at most once per version its space had
    audit_mark(cluster)
    writes = writes_by_shard(cluster.cp.audit_log, start)
    doubled = {}
    for target in ("all-secrets", "some-secrets"):
        per_ns: dict[str, int] = {}
        for (ns, _member), n in target_writes(writes, target).items():
            per_ns[ns] = per_ns.get(ns, 0) + n
        for ns, n in per_ns.items():
            if n > figures[ns]["versions"]:
                doubled[f"{ns}/{target}"] = (n, figures[ns]["versions"])
    assert overlaps == [], f"namespaces held by two shards at once: {sorted(set(overlaps))}"
    assert doubled == {}, f"targets written more often than their space had versions: {doubled}"
    assert all(p.alive() for p in procs.values())
    assert operator_tracebacks(cluster) == 0
    no_denials(list(procs.values()))
    hits = plaintext_hits(cluster, marker, {(ns, f.target) for ns in chosen for f in flows[ns]})
    assert hits == {"objects": 0, "events": 0, "logs": 0, "audit": 0}
    changes = sum(s.changes for s in storms.values())
    versions = sum(f["versions"] for f in figures.values())
    print(
        f"\n[shard campaign seed={SEED}] {KILLS} shard kills over {len(chosen)} spaces in "
        f"{stormed:.0f}s, {changes} changes, {versions} versions, converged {converge:.1f}s "
        f"after the storm, no namespace held twice, no target written twice for a version",
        flush=True,
    )
