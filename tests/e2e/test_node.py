"""A real node: kubelet + containerd + runc in namespaces of their own, on the local control plane.

The node registers and becomes Ready; a pod (scheduled by the real kube-scheduler) runs the
busybox test image, mounts a Secret, answers `kubectl logs` and `kubectl exec` through the API
server, and sees a change to the Secret in its volume within the kubelet's sync period; stopping a
node leaves no process, mount, network namespace or cgroup behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

import yaml

from spacesecrets.devtools import oci
from spacesecrets.devtools.controlplane import ControlPlane
from spacesecrets.devtools.dev import LocalCluster, wait_for
from spacesecrets.devtools.node import NODE_NAME, Node

SECRET_PATH = "/etc/app-secret/token"


def pod_manifest(
    namespace: str, name: str, secret: str, *, node_name: str | None = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "hostNetwork": True,
        "terminationGracePeriodSeconds": 1,
        "containers": [
            {
                "name": "app",
                "image": oci.BUSYBOX_IMAGE,
                "imagePullPolicy": "Never",
                "command": ["sh", "-c", f"echo started; cat {SECRET_PATH}; echo; exec sleep 3600"],
                "volumeMounts": [
                    {"name": "secret", "mountPath": "/etc/app-secret", "readOnly": True}
                ],
            }
        ],
        "volumes": [{"name": "secret", "secret": {"secretName": secret}}],
    }
    if node_name:
        spec["nodeName"] = node_name
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def secret_manifest(namespace: str, name: str, token: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "stringData": {"token": token},
    }


def apply(cp: ControlPlane, *docs: dict[str, Any]) -> None:
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))


def pod_ready(cp: ControlPlane, namespace: str, name: str) -> dict[str, Any] | None:
    pod = json.loads(cp.kubectl("get", "pod", name, "-n", namespace, "-o", "json").stdout)
    conds = (pod.get("status") or {}).get("conditions") or []
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conds)
    return pod if ready else None


def start_pod(
    cp: ControlPlane, namespace: str, name: str, secret: str, **kw: Any
) -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    apply(cp, pod_manifest(namespace, name, secret, **kw))
    pod = wait_for(f"pod {name} Ready", lambda: pod_ready(cp, namespace, name), timeout=60)
    return pod, time.monotonic() - started


def test_node_registers_and_is_ready(cluster: LocalCluster, node: Node) -> None:
    obj = node.node_object()
    assert obj is not None
    info = obj["status"]["nodeInfo"]
    assert info["kubeletVersion"] == cluster.cp.version()
    assert info["containerRuntimeVersion"].startswith("containerd://2.")
    assert {"type": "InternalIP", "address": NODE_NAME} in obj["status"]["addresses"]
    assert node.ready()
    print(f"\nnode timings: { {k: round(v, 2) for k, v in node.timings.items()} }")


def test_pod_mounts_secret_serves_logs_and_exec_and_sees_updates(
    cluster: LocalCluster, node: Node, ns: str
) -> None:
    cp = cluster.cp
    apply(cp, secret_manifest(ns, "app-secret", "first"))
    pod, took = start_pod(cp, ns, "app", "app-secret")
    print(f"\npod created to Ready: {took:.2f}s")
    assert pod["spec"]["nodeName"] == NODE_NAME  # placed by the kube-scheduler

    logs = wait_for("the pod's log", lambda: cp.kubectl("logs", "-n", ns, "app").stdout)
    assert "started" in logs
    assert "first" in logs

    out = cp.kubectl("exec", "-n", ns, "app", "--", "cat", SECRET_PATH).stdout
    assert out == "first"
    # the volume is kubelet's real layout: the ..data symlink swapped on each update
    link = cp.kubectl("exec", "-n", ns, "app", "--", "readlink", "/etc/app-secret/..data").stdout
    assert link.startswith("..20")

    # at the kubelet's default resync (1m) the volume follows a Secret update when the kubelet
    # next syncs the pod; a change of the pod object makes it sync at once (what the operator's
    # nudge after a target update relies on, engine.pods)
    changed = time.monotonic()
    apply(cp, secret_manifest(ns, "app-secret", "second"))
    cp.kubectl("annotate", "pod", "app", "-n", ns, "example.com/nudge=1")

    def updated() -> bool:
        return (
            cp.kubectl("exec", "-n", ns, "app", "--", "cat", SECRET_PATH, check=False).stdout
            == "second"
        )

    wait_for("the Secret's update in the pod's volume", updated, timeout=20, interval=0.1)
    took = time.monotonic() - changed
    print(
        f"Secret update + pod nudge to the pod's file at syncFrequency {node.sync_frequency}: "
        f"{took:.2f}s"
    )


def test_pod_pinned_with_node_name_runs_without_the_scheduler(
    cluster: LocalCluster, node: Node, ns: str
) -> None:
    apply(cluster.cp, secret_manifest(ns, "s", "pinned"))
    _, took = start_pod(cluster.cp, ns, "pinned", "s", node_name=NODE_NAME)
    assert cluster.cp.kubectl("logs", "-n", ns, "pinned").stdout.splitlines()[1] == "pinned"
    print(f"\npod with spec.nodeName created to Ready: {took:.2f}s")


def _host_mounts() -> str:
    return Path("/proc/self/mountinfo").read_text()


def test_stopping_a_node_leaves_nothing_behind(node: Node, cluster: LocalCluster) -> None:
    """A second, private node with a running pod: after stop() no trace of it remains (the
    session's node keeps running alongside, so every check is by this node's own identity)."""
    cp = ControlPlane(cluster.cp.bin_dir)
    cp.start()
    try:
        private = Node(cp, node.bin_dir, sync_frequency="10s", scheduler=False)
        private.start()
        ns_ids = dict(private._ns)
        cgroups = private.cgroup_dirs()
        workdir = private.workdir
        try:
            cp.kubectl("create", "namespace", "t")
            apply(cp, secret_manifest("t", "s", "x"))
            start_pod(cp, "t", "p", "s", node_name=NODE_NAME)
            daemons = {n: d.popen.pid for n, d in private._daemons.items()}
            assert private._namespace_pids(), "the node runs processes in its namespaces"
            assert cgroups, "the node made its cgroup root"
        finally:
            stop_started = time.monotonic()
            private.stop()
            print(f"\nnode stop: {time.monotonic() - stop_started:.2f}s")
        assert private.leftovers() == []
        for name, pid in daemons.items():
            assert not Path(f"/proc/{pid}").exists(), f"{name} ({pid}) still runs"
        for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
            for kind, ino in ns_ids.items():
                with contextlib.suppress(OSError):  # gone, or not ours to inspect
                    assert os.stat(f"/proc/{pid}/ns/{kind}").st_ino != ino, (
                        f"{pid} is in the node's {kind} ns"
                    )
        assert str(workdir) not in _host_mounts()
        assert not workdir.exists()
        assert not any(c.exists() for c in cgroups)
    finally:
        cp.stop()
