"""What the benchmarks measure with: fast object creation, watches that time-stamp what the operator
does, process statistics from /proc, the audit log, and an in-memory API for in-process timings.

Test support, not a test module: importing it needs no cluster.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import kubernetes
from tests.bench import baseline

from spacesecrets.core import crypto
from spacesecrets.devtools.dev import OPERATOR_NAMESPACE, local_cluster
from spacesecrets.kube import AlreadyExists, NotFound
from spacesecrets.kube.transport import Rest

GROUP, VERSION = "spacesecrets.io", "v1alpha1"
BUILD = Path(__file__).resolve().parents[2] / "build" / "bench"
N = int(os.environ.get("BENCH_N", "100"))  # spaces, each with KEYS values and one flow
KEYS = 20
# the baseline client's concurrency: enough that the API server, not the client, is the bound
BASELINE_WORKERS = int(os.environ.get("BENCH_BASELINE_WORKERS", "64"))
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})


# -- the report -----------------------------------------------------------------------------------


@contextlib.contextmanager
def reported(
    name: str, first: Mapping[str, Any], markdown: Callable[[dict[str, Any]], str]
) -> Iterator[dict[str, Any]]:
    """A bench module's figures: filled in by its tests, then printed as JSON and as a markdown
    table, and written to build/bench/<name>.json (also when a test failed)."""
    out = dict(first)
    try:
        yield out
    finally:
        print("\n" + json.dumps(out, indent=2, sort_keys=True))
        print("\n" + markdown(out))
        BUILD.mkdir(parents=True, exist_ok=True)
        (BUILD / f"{name}.json").write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")


# -- clients ------------------------------------------------------------------------------------


def api_client(kubeconfig: Path, pool: int = 32) -> kubernetes.client.ApiClient:
    """A client whose connection pool is as large as the thread pools that share it."""
    config = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(kubeconfig), client_configuration=config)
    config.connection_pool_maxsize = pool
    return kubernetes.client.ApiClient(config)


def parallel(fn: Callable[[Any], Any], items: Iterable[Any], workers: int = 16) -> list[Any]:
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, items))


# -- documents ----------------------------------------------------------------------------------


def values_for(index: int, keys: int, generation: int = 0) -> dict[str, tuple[str, bytes]]:
    """`keys` values for space number `index`: mostly text, every fifth a small JSON document."""
    out: dict[str, tuple[str, bytes]] = {}
    for k in range(keys):
        name = f"KEY_{k:03d}"
        if k % 5 == 4:
            out[name] = (
                "json",
                json.dumps(
                    {"space": index, "key": k, "gen": generation, "flags": [True, False]}
                ).encode(),
            )
        else:
            out[name] = ("text", f"bench-{index}-{k}-{generation}-".encode() + b"x" * 24)
    return out


def sealed_data(
    pub: Any, namespace: str, values: Mapping[str, tuple[str, bytes]]
) -> dict[str, dict[str, str]]:
    return {
        k: {"format": fmt, "sealed": crypto.seal(pub, namespace, k, fmt, raw)}
        for k, (fmt, raw) in values.items()
    }


def space_body(
    pub: Any,
    namespace: str,
    values: Mapping[str, tuple[str, bytes]],
    owners: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SpaceSecrets",
        "metadata": {"name": "secrets", "namespace": namespace},
        "spec": {
            "owners": owners or [{"kind": "User", "name": "owner@example.com"}],
            "data": sealed_data(pub, namespace, values),
        },
    }


def flow_body(namespace: str, name: str, target: str, autosync: str = "1m") -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "FlowSecretSync",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"target": {"kind": "Secret", "name": target}, "autosync": autosync},
    }


# -- percentiles --------------------------------------------------------------------------------


def percentile(samples: list[float], q: float) -> float | None:
    if not samples:
        return None
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def spread(seconds: list[float]) -> dict[str, float | None]:
    """When the first, the 10th, 50th and 90th percentile and the last of them came."""
    out = {f"p{q}": percentile(seconds, q) for q in (10, 50, 90)}
    points = {"first": min(seconds), **out, "last": max(seconds)}
    return {k: (round(v, 2) if v is not None else None) for k, v in points.items()}


def summary(samples: list[float]) -> dict[str, float | int | None]:
    return {
        "n": len(samples),
        "p50": percentile(samples, 50),
        "p99": percentile(samples, 99),
        "max": max(samples) if samples else None,
        "mean": statistics.fmean(samples) if samples else None,
    }


# -- watches ------------------------------------------------------------------------------------


class Recorder:
    """Watches spaces, flows and projected Secrets cluster-wide and notes, on this process's
    monotonic clock, when each first reached a state. Waiters block on a condition variable."""

    def __init__(self, client: kubernetes.client.ApiClient) -> None:
        self.client = client
        self.cond = threading.Condition()
        self.spaces: set[str] = set()  # namespaces whose space was seen
        self.space_ready: dict[str, float] = {}  # ns -> first Ready=True
        self.space_version: dict[str, int] = {}  # ns -> latest status.version
        self.version_seen: dict[tuple[str, int], float] = {}  # (ns, version) -> first seen
        self.flow_synced: dict[tuple[str, str], float] = {}  # (ns, flow) -> first Synced=True
        self.target_version: dict[tuple[str, str], int] = {}  # (ns, target) -> version annotation
        self.target_seen: dict[tuple[str, str, int], float] = {}  # (ns, target, version) -> first
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        custom = kubernetes.client.CustomObjectsApi(self.client)
        core = kubernetes.client.CoreV1Api(self.client)
        sources: list[tuple[Callable[..., Any], dict[str, Any], Callable[[dict[str, Any]], None]]]
        sources = [
            (
                custom.list_cluster_custom_object,
                {"group": GROUP, "version": VERSION, "plural": "spacesecrets"},
                self._space,
            ),
            (
                custom.list_cluster_custom_object,
                {"group": GROUP, "version": VERSION, "plural": "flowsecretsyncs"},
                self._flow,
            ),
            (
                core.list_secret_for_all_namespaces,
                {"label_selector": "app.kubernetes.io/managed-by=spacesecrets"},
                self._target,
            ),
        ]
        for fn, kwargs, handle in sources:
            thread = threading.Thread(target=self._watch, args=(fn, kwargs, handle), daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()

    def _watch(
        self,
        fn: Callable[..., Any],
        kwargs: dict[str, Any],
        handle: Callable[[dict[str, Any]], None],
    ) -> None:
        resource_version = ""
        while not self._stop.is_set():
            watch = kubernetes.watch.Watch()
            try:
                for event in watch.stream(
                    fn,
                    timeout_seconds=60,
                    allow_watch_bookmarks=True,
                    resource_version=resource_version or None,
                    **kwargs,
                ):
                    raw = event.get("raw_object") or {}
                    resource_version = (raw.get("metadata") or {}).get(
                        "resourceVersion", resource_version
                    )
                    if event["type"] in ("ADDED", "MODIFIED"):
                        handle(raw)
                    if self._stop.is_set():
                        break
            except kubernetes.client.ApiException as exc:
                if exc.status == 410:
                    resource_version = ""  # expired: list again
                time.sleep(0.5)
            except Exception:
                time.sleep(0.5)  # the API server restarts in some runs: watch again
            finally:
                watch.stop()

    def _space(self, obj: dict[str, Any]) -> None:
        now = time.monotonic()
        ns = obj["metadata"]["namespace"]
        status = obj.get("status") or {}
        with self.cond:
            self.spaces.add(ns)
            ready = any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in status.get("conditions") or []
            )
            if ready and ns not in self.space_ready:
                self.space_ready[ns] = now
            version = status.get("version")
            if isinstance(version, int):
                self.space_version[ns] = version
                self.version_seen.setdefault((ns, version), now)
            self.cond.notify_all()

    def _flow(self, obj: dict[str, Any]) -> None:
        now = time.monotonic()
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        synced = any(
            c.get("type") == "Synced" and c.get("status") == "True"
            for c in (obj.get("status") or {}).get("conditions") or []
        )
        with self.cond:
            if synced and key not in self.flow_synced:
                self.flow_synced[key] = now
            self.cond.notify_all()

    def _target(self, obj: dict[str, Any]) -> None:
        now = time.monotonic()
        meta = obj["metadata"]
        raw = (meta.get("annotations") or {}).get("spacesecrets.io/version")
        if raw is None:
            return
        ns, name, version = meta["namespace"], meta["name"], int(raw)
        with self.cond:
            self.target_version[(ns, name)] = version
            self.target_seen.setdefault((ns, name, version), now)
            self.cond.notify_all()

    def wait_converged(self, namespaces: list[str], timeout: float) -> None:
        """Until every space is Ready, every flow Synced and each namespace's `flow-secrets`
        target seen at version 1 (a cold start's end)."""
        n = len(namespaces)
        self.wait(
            "every space Ready, every flow Synced and projected",
            lambda: (
                len(self.space_ready) >= n
                and len(self.flow_synced) >= n
                and all((ns, "flow-secrets", 1) in self.target_seen for ns in namespaces)
            ),
            timeout,
        )

    def wait(self, what: str, predicate: Callable[[], bool], timeout: float) -> None:
        with self.cond:
            if not self.cond.wait_for(predicate, timeout):
                raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


# -- the operator process -----------------------------------------------------------------------


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


def kernel_cpu_seconds(pid: int) -> float:
    """The part of `cpu_seconds` spent in the kernel (system calls: sockets, futexes, epoll)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[12]) / _TICK


def rss_mib(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) in MiB."""
    status = dict(
        line.split(":", 1)
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if ":" in line
    )
    return (int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024)


# -- the audit log ------------------------------------------------------------------------------


def _audit_time(text: str) -> float:
    return (
        dt.datetime.strptime(text[:26].rstrip("Z"), "%Y-%m-%dT%H:%M:%S.%f")
        .replace(tzinfo=dt.UTC)
        .timestamp()
    )


def audit_requests(path: Path, user: str, since: float, until: float) -> list[dict[str, Any]]:
    """The user's completed requests received in [since, until) (wall-clock seconds)."""
    out = []
    needle = f'"username":"{user}"'
    # kube-apiserver rotates its audit log at 100 MB (audit-<time>.log beside it): at 20,000
    # spaces a cold start fills several
    rotated = sorted(path.parent.glob(f"{path.stem}-*{path.suffix}"))
    for part in [*rotated, path]:
        out += _requests_in(part, needle, since, until)
    return out


def _requests_in(path: Path, needle: str, since: float, until: float) -> list[dict[str, Any]]:
    out = []
    with path.open(errors="replace") as lines:
        for line in lines:
            if needle not in line:
                continue
            entry = json.loads(line)
            if entry.get("stage") != "ResponseComplete":
                continue
            at = _audit_time(entry["requestReceivedTimestamp"])
            if since <= at < until:
                out.append(entry)
    return out


def by_verb_and_resource(entries: list[dict[str, Any]], writes_only: bool = True) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for entry in entries:
        if writes_only and entry["verb"] not in WRITE_VERBS:
            continue
        ref = entry.get("objectRef") or {}
        resource = ref.get("resource", "?") + (
            f"/{ref['subresource']}" if ref.get("subresource") else ""
        )
        counts[f"{entry['verb']} {resource}"] += 1
    return dict(counts.most_common())


# -- an in-memory API, for in-process reconcile timings -------------------------------------------


class MemoryKube:
    """Just enough of `spacesecrets.kube.client.Kube` for a space's reconcile, in memory."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.customs: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.statuses: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.writes = 0
        self._rv = 0

    def _store(self, kind: str, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        self._rv += 1
        self.writes += 1
        obj = json.loads(json.dumps(body))
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self.objects[(kind, namespace, obj["metadata"]["name"])] = obj
        return obj

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        try:
            return json.loads(json.dumps(self.objects[(kind, namespace, name)]))
        except KeyError:
            raise NotFound(f"{kind} {namespace}/{name}") from None

    def create(
        self, kind: str, namespace: str, body: Mapping[str, Any], *, answer: bool = True
    ) -> dict[str, Any]:
        if (kind, namespace, body["metadata"]["name"]) in self.objects:
            raise AlreadyExists(body["metadata"]["name"])
        return self._store(kind, namespace, body)

    def replace(
        self, kind: str, namespace: str, body: Mapping[str, Any], *, answer: bool = True
    ) -> dict[str, Any]:
        return self._store(kind, namespace, body)

    def namespace_uid(self, name: str) -> str:
        return f"uid-of-{name}"

    def list_custom(self, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        return list(self.customs.get((plural, namespace or ""), []))

    def patch_status(
        self,
        plural: str,
        namespace: str,
        name: str,
        status: Mapping[str, Any],
        *,
        answer: bool = False,
    ) -> dict[str, Any]:
        self.writes += 1
        self._rv += 1
        key = (plural, namespace, name)
        merged = self.statuses[key] = _merge(self.statuses.get(key, {}), status)
        stored = {"metadata": {"name": name, "resourceVersion": str(self._rv)}, "status": merged}
        return json.loads(json.dumps(stored)) if answer else {}

    def get_role_binding(self, namespace: str, name: str) -> dict[str, Any]:
        return self.get("RoleBinding", namespace, name)

    def create_role_binding(self, namespace: str, body: Mapping[str, Any]) -> None:
        self.create("RoleBinding", namespace, body)

    def replace_role_binding(self, namespace: str, body: Mapping[str, Any]) -> None:
        self.replace("RoleBinding", namespace, body)

    def event(self, *_: Any, **__: Any) -> None:
        self.writes += 1


def _merge(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch (RFC 7386) applied to `target`."""
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# -- the bench's objects, and the write baseline --------------------------------------------------


def bench_namespace(i: int) -> str:
    return f"bench-{i:05d}"


def create_all(
    client: kubernetes.client.ApiClient, pub: Any, n: int, keys: int
) -> dict[str, float]:
    """`n` namespaces, each with a space of `keys` values sealed to `pub` and one flow."""
    core = kubernetes.client.CoreV1Api(client)
    custom = kubernetes.client.CustomObjectsApi(client)
    started = time.monotonic()
    parallel(lambda i: core.create_namespace({"metadata": {"name": bench_namespace(i)}}), range(n))
    after_ns = time.monotonic()

    def space(i: int) -> None:
        ns = bench_namespace(i)
        body = space_body(pub, ns, values_for(i, keys))
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, "spacesecrets", body)

    parallel(space, range(n))
    after_spaces = time.monotonic()
    parallel(
        lambda i: custom.create_namespaced_custom_object(
            GROUP,
            VERSION,
            bench_namespace(i),
            "flowsecretsyncs",
            flow_body(bench_namespace(i), "flow", "flow-secrets"),
        ),
        range(n),
    )
    done = time.monotonic()
    return {
        "namespacesSeconds": round(after_ns - started, 1),
        "spacesSeconds": round(after_spaces - after_ns, 1),
        "flowsSeconds": round(done - after_spaces, 1),
        "objectsPerSecond": round(3 * n / (done - started), 1),
    }


def write_baseline(n: int, keys: int, workers: int) -> dict[str, Any]:
    """The write baseline (baseline.py) at `n` namespaces, on a fresh control plane of its own:
    the objects are created, then the five writes per namespace a cold start must make are
    issued by `workers` threads as the operator's ServiceAccount; the figures.

    The bench's own watches (a `Recorder`) run as they do during the operator's cold start, and
    the baseline's wall time is measured the same way: until they have seen the last target.
    (They cost the API server and this process CPU on a small machine; without them the
    baseline would be measured under lighter conditions than the cold start it is compared
    with. The client's own time to its last answer is reported beside it.)"""
    env = os.environ.get("SPACESECRETS_CONTROLPLANE_BIN")
    with local_cluster(Path(env) if env else None) as cluster:
        ring = crypto.KeyRing.create(dt.datetime.now(dt.UTC))
        client = api_client(cluster.kubeconfig)
        create_all(client, ring.current.public, n, keys)
        custom = kubernetes.client.CustomObjectsApi(client)
        core = kubernetes.client.CoreV1Api(client)
        spaces = custom.list_cluster_custom_object(GROUP, VERSION, "spacesecrets")["items"]
        flows = {
            f["metadata"]["namespace"]: f
            for f in custom.list_cluster_custom_object(GROUP, VERSION, "flowsecretsyncs")["items"]
        }
        ns_uids = {ns.metadata.name: ns.metadata.uid for ns in core.list_namespace().items}
        writes = []
        for s in spaces:
            ns = s["metadata"]["namespace"]
            flow = flows[ns]
            space = baseline.Space(
                namespace=ns,
                space_uid=s["metadata"]["uid"],
                flow_name=flow["metadata"]["name"],
                flow_uid=flow["metadata"]["uid"],
                flow_spec=flow["spec"],
                owners=s["spec"]["owners"],
                data=s["spec"]["data"],
            )
            writes.append(baseline.writes_for(ring, OPERATOR_NAMESPACE, space, ns_uids[ns]))
        assert len(writes) == n
        transport = Rest.from_kubeconfig(cluster.operator_kubeconfig(), connections=workers)
        pids = cluster.cp.pids()
        rec = Recorder(api_client(cluster.kubeconfig, pool=4))
        rec.start()
        rec.wait("the bench's watches listed every space", lambda: len(rec.spaces) >= n, 300)
        t0 = time.monotonic()
        figures = baseline.run(
            transport,
            writes,
            lambda: {name: cpu_seconds(pid) for name, pid in pids.items()},
            workers=workers,
        )
        names = [bench_namespace(i) for i in range(n)]
        rec.wait(
            "every target of the baseline seen",
            lambda: all((ns, "flow-secrets", 1) in rec.target_seen for ns in names),
            timeout=600,
        )
        rec.stop()
        seen = max(rec.target_seen[(ns, "flow-secrets", 1)] for ns in names) - t0
        figures["clientWallSeconds"] = figures["wallSeconds"]
        figures["wallSeconds"] = round(seen, 2)
        figures["writesPerSecond"] = round(figures["writes"] / seen, 1)
        # what was written is what a converged cold start leaves: every target there
        targets = core.list_secret_for_all_namespaces(
            label_selector="app.kubernetes.io/managed-by=spacesecrets"
        ).items
        assert len([t for t in targets if t.metadata.namespace != OPERATOR_NAMESPACE]) == n
    return figures
