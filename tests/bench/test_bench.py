"""Benchmarks: the operator at N spaces (env BENCH_N, default 100), each with 20 keys and one
FlowSecretSync, on a private real control plane; plus in-process crypto and reconcile timings.

`make bench` (BENCH_N=1000 make bench, ...). The figures are printed as JSON and as a markdown
table, and written to build/bench/<N>.json. The tests assert behaviour only (everything became
Ready, Synced and projected; the operator stayed up; a restart wrote nothing), never a timing:
timings depend on the machine, and the figures are for people to read and compare.

What is measured, and how:
- cold start: objects created with the operator stopped, then the operator started; time from
  its process start to every space Ready, every flow Synced and every target projected (watches
  time-stamp each on this process's clock);
- first projection: new FlowSecretSyncs created at a steady pace among the N spaces; time from the
  create request to the watch seeing the target Secret;
- the immediate path, measured in two legs and end to end: a SpaceSecrets change to its new
  status.version (change -> version), then a save of the flow (a spec change of the
  FlowSecretSync) to the target holding that version (save -> target);
- API writes by the operator's user at steady state, from the audit log, over a window after
  everything converged (the real 1m autosync ticks fall inside it);
- restart: then a new operator process over the converged objects, among them flows that fail
  for good (a Conflict pair and a TargetNotOwned); time from its start until it has reconciled
  every space and flow once (its /metrics), and the failing ones again at their ticks, its CPU,
  peak RSS and API requests. It must write nothing, and that is asserted;
- the operator's RSS and CPU from /proc; unseal and seal per value and the CPU of reconciling a
  100-key space in-process, against an in-memory API;
- the write baseline, first and on a control plane of its own: the writes a cold start cannot
  skip (per space the history Secret, the owners' RoleBinding and the status; per flow the target
  and the status), issued by a minimal concurrent client with no operator logic (`baseline.py`,
  BENCH_BASELINE_WORKERS threads, 64 by default), as the operator's ServiceAccount; the cold
  start is then reported as a ratio to it (wall time, and kube-apiserver CPU);
- the cold start's spread: when the first, the 10th, 50th and 90th percentile and the last target
  (and space Ready) came, and the operator's CPU per namespace (all of it, and without what the
  process spent up to its first health answer: imports, the key ring, the first listings);
- the same run's yardsticks, for machines whose speed moves from one run to the next: the
  operator's CPU over kube-apiserver's, and the cores the operator and the control plane kept busy
  (their CPU over the cold start's wall time; at the machine's core count, only less CPU helps).

BENCH_PYSPY=<path of a py-spy binary> also records sampled profiles of the operator (cold start,
then the rest) into build/bench/ as collapsed stacks; BENCH_PYSPY_GIL=1 samples only the thread
holding the GIL, which shows where the operator's CPU goes rather than where its threads wait
(BENCH_PYSPY_RATE samples a second, 50 by default).
BENCH_OPERATOR_ENV='{"NAME": "value"}' adds environment variables to the measured operator
(settings, or an experiment to compare).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.bench.harness import (
    BASELINE_WORKERS,
    BUILD,
    GROUP,
    KEYS,
    VERSION,
    MemoryKube,
    N,
    Recorder,
    api_client,
    audit_requests,
    bench_namespace,
    by_verb_and_resource,
    cpu_seconds,
    create_all,
    flow_body,
    kernel_cpu_seconds,
    parallel,
    reported,
    rss_mib,
    sealed_data,
    spread,
    summary,
    values_for,
    write_baseline,
)
from tests.support.metrics import reconciles
from tests.support.space import public_key

from spacesecrets.core import crypto, versions
from spacesecrets.core.settings import Settings
from spacesecrets.devtools.dev import (
    OPERATOR_USER,
    LocalCluster,
    OperatorProcess,
    local_cluster,
    wait_for,
)
from spacesecrets.engine.app import Engine
from spacesecrets.names import AUTHORIZED_BY

SAMPLES = int(os.environ.get("BENCH_SAMPLES", str(min(N, 100))))
PACE = float(os.environ.get("BENCH_RATE", "10"))  # new flows per second in the latency probe
STEADY_SECONDS = float(os.environ.get("BENCH_STEADY_SECONDS", "65"))


@pytest.fixture(scope="module")
def results() -> Iterator[dict[str, Any]]:
    with reported(f"{N}", {"N": N, "keysPerSpace": KEYS, "cpus": os.cpu_count()}, markdown) as out:
        yield out


@pytest.fixture(scope="module")
def bench_cluster() -> Iterator[LocalCluster]:
    env = os.environ.get("SPACESECRETS_CONTROLPLANE_BIN")
    with local_cluster(Path(env) if env else None) as cluster:
        yield cluster


# =============================================================================================
# In process: crypto and the reconcile of one 100-key space
# =============================================================================================


def test_in_process_unseal_and_reconcile(results: dict[str, Any]) -> None:
    ring = crypto.KeyRing.create(dt.datetime.now(dt.UTC))
    pub = ring.current.public
    values = values_for(0, 1000)
    started = time.perf_counter()
    data = sealed_data(pub, "bench-cpu", values)
    seal_us = (time.perf_counter() - started) / len(values) * 1e6
    started = time.perf_counter()
    opened = {k: ring.unseal("bench-cpu", k, e["format"], e["sealed"]) for k, e in data.items()}
    unseal_us = (time.perf_counter() - started) / len(values) * 1e6
    assert opened == {k: raw for k, (_, raw) in values.items()}

    kube = MemoryKube()
    engine = Engine(Settings(), kube)  # type: ignore[arg-type]
    engine.ring.ring = ring
    ns = "bench-cpu"
    body: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SpaceSecrets",
        "metadata": {
            "name": "secrets",
            "namespace": ns,
            "uid": "u-1",
            "generation": 1,
            "creationTimestamp": "2024-01-01T00:00:00Z",
        },
        "spec": {
            "owners": [{"kind": "User", "name": "owner@example.com"}],
            "data": sealed_data(pub, ns, values_for(1, 100)),
        },
    }
    kube.customs[("spacesecrets", ns)] = [body]

    def cpu(runs: int, make_body: Any) -> float:
        total = 0.0
        for i in range(runs):
            b = make_body(i)
            kube.customs[("spacesecrets", ns)] = [b]
            started = time.process_time()
            engine.spaces.reconcile(b)
            total += time.process_time() - started
        return total / runs * 1000

    first = cpu(1, lambda _: body)
    unchanged = cpu(20, lambda _: body)

    def changed(i: int) -> dict[str, Any]:
        data = dict(body["spec"]["data"])
        data["KEY_000"] = sealed_data(pub, ns, {"KEY_000": ("text", f"changed-{i}".encode())})[
            "KEY_000"
        ]
        return {
            **body,
            "metadata": {**body["metadata"], "generation": 2 + i},
            "spec": {**body["spec"], "data": data},
        }

    change = cpu(10, changed)
    assert engine.state.space(ns).version == 11  # type: ignore[union-attr]
    started = time.process_time()
    plain, errors = versions.open_spec(ring, ns, body["spec"]["data"])
    open_ms = (time.process_time() - started) * 1000
    assert not errors and len(plain) == 100

    flow = flow_body(ns, "f", "f-secrets")
    flow["metadata"].update(uid="f-1", generation=1, creationTimestamp="2024-01-01T00:00:00Z")
    # as the API server stamps a flow a cluster admin created
    stamp = json.dumps({"user": "admin", "groups": ["system:masters"]})
    flow["metadata"]["annotations"] = {AUTHORIZED_BY: stamp}
    entry = engine.state.register_flow(flow)
    started = time.process_time()
    engine.flows.sync(ns, "f", reason="create")
    sync_ms = (time.process_time() - started) * 1000
    assert entry.synced_version == 11

    results["inProcess"] = {
        "sealMicrosecondsPerValue": round(seal_us, 1),
        "unsealMicrosecondsPerValue": round(unseal_us, 1),
        "reconcile100KeysCpuMs": {
            "firstVersion": round(first, 2),
            "unchanged": round(unchanged, 2),
            "oneKeyChanged": round(change, 2),
            "ofWhichOpenSpec": round(open_ms, 2),
        },
        "firstProjection100KeysCpuMs": round(sync_ms, 2),
    }


# =============================================================================================
# The write baseline: the API server's own limit for the writes a cold start cannot skip
# =============================================================================================


@pytest.mark.timeout(3600)
def test_write_baseline(results: dict[str, Any]) -> None:
    """The same N spaces and flows on a fresh control plane of its own, and the five writes per
    namespace that a cold start must make, issued with no operator in between (baseline.py),
    as the operator's ServiceAccount. It runs before the operator's control plane is started,
    so the two never share the machine."""
    results["writeBaseline"] = write_baseline(N, KEYS, BASELINE_WORKERS)


# =============================================================================================
# The operator at N spaces on the real control plane
# =============================================================================================


class PySpy:
    """An optional sampling profile of the operator (BENCH_PYSPY=<py-spy binary>)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.binary = os.environ.get("BENCH_PYSPY", "")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, name: str) -> None:
        if not self.binary:
            return
        BUILD.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                self.binary,
                "record",
                "--pid",
                str(self.pid),
                "--rate",
                os.environ.get("BENCH_PYSPY_RATE", "50"),
                "--format",
                "raw",
                "--nonblocking",
                *(["--gil"] if os.environ.get("BENCH_PYSPY_GIL") else []),
                "--output",
                str(BUILD / f"{name}-{N}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(60)
            self.proc = None


class Sampler(threading.Thread):
    """Peak RSS of the operator, sampled every half second."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak = pid, 0.0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.5):
            try:
                self.peak = max(self.peak, rss_mib(self.pid)[0])
            except (OSError, KeyError):
                return


def _probe_first_projection(custom: Any, rec: Recorder) -> list[float]:
    sent: dict[str, float] = {}
    start = time.monotonic()

    def create(i: int) -> None:
        delay = start + i / PACE - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # a steady pace, so this measures latency rather than a queue
        sent[bench_namespace(i)] = time.monotonic()
        custom.create_namespaced_custom_object(
            GROUP,
            VERSION,
            bench_namespace(i),
            "flowsecretsyncs",
            flow_body(bench_namespace(i), "probe", "probe-secrets", autosync="24h"),
        )

    parallel(create, range(SAMPLES), workers=8)
    rec.wait(
        "every probe flow projected",
        lambda: all((ns, "probe-secrets", 1) in rec.target_seen for ns in sent),
        timeout=300,
    )
    return [rec.target_seen[(ns, "probe-secrets", 1)] - t for ns, t in sent.items()]


def _probe_immediate_path(custom: Any, rec: Recorder, pub: Any) -> dict[str, list[float]]:
    legs: dict[str, list[float]] = {
        "changeToVersion": [],
        "saveToTarget": [],
        "changeToTargetViaSave": [],
    }
    lock = threading.Lock()

    def sample(i: int) -> None:
        ns = bench_namespace(i)
        with rec.cond:
            version = rec.space_version[ns]
        changed = sealed_data(pub, ns, {"KEY_000": ("text", f"changed-{i}".encode())})
        t0 = time.monotonic()
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, ns, "spacesecrets", "secrets", {"spec": {"data": changed}}
        )
        rec.wait(
            f"{ns} version {version + 1}",
            lambda: (ns, version + 1) in rec.version_seen,
            timeout=120,
        )
        t2 = time.monotonic()
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, ns, "flowsecretsyncs", "probe", {"spec": {"autosync": "12h"}}
        )
        key = (ns, "probe-secrets", version + 1)
        rec.wait(f"{ns} probe target at {version + 1}", lambda: key in rec.target_seen, timeout=120)
        with lock:
            legs["changeToVersion"].append(rec.version_seen[(ns, version + 1)] - t0)
            legs["saveToTarget"].append(rec.target_seen[key] - t2)
            legs["changeToTargetViaSave"].append(rec.target_seen[key] - t0)

    parallel(sample, range(SAMPLES), workers=4)
    return legs


def _secs(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in stats.items()}


@pytest.mark.timeout(4 * 3600)
def test_operator_at_scale(bench_cluster: LocalCluster, results: dict[str, Any]) -> None:
    cluster = bench_cluster
    # a first start creates and publishes the key ring; the bench seals to it, in process
    first = cluster.start_operator()
    pub = public_key(cluster)
    first.stop()
    client = api_client(cluster.kubeconfig)
    custom = kubernetes.client.CustomObjectsApi(client)

    results["create"] = create_all(client, pub, N, KEYS)
    rec = Recorder(api_client(cluster.kubeconfig, pool=4))
    rec.start()
    rec.wait("the bench's watches listed every space", lambda: len(rec.spaces) >= N, 300)

    # -- cold start ---------------------------------------------------------------------------
    operator_kubeconfig = cluster.operator_kubeconfig()
    control_plane = cluster.cp.pids()
    cp_cpu0 = {name: cpu_seconds(pid) for name, pid in control_plane.items()}
    wall0, t0 = time.time(), time.monotonic()
    extra_env = json.loads(os.environ.get("BENCH_OPERATOR_ENV", "{}"))
    results["operatorEnv"] = extra_env
    op = cluster.start_operator(env=extra_env, kubeconfig=operator_kubeconfig, wait=False)
    pid = op.popen.pid
    spy = PySpy(pid)
    spy.start("cold")
    sampler = Sampler(pid)
    sampler.start()
    op.wait_ready(timeout=600)
    healthy, healthy_cpu = time.monotonic() - t0, cpu_seconds(pid)
    spaces = [bench_namespace(i) for i in range(N)]
    rec.wait_converged(spaces, timeout=3600)
    with rec.cond:
        all_ready = max(rec.space_ready.values()) - t0
        all_synced = max(rec.flow_synced.values()) - t0
        all_projected = max(rec.target_seen[(ns, "flow-secrets", 1)] for ns in spaces) - t0
        targets = [rec.target_seen[(ns, "flow-secrets", 1)] - t0 for ns in spaces]
        ready = [rec.space_ready[ns] - t0 for ns in spaces]
    cold_cpu, cold_kernel_cpu = cpu_seconds(pid), kernel_cpu_seconds(pid)
    cold_wall = time.time()
    cp_cold_cpu = {n: round(cpu_seconds(p) - cp_cpu0[n], 1) for n, p in control_plane.items()}
    spy.stop()
    cold_rss = rss_mib(pid)[0]

    # -- steady state -------------------------------------------------------------------------
    spy.start("run")
    time.sleep(10)  # the last status writes of the cold start land before the window opens
    steady_from, cpu_from = time.time(), cpu_seconds(pid)
    time.sleep(STEADY_SECONDS)  # the window is the measurement: every 1m tick falls inside it
    steady_to, cpu_to = time.time(), cpu_seconds(pid)
    steady_rss, steady_peak = rss_mib(pid)

    # -- latencies ----------------------------------------------------------------------------
    first_projection = _probe_first_projection(custom, rec)
    legs = _probe_immediate_path(custom, rec, pub)
    spy.stop()
    sampler.stopped.set()
    final_rss, final_peak = rss_mib(pid)
    failing = _failing_flows(client)
    assert op.alive(), op.log_text()[-3000:]
    assert "Traceback" not in op.log_text()
    # the latency probes left flows behind their spaces until their next 1m tick
    wait_for("every flow at its space's version", lambda: _all_current(op), 120, interval=2.0)
    op.stop()
    rec.stop()

    # -- restart ------------------------------------------------------------------------------
    restart = _restart(
        cluster, operator_kubeconfig, extra_env, flows=N + len(first_projection), failing=failing
    )

    time.sleep(2)  # the audit log is written in 1 s batches
    cold = audit_requests(cluster.cp.audit_log, OPERATOR_USER, wall0, cold_wall)
    steady = audit_requests(cluster.cp.audit_log, OPERATOR_USER, steady_from, steady_to)
    steady_writes = by_verb_and_resource(steady)
    minutes = (steady_to - steady_from) / 60
    results["coldStart"] = {
        "healthySeconds": round(healthy, 2),
        "allReadySeconds": round(all_ready, 2),
        "allSyncedSeconds": round(all_synced, 2),
        "allProjectedSeconds": round(all_projected, 2),
        "cpuSeconds": round(cold_cpu, 1),
        "cpuKernelSeconds": round(cold_kernel_cpu, 1),  # of which in system calls
        "cpuMsPerNamespace": round(cold_cpu / N * 1000, 2),
        # without the process's start (imports, the key ring) up to its first health answer
        "cpuMsPerNamespaceAfterHealthy": round((cold_cpu - healthy_cpu) / N * 1000, 2),
        "targetSeconds": spread(targets),
        "spaceReadySeconds": spread(ready),
        "controlPlaneCpuSeconds": cp_cold_cpu,  # the API server and etcd share the machine
        # the yardstick that holds when the machine's speed moves between runs (RESULTS.md)
        "operatorPerApiServerCpu": round(cold_cpu / max(cp_cold_cpu["kube-apiserver"], 0.1), 3),
        # the operator's and the control plane's CPU over the wall time: at the number of cores,
        # the cold start is CPU-bound and only less CPU makes it shorter
        "coresBusy": round((cold_cpu + sum(cp_cold_cpu.values())) / max(all_projected, 0.1), 2),
        "rssMiB": round(cold_rss, 1),
        "apiRequests": len(cold),
        "apiWrites": by_verb_and_resource(cold),
        "apiReads": {
            k: v
            for k, v in by_verb_and_resource(cold, writes_only=False).items()
            if k.split()[0] not in ("create", "update", "patch", "delete")
        },
    }
    base = results.get("writeBaseline")
    if base:
        results["coldStart"]["ratioToWriteBaseline"] = {
            "wall": round(all_projected / base["wallSeconds"], 2),
            "apiServerCpu": round(
                cp_cold_cpu["kube-apiserver"]
                / max(base["controlPlaneCpuSeconds"]["kube-apiserver"], 0.1),
                2,
            ),
        }
    results["steadyState"] = {
        "windowSeconds": round(steady_to - steady_from, 1),
        "writesPerMinute": round(sum(steady_writes.values()) / minutes, 2),
        "writes": steady_writes,
        "requestsPerMinute": round(len(steady) / minutes, 2),
        "requests": by_verb_and_resource(steady, writes_only=False),
        "cpuPercent": round((cpu_to - cpu_from) / (steady_to - steady_from) * 100, 2),
        "rssMiB": round(steady_rss, 1),
    }
    results["firstProjectionSeconds"] = _secs(summary(first_projection))
    results["immediatePathSeconds"] = {k: _secs(summary(v)) for k, v in legs.items()}
    results["rss"] = {
        "finalMiB": round(final_rss, 1),
        "peakMiB": round(final_peak, 1),
        "sampledPeakMiB": round(max(sampler.peak, steady_peak), 1),
    }
    results["restart"] = restart
    assert len(first_projection) == SAMPLES
    assert all(len(v) == SAMPLES for v in legs.values())
    # everything had converged: the new process reads, and finds nothing to write
    assert restart["apiWrites"] == {}, restart["apiWrites"]


def _all_current(op: OperatorProcess) -> bool:
    for family in text_string_to_metric_families(op.metrics()):
        if family.name == "spacesecrets_flow_versions_behind":
            return all(s.value == 0 for s in family.samples)
    return False


def _failing_flows(client: kubernetes.client.ApiClient) -> int:
    """Flows that fail for good, for the restart to find: in the first space, a second
    FlowSecretSync naming its flow's target (Conflict), and one naming a Secret nobody manages
    (TargetNotOwned). Returns how many."""
    core = kubernetes.client.CoreV1Api(client)
    custom = kubernetes.client.CustomObjectsApi(client)
    ns = bench_namespace(0)
    core.create_namespaced_secret(ns, {"metadata": {"name": "theirs"}, "stringData": {"x": "y"}})
    expected = {"copycat": "Conflict", "grabby": "TargetNotOwned"}
    for body in (flow_body(ns, "copycat", "flow-secrets"), flow_body(ns, "grabby", "theirs")):
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, "flowsecretsyncs", body)

    def both_reported() -> bool:
        for name, reason in expected.items():
            obj = custom.get_namespaced_custom_object(GROUP, VERSION, ns, "flowsecretsyncs", name)
            conditions = (obj.get("status") or {}).get("conditions") or []
            if not any(c["type"] == "Synced" and c["reason"] == reason for c in conditions):
                return False
        return True

    wait_for("a Conflict and a TargetNotOwned", both_reported, 120, interval=1.0)
    return len(expected)


def _restart(
    cluster: LocalCluster, kubeconfig: Path, env: dict[str, str], flows: int, failing: int
) -> dict[str, Any]:
    """A new operator process over N converged spaces (no flow behind but the `failing` ones,
    which fail for good): time until it has reconciled every space and flow once, and the failing
    ones once more at their next tick, its CPU, RSS and API requests meanwhile."""
    wall0, t0 = time.time(), time.monotonic()
    op = cluster.start_operator(env=env, kubeconfig=kubeconfig, wait=False)
    pid = op.popen.pid
    sampler = Sampler(pid)
    sampler.start()
    op.wait_ready(timeout=600)

    def reconciled(again: int = 0) -> bool:
        metrics = op.metrics()  # one scrape lists every flow: one a second, not one every 0.2 s
        return (
            reconciles(metrics, "SpaceSecrets") >= N
            and reconciles(metrics, "FlowSecretSync") >= flows + failing + again
        )

    wait_for("every space and flow reconciled by the new process", reconciled, 3600, 1.0)
    seconds, cpu = time.monotonic() - t0, cpu_seconds(pid)
    rss, peak = rss_mib(pid)
    sampler.stopped.set()
    # the failing flows are tried again (their space's reconcile, their next tick): still nothing
    wait_for("the failing flows tried again", lambda: reconciled(failing), 120, 1.0)
    assert "Traceback" not in op.log_text()
    wall1 = time.time()
    op.stop()
    time.sleep(2)  # the audit log is written in 1 s batches
    requests = audit_requests(cluster.cp.audit_log, OPERATOR_USER, wall0, wall1)
    return {
        "allReconciledSeconds": round(seconds, 2),
        "cpuSeconds": round(cpu, 1),
        "rssMiB": round(rss, 1),
        "peakMiB": round(max(peak, sampler.peak), 1),
        "failingFlows": failing,
        "apiRequests": len(requests),
        "apiWrites": by_verb_and_resource(requests),
        "apiReads": by_verb_and_resource(requests, writes_only=False),
    }


# =============================================================================================
# The report
# =============================================================================================


def markdown(r: dict[str, Any]) -> str:
    def get(*path: str) -> Any:
        node: Any = r
        for p in path:
            node = node.get(p) if isinstance(node, dict) else None
        return "n/a" if node is None else node

    def pq(*path: str) -> str:
        return f"{get(*path, 'p50')} / {get(*path, 'p99')}"

    n = r["N"]
    rows = [
        ("objects (spaces + flows)", f"{n} + {n}, {r['keysPerSpace']} keys each", ""),
        ("bench create rate (objects/s)", get("create", "objectsPerSecond"), ""),
        ("cold start: all Ready (s)", get("coldStart", "allReadySeconds"), ""),
        (
            "cold start: all Ready + Synced + projected (s)",
            get("coldStart", "allProjectedSeconds"),
            "<= 60 at 5,000",
        ),
        ("cold start: operator CPU (s)", get("coldStart", "cpuSeconds"), ""),
        (
            "cold start: operator CPU per namespace (ms), all / after healthy",
            f"{get('coldStart', 'cpuMsPerNamespace')} / "
            f"{get('coldStart', 'cpuMsPerNamespaceAfterHealthy')}",
            "<= 6",
        ),
        (
            f"cold start: operator / kube-apiserver CPU; cores busy of {r['cpus']} "
            "(operator + control plane)",
            f"{get('coldStart', 'operatorPerApiServerCpu')} / {get('coldStart', 'coresBusy')}",
            "",
        ),
        (
            "cold start: targets first / p10 / p50 / p90 / last (s)",
            " / ".join(
                str(get("coldStart", "targetSeconds", k))
                for k in ("first", "p10", "p50", "p90", "last")
            ),
            "",
        ),
        (
            "cold start: spaces Ready first / p10 / p50 / p90 / last (s)",
            " / ".join(
                str(get("coldStart", "spaceReadySeconds", k))
                for k in ("first", "p10", "p50", "p90", "last")
            ),
            "",
        ),
        (
            "write baseline: wall (s) / writes/s / kube-apiserver CPU (s)",
            f"{get('writeBaseline', 'wallSeconds')} / {get('writeBaseline', 'writesPerSecond')}"
            f" / {get('writeBaseline', 'controlPlaneCpuSeconds', 'kube-apiserver')}",
            "",
        ),
        (
            "cold start / write baseline: wall, kube-apiserver CPU",
            f"{get('coldStart', 'ratioToWriteBaseline', 'wall')} / "
            f"{get('coldStart', 'ratioToWriteBaseline', 'apiServerCpu')}",
            "<= 1.3 wall",
        ),
        (
            "cold start: kube-apiserver / etcd CPU (s)",
            f"{get('coldStart', 'controlPlaneCpuSeconds', 'kube-apiserver')} / "
            f"{get('coldStart', 'controlPlaneCpuSeconds', 'etcd')}",
            "",
        ),
        ("first projection p50 / p99 (s)", pq("firstProjectionSeconds"), "p99 <= 2 at 2,000 obj"),
        ("change -> version p50 / p99 (s)", pq("immediatePathSeconds", "changeToVersion"), ""),
        ("save -> target p50 / p99 (s)", pq("immediatePathSeconds", "saveToTarget"), ""),
        (
            "change -> target via save p50 / p99 (s)",
            pq("immediatePathSeconds", "changeToTargetViaSave"),
            "",
        ),
        ("steady-state writes/min (operator user)", get("steadyState", "writesPerMinute"), "0"),
        ("steady-state CPU (%)", get("steadyState", "cpuPercent"), ""),
        (
            "RSS steady / peak (MiB)",
            f"{get('steadyState', 'rssMiB')} / {get('rss', 'peakMiB')}",
            "<= 150 at 5,000",
        ),
        (
            "restart: all reconciled (s) / API requests / writes",
            f"{get('restart', 'allReconciledSeconds')} / {get('restart', 'apiRequests')} / "
            f"{sum((get('restart', 'apiWrites') or {}).values()) if r.get('restart') else 'n/a'}",
            "0 writes",
        ),
        (
            "restart: operator CPU (s) / peak RSS (MiB)",
            f"{get('restart', 'cpuSeconds')} / {get('restart', 'peakMiB')}",
            "",
        ),
        ("unseal (us/value)", get("inProcess", "unsealMicrosecondsPerValue"), "<= 200"),
        ("seal, client side (us/value)", get("inProcess", "sealMicrosecondsPerValue"), ""),
        (
            "reconcile 100-key space CPU: first / unchanged / 1 key (ms)",
            " / ".join(
                str(get("inProcess", "reconcile100KeysCpuMs", k))
                for k in ("firstVersion", "unchanged", "oneKeyChanged")
            ),
            "",
        ),
        (
            "first projection of 100 keys CPU (ms)",
            get("inProcess", "firstProjection100KeysCpuMs"),
            "",
        ),
    ]
    lines = [f"| spacesecrets bench, N = {n} | value | goal |", "| --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)
