"""The ring of shards at scale: a cold start of N spaces (env BENCH_N, default 100), each with 20
keys and one FlowSecretSync, served by 1, 2 and 4 shards (env BENCH_SHARDS, default "1,2,4"),
each count on a fresh control plane of its own, after the write baseline of the same N.

`make bench-shards` (BENCH_N=5000 make bench-shards, ...). Printed as JSON and as a markdown table,
and written to build/bench/shards-<N>.json. Per shard count:
- wall time from the first process start to every space Ready, every flow Synced and every target
  projected, and its ratio to the write baseline's wall time;
- operator CPU (all shards together, and each), per namespace; RSS of each shard at the end of the
  cold start; the namespaces each serves (its gauge); handovers and fencing during the run;
- API requests and writes of each shard (the audit log, told apart by User-Agent), and the control
  plane's CPU.

Asserted, never a timing: everything converges; each namespace's writes all come from one shard;
each target is written exactly once (no double projection, no handover in a cold start that costs
a write); and the shards together serve every namespace.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.bench.harness import (
    BASELINE_WORKERS,
    KEYS,
    N,
    Recorder,
    api_client,
    audit_requests,
    bench_namespace,
    by_verb_and_resource,
    cpu_seconds,
    create_all,
    reported,
    rss_mib,
    spread,
    write_baseline,
)
from tests.support.shards import shard_of
from tests.support.space import public_key

from spacesecrets.devtools.dev import (
    OPERATOR_USER,
    OperatorProcess,
    local_cluster,
)

SHARDS = [int(k) for k in os.environ.get("BENCH_SHARDS", "1,2,4").split(",") if k.strip()]


@pytest.fixture(scope="module")
def results() -> Iterator[dict[str, Any]]:
    with reported(
        f"shards-{N}",
        {"N": N, "keysPerSpace": KEYS, "cpus": os.cpu_count(), "shards": {}},
        markdown,
    ) as out:
        yield out


@pytest.mark.timeout(3600)
def test_write_baseline(results: dict[str, Any]) -> None:
    results["writeBaseline"] = write_baseline(N, KEYS, BASELINE_WORKERS)


def _gauge(proc: OperatorProcess, name: str) -> dict[str, float]:
    """A shard's gauge by its labels other than the shard's own ("" when it has none)."""
    out = {}
    for family in text_string_to_metric_families(proc.metrics()):
        for sample in family.samples:
            if sample.name == name:
                labels = {k: v for k, v in sample.labels.items() if k != "shard"}
                out[",".join(labels.values())] = sample.value
    return out


@pytest.mark.timeout(4 * 3600)
@pytest.mark.parametrize("shards", SHARDS)
def test_cold_start_with_shards(shards: int, results: dict[str, Any]) -> None:
    env = os.environ.get("SPACESECRETS_CONTROLPLANE_BIN")
    with local_cluster(Path(env) if env else None) as cluster:
        first = cluster.start_operator()  # creates and publishes the key ring
        pub = public_key(cluster)
        first.stop()
        client = api_client(cluster.kubeconfig)
        create = create_all(client, pub, N, KEYS)
        rec = Recorder(api_client(cluster.kubeconfig, pool=4))
        rec.start()
        rec.wait("the bench's watches listed every space", lambda: len(rec.spaces) >= N, 300)

        kubeconfig = cluster.operator_kubeconfig()
        control_plane = cluster.cp.pids()
        cp_cpu0 = {name: cpu_seconds(pid) for name, pid in control_plane.items()}
        members = [f"shard-{i}" for i in range(shards)]
        wall0, t0 = time.time(), time.monotonic()
        procs = {
            m: cluster.start_operator(
                env={"SPACESECRETS_SHARD_MEMBER": m}, kubeconfig=kubeconfig, wait=False
            )
            for m in members
        }
        healthy_cpu = {}
        for member, proc in procs.items():
            proc.wait_ready(timeout=600)
            healthy_cpu[member] = cpu_seconds(proc.popen.pid)
        spaces = [bench_namespace(i) for i in range(N)]
        rec.wait_converged(spaces, timeout=3600)
        targets = [rec.target_seen[(ns, "flow-secrets", 1)] - t0 for ns in spaces]
        wall = max(targets)
        cold_wall = time.time()
        cp_cpu = {n: round(cpu_seconds(p) - cp_cpu0[n], 1) for n, p in control_plane.items()}
        per_shard = {}
        for member, proc in procs.items():
            pid = proc.popen.pid
            rss, peak = rss_mib(pid)
            per_shard[member] = {
                "cpuSeconds": round(cpu_seconds(pid), 1),
                "cpuSecondsAfterHealthy": round(cpu_seconds(pid) - healthy_cpu[member], 1),
                "rssMiB": round(rss, 1),
                "peakMiB": round(peak, 1),
                "namespaces": int(_gauge(proc, "spacesecrets_shard_namespaces")[""]),
                "handovers": _gauge(proc, "spacesecrets_shard_handovers"),
                "fenced": _gauge(proc, "spacesecrets_shard_fenced")[""],
            }
        for proc in procs.values():
            assert proc.alive(), proc.log_text()[-3000:]
            assert "Traceback" not in proc.log_text()
            proc.stop()
        rec.stop()
        time.sleep(2)  # the audit log is written in 1 s batches
        requests = audit_requests(cluster.cp.audit_log, OPERATOR_USER, wall0, cold_wall)

    by_member: dict[str, list[dict[str, Any]]] = {m: [] for m in members}
    # per namespace, the member of each write that serves it (not its Events: they are posted
    # by a thread of their own, a Normal one held up to 10 s while reconciles run, and tell of
    # what a reconcile did, so a released member may post one after the next has begun)
    writers: dict[str, list[str]] = {}
    late_events: set[str] = set()  # namespaces with an Event of a member after the next's write
    target_writes: Counter[str] = Counter()
    for entry in sorted(requests, key=lambda e: str(e["requestReceivedTimestamp"])):
        member = shard_of(entry)
        by_member.setdefault(member, []).append(entry)
        ref = entry.get("objectRef") or {}
        ns = ref.get("namespace", "")
        if entry["verb"] in ("create", "update", "patch") and ns.startswith("bench-"):
            order = writers.setdefault(ns, [])
            if ref.get("resource") != "events":
                order.append(member)
            elif member in order and order[-1] != member:
                late_events.add(ns)
            if ref.get("resource") == "secrets" and ref.get("name") == "flow-secrets":
                target_writes[ns] += 1
    for member, entries in by_member.items():
        if member in per_shard:
            leases = [e for e in entries if (e.get("objectRef") or {}).get("resource") == "leases"]
            others = [e for e in entries if e not in leases]
            per_shard[member]["apiRequests"] = len(others)
            per_shard[member]["apiWrites"] = sum(by_verb_and_resource(others).values())
            per_shard[member]["leaseRequests"] = len(leases)
    cpu = sum(s["cpuSeconds"] for s in per_shard.values())
    after = sum(s["cpuSecondsAfterHealthy"] for s in per_shard.values())
    figures: dict[str, Any] = {
        "handedOverMidReconcile": sum(1 for order in writers.values() if len(set(order)) > 1),
        "eventsPostedAfterHandover": len(late_events),
        "create": create,
        "allProjectedSeconds": round(wall, 2),
        "targetSeconds": spread(targets),
        "cpuSeconds": round(cpu, 1),
        "cpuMsPerNamespace": round(cpu / N * 1000, 2),
        "cpuMsPerNamespaceAfterHealthy": round(after / N * 1000, 2),
        "controlPlaneCpuSeconds": cp_cpu,
        "apiRequests": len(requests),
        "perShard": per_shard,
    }
    base = results.get("writeBaseline")
    if base:
        figures["ratioToWriteBaseline"] = round(wall / base["wallSeconds"], 2)
    results["shards"][str(shards)] = figures

    # a namespace handed over while its first reconcile ran has writes of two members, the
    # first member's all before the second's; interleaved writes would be two serving at once
    interleaved = {ns: order for ns, order in writers.items() if not _in_blocks(order)}
    assert interleaved == {}, f"namespaces written by two shards at once: {interleaved}"
    assert sorted(target_writes.values()) == [1] * N, "a target written more than once"
    assert sum(s["namespaces"] for s in per_shard.values()) >= N


def _in_blocks(order: list[str]) -> bool:
    """Whether each member's writes are one run (A A B B, not A B A)."""
    runs = [m for i, m in enumerate(order) if i == 0 or order[i - 1] != m]
    return len(runs) == len(set(runs))


def markdown(r: dict[str, Any]) -> str:
    counts = sorted(r["shards"], key=int)
    base = r.get("writeBaseline") or {}
    lines = [
        f"| N = {r['N']}, shards | " + " | ".join(counts) + " |",
        "| --- |" + " --- |" * len(counts),
    ]

    def row(label: str, cell: Any) -> None:
        lines.append(f"| {label} | " + " | ".join(str(cell(r["shards"][k])) for k in counts) + " |")

    def each(field: str) -> Any:
        return lambda f: " / ".join(str(s[field]) for s in f["perShard"].values())

    row("all Ready, Synced and projected (s)", lambda f: f["allProjectedSeconds"])
    row("÷ write baseline, wall", lambda f: f.get("ratioToWriteBaseline", "n/a"))
    row("targets first / p10 / p50 / p90 / last (s)",
        lambda f: " / ".join(str(f["targetSeconds"][k]) for k in
                             ("first", "p10", "p50", "p90", "last")))  # fmt: skip
    row("operator CPU, all shards (s) / per namespace, all / after healthy (ms)",
        lambda f: f"{f['cpuSeconds']} / {f['cpuMsPerNamespace']} / "
        f"{f['cpuMsPerNamespaceAfterHealthy']}")  # fmt: skip
    row("CPU per shard (s)", each("cpuSeconds"))
    row("namespaces per shard", each("namespaces"))
    row("RSS per shard at the end (MiB)", each("rssMiB"))
    row("API requests per shard (but its Lease's)", each("apiRequests"))
    row("API writes per shard", each("apiWrites"))
    row("namespaces handed over during their first reconcile",
        lambda f: f["handedOverMidReconcile"])  # fmt: skip
    row("of which an Event of the first member came after the second's writes",
        lambda f: f.get("eventsPostedAfterHandover", "n/a"))  # fmt: skip
    row("kube-apiserver / etcd CPU (s)",
        lambda f: f"{f['controlPlaneCpuSeconds'].get('kube-apiserver')} / "
        f"{f['controlPlaneCpuSeconds'].get('etcd')}")  # fmt: skip
    lines.append(
        f"\nWrite baseline: {base.get('wallSeconds', 'n/a')} s, "
        f"{base.get('writesPerSecond', 'n/a')} writes/s."
    )
    return "\n".join(lines)
