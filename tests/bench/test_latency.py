"""Latency as a user feels it: from an owner's `spacesecrets set` to the new value in the global
context of running Node-RED flows, on the real node (kubelet + containerd + runc), split in legs.

`make bench-latency` (BENCH_LATENCY_PODS flows, default 10, each changed BENCH_LATENCY_ROUNDS
times, default 2: 20 changes a scenario). Each scenario runs on a fresh control plane with its own
node, since a kubelet's resync period is fixed at its start. The operator runs with the real
autosync periods (no scaling) as its ServiceAccount; every flow is the Node-RED image that
`make nodered-image` builds, with the spacesecrets node as a user configures it (autosync 1m,
sync on save).

For each change, on one clock (the pods run on this machine):
- set: the `spacesecrets set` command, as the owner, from its start (this process's wall clock);
- version: the space's new `status.version` seen by a watch here;
- target: the target Secret holding that version, seen by a watch here (after a Sync now
  request, sent as soon as the version is seen, or at the flow's own autosync tick);
- file: the new SECRETS_METADATA in the pod's volume, seen by a sidecar polling it every 10 ms;
- context: the new version in the flow's global context, seen by a function node polling it every
  10 ms (logged with its time).
Legs: operator = set -> target (of which set -> version, and version -> target: the Sync now
request or the tick); kubelet = target -> file; node = file -> context; total = set -> context.

The scenarios: the kubelet's default resync (1m) with the operator's pod nudge (the default), the
same without it (SPACESECRETS_REFRESH_PODS=false), and a kubelet resyncing every 1s without the
nudge; each through Sync now, and the first also through the flow's own 1m autosync tick.

The test asserts behaviour only: every change reached every flow, in order, with no restart.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from tests.bench.harness import api_client, reported, summary
from tests.support.images import build_image
from tests.support.node import node_binaries_or_skip
from tests.support.space import Space

from spacesecrets.devtools.dev import LocalCluster, local_cluster, wait_for
from spacesecrets.devtools.node import Node
from spacesecrets.kube.factory import kube_for
from spacesecrets.names import FLOW_LABEL, SYNC_NOW

ROOT = Path(__file__).resolve().parents[2]
PODS = int(os.environ.get("BENCH_LATENCY_PODS", "10"))
ROUNDS = int(os.environ.get("BENCH_LATENCY_ROUNDS", "2"))
OWNER = "alice@example.com"
KEY = "API_HOST"
TARGET = "flow-secrets"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the node and the image need root")

# A sidecar of the flow's pod: the volume's SECRETS_METADATA version, each time it changes.
WATCHER = (
    'const fs = require("fs"); let last = null; setInterval(() => { let v = null;'
    ' try { v = JSON.parse(fs.readFileSync("/etc/spacesecrets/SECRETS_METADATA")).version; }'
    " catch (e) {} if (v !== null && v !== last) { last = v;"
    " console.log(`file ${v} ${Date.now()}`); } }, 10);"
)
# The flow's probe: the version in global context, each time it changes.
PROBE_START = (
    'context.set("t", setInterval(() => { const m = global.get("SECRETS_METADATA");'
    ' const v = m && m.version; if (v && v !== context.get("v")) { context.set("v", v);'
    " node.log(`context ${v} ${Date.now()}`); } }, 10));"
)
FLOWS = [
    {"id": "tab", "type": "tab", "label": "latency"},
    {"id": "sm", "z": "tab", "type": "spacesecrets", "name": "secret manager", "x": 100, "y": 40,
     "path": "/etc/spacesecrets", "autosync": "1m", "syncOnSave": True},
    {"id": "fn", "z": "tab", "type": "function", "name": "probe", "func": "return msg;",
     "x": 100, "y": 100, "outputs": 1, "initialize": PROBE_START,
     "finalize": 'clearInterval(context.get("t"));', "wires": [[]]},
]  # fmt: skip
SEEN = re.compile(r"\b(file|context) (\d+) (\d{13})\b")


class TargetClock:
    """When each target first held each version, on this process's wall clock (a watch)."""

    def __init__(self, client: kubernetes.client.ApiClient) -> None:
        self.core = kubernetes.client.CoreV1Api(client)
        self.custom = kubernetes.client.CustomObjectsApi(client)
        self.seen: dict[tuple[str, str, int], float] = {}
        self.cond = threading.Condition()
        self._stop = threading.Event()

    def start(self) -> None:
        for fn in (self._targets, self._spaces):
            threading.Thread(target=fn, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _note(self, key: tuple[str, str, int]) -> None:
        with self.cond:
            self.seen.setdefault(key, time.time())
            self.cond.notify_all()

    def _targets(self) -> None:
        while not self._stop.is_set():
            stream = kubernetes.watch.Watch().stream(
                self.core.list_secret_for_all_namespaces,
                label_selector=FLOW_LABEL,
                timeout_seconds=30,
            )
            for event in stream:
                obj = event["object"]
                version = (obj.metadata.annotations or {}).get("spacesecrets.io/version")
                if version:
                    self._note((obj.metadata.namespace, "target", int(version)))

    def _spaces(self) -> None:
        while not self._stop.is_set():
            stream = kubernetes.watch.Watch().stream(
                self.custom.list_cluster_custom_object,
                "spacesecrets.io",
                "v1alpha1",
                "spacesecrets",
                timeout_seconds=30,
            )
            for event in stream:
                obj = event["object"]
                version = (obj.get("status") or {}).get("version")
                if version:
                    self._note((obj["metadata"]["namespace"], "version", int(version)))

    def wait(self, key: tuple[str, str, int], timeout: float = 300) -> float:
        with self.cond:
            if not self.cond.wait_for(lambda: key in self.seen, timeout):
                raise AssertionError(f"{key} not seen within {timeout:.0f}s")
            return self.seen[key]


def flow_manifests(namespace: str) -> list[dict[str, Any]]:
    """The example's ConfigMap and Deployment, with the probe flow and the watcher sidecar."""
    text = (ROOT / "examples/team-a/node-red-flow.yaml").read_text()
    [configmap, deployment] = [d for d in yaml.safe_load_all(text) if d]
    for doc in (configmap, deployment):
        doc["metadata"]["namespace"] = namespace
    configmap["data"]["flows.json"] = json.dumps(FLOWS)
    spec = deployment["spec"]["template"]["spec"]
    [node_red] = spec["containers"]
    spec["volumes"][-1]["secret"]["secretName"] = TARGET
    watcher = {
        "name": "watcher",
        "image": node_red["image"],
        "imagePullPolicy": "IfNotPresent",
        "command": ["node", "-e", WATCHER],
        "securityContext": node_red["securityContext"],
        "volumeMounts": [m for m in node_red["volumeMounts"] if m["name"] == "secrets"],
    }
    spec["containers"] = [node_red, watcher]
    return [configmap, deployment]


def pod_seen(cluster: LocalCluster, namespace: str) -> dict[tuple[str, int], float]:
    """What the flow's pod logged: (file|context, version) -> when, in seconds."""
    seen: dict[tuple[str, int], float] = {}
    for container in ("node-red", "watcher"):
        out = cluster.cp.kubectl(
            "logs", "-n", namespace, "deploy/orders-flow", "-c", container, check=False
        ).stdout
        for what, version, millis in SEEN.findall(out):
            seen.setdefault((what, int(version)), int(millis) / 1000)
    return seen


class Scenario:
    """One kubelet and operator configuration: PODS flows, each changed ROUNDS times."""

    def __init__(self, cluster: LocalCluster, node: Node, refresh: bool) -> None:
        self.cluster, self.node, self.refresh = cluster, node, refresh
        self.kube = kube_for(str(cluster.kubeconfig))
        self.owner = cluster.cp.kubeconfig_for(OWNER)
        self.clock = TargetClock(api_client(cluster.kubeconfig))
        self.namespaces = [f"latency-{i}" for i in range(PODS)]
        self.version = 1

    def setup(self) -> None:
        self.clock.start()
        for ns in self.namespaces:
            self.cluster.cp.kubectl("create", "namespace", ns)
            space = Space(self.cluster, self.kube, ns)
            space.apply({KEY: "v1.example.com"})
            docs = [space.flow("orders-flow", TARGET, autosync="1m"), *flow_manifests(ns)]
            self.cluster.cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
        for ns in self.namespaces:
            self.wait_flow(ns, 1)

    def wait_flow(self, namespace: str, version: int) -> dict[tuple[str, int], float]:
        """What the flow's pod logged, once its global context holds `version`."""

        def reached() -> dict[tuple[str, int], float] | None:
            seen = pod_seen(self.cluster, namespace)
            return seen if ("context", version) in seen else None

        found: dict[tuple[str, int], float] = wait_for(
            f"{namespace}'s flow at version {version}", reached, timeout=300, interval=1
        )
        return found

    def set_value(self, namespace: str, value: str) -> tuple[float, float]:
        began = time.time()
        done = subprocess.run(
            [sys.executable, "-m", "spacesecrets", "set", KEY, "-n", namespace],
            input=value.encode(),
            env={**os.environ, "KUBECONFIG": str(self.owner)},
            capture_output=True,
            check=False,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr.decode()
        return began, time.time()

    def sync_now(self, namespace: str) -> None:
        stamp = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        kube_for(str(self.owner)).patch_custom(
            "flowsecretsyncs",
            namespace,
            "orders-flow",
            {"metadata": {"annotations": {SYNC_NOW: stamp}}},
        )

    def round(self, path: str) -> list[dict[str, float]]:
        """Every flow changed once, one after the other; the legs of each change."""
        self.version += 1
        v = self.version
        starts: dict[str, tuple[float, float, float]] = {}
        for ns in self.namespaces:
            began, done = self.set_value(ns, f"v{v}.example.com")
            starts[ns] = (began, done, self.clock.wait((ns, "version", v), timeout=60))
            if path == "sync now":
                self.sync_now(ns)
        samples = []
        for ns in self.namespaces:
            began, cli_done, versioned = starts[ns]
            target = self.clock.wait((ns, "target", v), timeout=180)
            seen = self.wait_flow(ns, v)
            samples.append(
                {
                    "cli": cli_done - began,
                    "set->version": versioned - began,
                    "operator": target - began,
                    "version->target": target - versioned,
                    "kubelet": seen[("file", v)] - target,
                    "node": seen[("context", v)] - seen[("file", v)],
                    "total": seen[("context", v)] - began,
                }
            )
        return samples

    def assert_no_restarts(self) -> None:
        for ns in self.namespaces:
            pods = json.loads(
                self.cluster.cp.kubectl("get", "pods", "-n", ns, "-o", "json").stdout
            )["items"]
            assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
            statuses = pods[0]["status"]["containerStatuses"]
            assert all(s["restartCount"] == 0 for s in statuses), statuses


@pytest.fixture(scope="module")
def results() -> Iterator[dict[str, Any]]:
    with reported(
        "latency", {"flows": PODS, "rounds": ROUNDS, "cpus": os.cpu_count()}, markdown
    ) as out:
        yield out


SCENARIOS = [
    ("kubelet 1m, pod nudge", "1m", True, ("sync now", "autosync 1m")),
    ("kubelet 1m, no nudge", "1m", False, ("sync now",)),
    ("kubelet 1s, no nudge", "1s", False, ("sync now",)),
]


@pytest.mark.parametrize(("title", "resync", "refresh", "paths"), SCENARIOS, ids=lambda x: x)
def test_set_to_a_running_flow(
    results: dict[str, Any], title: str, resync: str, refresh: bool, paths: tuple[str, ...]
) -> None:
    bin_dir = node_binaries_or_skip()
    image = build_image("nodered")
    env = os.environ.get("SPACESECRETS_CONTROLPLANE_BIN")
    with local_cluster(Path(env) if env else None) as cluster:
        node = Node(cluster.cp, bin_dir, sync_frequency=resync)
        with node.running():
            node.import_image(image)
            cluster.start_operator(env={"SPACESECRETS_REFRESH_PODS": str(refresh).lower()})
            scenario = Scenario(cluster, node, refresh)
            scenario.setup()
            for path in paths:
                samples = [s for _ in range(ROUNDS) for s in scenario.round(path)]
                legs = {leg: summary([s[leg] for s in samples]) for leg in samples[0]}
                results[f"{title}; {path}"] = legs
                print(f"\n{title}; {path}: " + json.dumps({k: v["p50"] for k, v in legs.items()}))
            scenario.assert_no_restarts()
            scenario.clock.stop()


def markdown(r: dict[str, Any]) -> str:
    legs = ("cli", "set->version", "version->target", "operator", "kubelet", "node", "total")
    lines = [
        "| scenario; path | " + " | ".join(f"{leg} p50 / p99 (s)" for leg in legs) + " |",
        "|---|" + "---|" * len(legs),
    ]
    for name, value in r.items():
        if isinstance(value, dict):
            cells = [f"{value[leg]['p50']:.2f} / {value[leg]['p99']:.2f}" for leg in legs]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
