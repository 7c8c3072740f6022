"""A target update reaches the running pods that mount it at once, at the kubelet's default resync
(1m): the operator nudges each such pod with one annotation (engine.pods), and the kubelet syncs a
pod whenever the pod object changes. Without the nudge, a pod sees the update 60-80 s later.

Each change must reach the pod's file well inside the minute; the pod carrying the target's
revision shows it was the nudge, and a pod that does not mount the target is left alone.
"""

from __future__ import annotations

import json
import time
from typing import Any

from tests.e2e.test_node import apply, pod_manifest, pod_ready
from tests.support.space import Space

from spacesecrets.devtools.dev import LocalCluster, OperatorProcess, wait_for
from spacesecrets.devtools.node import Node
from spacesecrets.kube.client import Kube
from spacesecrets.names import REFRESH_ANNOTATION

TARGET = "flow-secrets"


def reader_pod(namespace: str, name: str, secret: str) -> dict[str, Any]:
    pod = pod_manifest(namespace, name, secret)
    [container] = pod["spec"]["containers"]
    container["command"] = ["sleep", "3600"]
    container["volumeMounts"] = [{"name": "secret", "mountPath": "/etc/spacesecrets"}]
    return pod


def test_running_pods_mounting_a_target_see_its_update_at_once(
    cluster: LocalCluster, node: Node, operator: OperatorProcess, kube: Kube, ns: str
) -> None:
    assert node.sync_frequency == "1m"
    cp = cluster.cp
    space = Space(cluster, kube, ns)
    space.apply({"API_HOST": "v1.example.com"})
    space.wait_version(1)
    apply(cp, space.flow("orders", TARGET))  # autosync 1m, every 3 s for the shared operator
    wait_for("the target", lambda: space.target_documents(TARGET), timeout=30)
    cp.kubectl("create", "secret", "generic", "other", "-n", ns, "--from-literal=a=b")
    apply(cp, reader_pod(ns, "reader", TARGET), reader_pod(ns, "bystander", "other"))
    for name in ("reader", "bystander"):
        wait_for(f"pod {name} Ready", lambda n=name: pod_ready(cp, ns, n), timeout=60)

    def in_pod() -> int | None:
        out = cp.kubectl(
            "exec",
            "-n",
            ns,
            "reader",
            "--",
            "cat",
            "/etc/spacesecrets/SECRETS_METADATA",
            check=False,
        )
        return int(json.loads(out.stdout)["version"]) if out.returncode == 0 else None

    assert in_pod() == 1
    for version in (2, 3):
        space.apply({"API_HOST": f"v{version}.example.com"})
        space.wait_version(version)
        wait_for(
            f"the target at version {version}",
            lambda v=version: space.target_documents(TARGET)["SECRETS_METADATA"]["version"] == v,
            timeout=30,
        )
        written = time.monotonic()
        wait_for(f"version {version} in the pod", lambda v=version: in_pod() == v, timeout=20)
        print(f"\ntarget write to the file in the pod: {time.monotonic() - written:.2f}s")
        revision = kube.get("Secret", ns, TARGET)["metadata"]["resourceVersion"]
        pod = json.loads(cp.kubectl("get", "pod", "reader", "-n", ns, "-o", "json").stdout)
        assert pod["metadata"]["annotations"][REFRESH_ANNOTATION] == revision
    bystander = json.loads(cp.kubectl("get", "pod", "bystander", "-n", ns, "-o", "json").stdout)
    assert REFRESH_ANNOTATION not in (bystander["metadata"].get("annotations") or {})
    cp.kubectl("delete", "pod", "reader", "bystander", "-n", ns, "--wait=false")
