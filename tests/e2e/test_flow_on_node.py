"""A flow, running: the Node-RED image `make nodered-image` builds, in a pod on the real node, from
examples/team-a as a user applies it (only the namespace changed, and the node's tick shortened).

An owner's `spacesecrets set` reaches the running flow's global context with no restart, through
the real kubelet's update of the mounted Secret (at its default 1m resync: the operator nudges the
pod, engine.pods) and the node's tick; a
change of the Deployment's pod template is a save: the operator syncs the target at once, though
the flow's autosync is far off. The flow answers over HTTP on the pod's loopback, asked through
`kubectl exec` with the image's Node.js.

The shared operator's "1m" autosync is scaled to 3 s (tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.images import build_image
from tests.support.space import Space

from spacesecrets.devtools.dev import LocalCluster, OperatorProcess, wait_for
from spacesecrets.devtools.node import Node
from spacesecrets.kube.client import Kube

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "team-a"
FLOW = "orders-flow"
OWNER = "alice@example.com"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the node and the image need root")

# fetch on the pod's loopback with the image's Node.js (18: fetch is built in)
FETCH = (
    'fetch("http://127.0.0.1:1880/api-host").then(r => r.text()).then(t => console.log(t),'
    " e => { console.error(String(e)); process.exit(1); })"
)


def example(namespace: str) -> list[dict[str, Any]]:
    docs = []
    for name in ("flowsecretsync.yaml", "node-red-flow.yaml"):
        for doc in yaml.safe_load_all((EXAMPLE / name).read_text()):
            if doc:
                doc["metadata"]["namespace"] = namespace
                docs.append(doc)
    return docs


def served(cluster: LocalCluster, namespace: str, pod: str) -> dict[str, Any] | None:
    done = cluster.cp.kubectl(
        "exec", "-n", namespace, pod, "-c", "node-red", "--", "node", "-e", FETCH, check=False
    )
    if done.returncode != 0:
        return None
    try:
        return dict(json.loads(done.stdout))
    except ValueError:
        return None


def flow_pods(cluster: LocalCluster, namespace: str) -> list[dict[str, Any]]:
    out = cluster.cp.kubectl("get", "pods", "-n", namespace, "-l", "app=orders-flow", "-o", "json")
    return [
        p for p in json.loads(out.stdout)["items"] if not p["metadata"].get("deletionTimestamp")
    ]


def set_value(cluster: LocalCluster, namespace: str, key: str, value: str) -> None:
    """`spacesecrets set` as the owner, with the owner's own kubeconfig."""
    kubeconfig = cluster.cp.kubeconfig_for(OWNER)
    done = subprocess.run(
        [sys.executable, "-m", "spacesecrets", "set", key, "-n", namespace],
        input=value.encode(),
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()


def test_set_reaches_the_running_flow_and_a_save_syncs_at_once(
    cluster: LocalCluster, node: Node, operator: OperatorProcess, kube: Kube, ns: str
) -> None:
    began = time.monotonic()
    node.import_image(build_image("nodered"))
    print(f"\nNode-RED image build (cached) + import: {time.monotonic() - began:.2f}s")
    space = Space(cluster, kube, ns)
    space.apply({"PRODUCT_A_API_HOST": "api.example.com"})
    space.wait_version(1, timeout=30)
    docs = example(ns)
    [deployment] = [d for d in docs if d["kind"] == "Deployment"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    # the node's own tick (seconds), its test override; the example's flow says "1m"
    container["env"] = [{"name": "SPACESECRETS_AUTOSYNC_SECONDS", "value": "1"}]
    started = time.monotonic()
    cluster.cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))

    def ready_pod() -> dict[str, Any] | None:
        for pod in flow_pods(cluster, ns):
            conds = (pod.get("status") or {}).get("conditions") or []
            if any(c["type"] == "Ready" and c["status"] == "True" for c in conds):
                return pod
        return None

    pod = wait_for("the flow's pod Ready", ready_pod, timeout=120)
    ready = time.monotonic() - started
    name = pod["metadata"]["name"]
    first = wait_for("the flow serving", lambda: served(cluster, ns, name), timeout=60)
    print(f"flow applied to pod Ready: {ready:.2f}s; to serving: {time.monotonic() - started:.2f}s")
    assert first == {"host": "api.example.com", "version": 1}

    # an owner's set reaches the running flow: the operator's tick, the kubelet's volume swap,
    # the node's tick; the same pod, never restarted
    changed = time.monotonic()
    set_value(cluster, ns, "PRODUCT_A_API_HOST", "api-v2.example.com")
    now = wait_for(
        "the new value served",
        lambda: (s := served(cluster, ns, name)) and s.get("version") == 2 and s,
        timeout=60,
        interval=0.2,
    )
    took = time.monotonic() - changed
    print(f"spacesecrets set to the value served by the running flow: {took:.2f}s")
    assert now == {"host": "api-v2.example.com", "version": 2}
    [same] = flow_pods(cluster, ns)
    assert same["metadata"]["uid"] == pod["metadata"]["uid"]
    assert same["status"]["containerStatuses"][0]["restartCount"] == 0

    # sync on save: with the flow's autosync far off (24h), a set waits for the tick...
    cluster.cp.kubectl(
        "patch",
        "flowsecretsync",
        FLOW,
        "-n",
        ns,
        "--type=merge",
        "-p",
        '{"spec":{"autosync":"24h"}}',
    )
    wait_for(
        "the flow Synced at version 2",
        lambda: space.condition("Synced", FLOW, "flowsecretsyncs").get("status") == "True",
        timeout=30,
    )
    set_value(cluster, ns, "PRODUCT_A_API_HOST", "api-v3.example.com")
    space.wait_version(3, timeout=30)
    time.sleep(8)  # more than two of the operator's scaled minutes: no tick brings it
    assert space.target_documents("orders-flow-secrets")["SECRETS_METADATA"]["version"] == 2
    # ...and a change of the Deployment's pod template (a redeploy) brings it at once
    saved = time.monotonic()
    patch = {"spec": {"template": {"metadata": {"annotations": {"example.com/saved": "1"}}}}}
    cluster.cp.kubectl(
        "patch", "deployment", FLOW, "-n", ns, "--type=merge", "-p", json.dumps(patch)
    )
    wait_for(
        "the target at version 3",
        lambda: space.target_documents("orders-flow-secrets")["SECRETS_METADATA"]["version"] == 3,
        timeout=20,
    )
    print(f"pod template changed to target synced: {time.monotonic() - saved:.2f}s")

    def new_pod_serving() -> dict[str, Any] | None:
        pod = ready_pod()
        if pod is None or pod["metadata"]["uid"] == same["metadata"]["uid"]:
            return None
        s = served(cluster, ns, pod["metadata"]["name"])
        return s if s and s.get("version") == 3 else None

    now = wait_for("the redeployed flow serving version 3", new_pod_serving, timeout=90)
    print(f"pod template changed to the new pod serving: {time.monotonic() - saved:.2f}s")
    assert now == {"host": "api-v3.example.com", "version": 3}
    cluster.cp.kubectl("delete", "deployment", FLOW, "-n", ns, "--wait=true", "--timeout=60s")
