"""The chart, running: `helm install` onto a real node (kubelet + containerd + runc) of a bare
private control plane, with the image `make image` builds imported into the node (no registry).

Both replicas become Ready through the chart's probes and join the ring of shards; the replica
serving a space's namespace projects its flow's target; deleting it, or killing it without a word,
lets the other serve the next change within the takeover bound the README states; `helm upgrade`
with a changed value rolls the pods while changes keep coming, and no version is lost or given
twice; `helm uninstall` removes the operator and leaves what the README says it leaves.

The control plane is bare (Helm refuses to take over objects it did not create), so this module
starts its own, with a node of its own; both go when the module ends, also when a test fails.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.images import build_image
from tests.support.node import node_binaries_or_skip
from tests.support.space import Space

from spacesecrets.devtools.controlplane import ControlPlane, find_binaries
from spacesecrets.devtools.dev import OPERATOR_NAMESPACE, LocalCluster, wait_for
from spacesecrets.devtools.node import SERVICE_IP, Node
from spacesecrets.kube.factory import kube_for

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "spacesecrets"
RELEASE = "spacesecrets"
DEPLOYMENT = "spacesecrets-operator"
SELECTOR = "app.kubernetes.io/name=spacesecrets,app.kubernetes.io/component=operator"
# The chart's shard Lease duration: a replica stopped cleanly deletes its Lease and its namespaces
# move at once; a killed one's move once its Lease has not changed for this long. The bound allows
# twice that (the last renewal, the next read of the Leases, the adoption).
LEASE_DURATION = 15
TAKEOVER_BOUND = 2 * LEASE_DURATION
SHARD_LEASE = "spacesecrets-shard-"
# The chart's values for a node with no registry and no cluster DNS: the imported image, never
# pulled; kopf's login host pointed at the `kubernetes` Service's address, which the node forwards
# to the API server; small requests.
VALUES: dict[str, Any] = {
    "image": {"pullPolicy": "Never"},
    "hostAliases": [{"ip": SERVICE_IP, "hostnames": ["kubernetes.default.svc"]}],
    "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
}

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the node and the image need root")


def helm(cluster: LocalCluster, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(cluster.cp.bin_dir / "helm"), *args, "--kubeconfig", str(cluster.kubeconfig)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


@dataclass
class Installed:
    cluster: LocalCluster
    node: Node
    values: Path
    timings: dict[str, float] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.cluster.cp.kubectl(*args, check=check)

    def pods(self) -> list[dict[str, Any]]:
        out = self.kubectl("get", "pods", "-n", OPERATOR_NAMESPACE, "-l", SELECTOR, "-o", "json")
        return list(json.loads(out.stdout)["items"])

    def ready_pods(self) -> list[dict[str, Any]]:
        return [p for p in self.pods() if _ready(p) and not p["metadata"].get("deletionTimestamp")]

    def log(self, pod: str) -> str:
        return self.kubectl("logs", "-n", OPERATOR_NAMESPACE, pod, check=False).stdout

    def log_text(self) -> str:
        """The tail of each operator pod's log and the space's Events, for a failure's report."""

        def tail(pod: str) -> str:
            lines = [line for line in self.log(pod).splitlines() if "/healthz" not in line]
            return "\n".join(lines)[-8000:]  # (the probes' requests left out)

        names = sorted(p["metadata"]["name"] for p in self.pods())
        logs = [f"--- {name}\n{tail(name)}" for name in names]
        events = self.kubectl("get", "events", "-n", "team-node", "--sort-by=.lastTimestamp",
                              check=False).stdout  # fmt: skip
        return "\n".join([*logs, "--- events in team-node", events[-4000:]])

    def members(self) -> set[str]:
        """The replicas with a shard Lease (each named after its pod)."""
        out = self.kubectl("get", "leases", "-n", OPERATOR_NAMESPACE, "-o", "json")
        names = [lease["metadata"]["name"] for lease in json.loads(out.stdout)["items"]]
        return {n.removeprefix(SHARD_LEASE) for n in names if n.startswith(SHARD_LEASE)}

    def serving(self, namespace: str) -> str:
        """The replica that serves `namespace`, as `spacesecrets status` tells a user."""

        def settled() -> str | None:
            done = subprocess.run(
                [sys.executable, "-m", "spacesecrets", "status", "-n", namespace],
                env={**os.environ, "KUBECONFIG": str(self.cluster.kubeconfig)},
                capture_output=True,
                text=True,
                check=True,
                timeout=60,
            )
            found = re.search(r"served by\s+shard (\S+) of (\d+)\s*$", done.stdout, re.M)
            return found.group(1) if found else None

        return str(wait_for(f"the shard serving {namespace}", settled, timeout=30))

    def active(self, version: int) -> str:
        """The pod whose log shows it made `version` of the (one) space."""

        def find() -> str | None:
            for pod in self.ready_pods():
                name = pod["metadata"]["name"]
                if f"version {version}:" in self.log(name):
                    return str(name)
            return None

        return str(wait_for(f"the replica that made version {version}", find, timeout=30))


def _ready(pod: dict[str, Any]) -> bool:
    conds = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    bin_dir = node_binaries_or_skip()
    began = time.monotonic()
    archive = build_image("operator")
    built = time.monotonic() - began
    cluster = LocalCluster(ControlPlane(find_binaries()))
    node = Node(cluster.cp, bin_dir, sync_frequency="1s")
    values = tmp_path_factory.mktemp("chart") / "values.yaml"
    values.write_text(yaml.safe_dump(VALUES))
    try:
        cluster.cp.start()
        started = time.monotonic()
        node.start()
        ready = time.monotonic()
        node.import_image(archive)
        imported = time.monotonic()
        inst = Installed(cluster, node, values)
        inst.timings.update(
            {
                "operator image build (cached)": built,
                "node start to Ready": ready - started,
                "operator image import": imported - ready,
            }
        )
        yield inst
        print(f"\nchart on node timings: { {k: round(v, 2) for k, v in inst.timings.items()} }")
    finally:
        try:
            node.stop()
        finally:
            cluster.stop()
        assert not cluster.cp.workdir.exists()


def test_install_both_replicas_ready_through_the_probes(installed: Installed) -> None:
    began = time.monotonic()
    helm(
        installed.cluster,
        "install", RELEASE, str(CHART),
        "--namespace", OPERATOR_NAMESPACE, "--create-namespace",
        "-f", str(installed.values),
    )  # fmt: skip
    installed.timings["helm install"] = time.monotonic() - began
    wait_for("two operator pods Ready", lambda: len(installed.ready_pods()) == 2, timeout=120)
    installed.timings["helm install to both pods Ready"] = time.monotonic() - began
    pods = installed.ready_pods()
    for pod in pods:
        [container] = pod["spec"]["containers"]
        assert container["imagePullPolicy"] == "Never"
        assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
        assert pod["spec"]["nodeName"] == installed.node.name
        # Ready is the probes' verdict: both replicas serve /healthz, the standby too
        [status] = pod["status"]["containerStatuses"]
        assert status["ready"] and status["restartCount"] == 0, status
    # two pods, two addresses: both listen on the chart's ports
    assert len({p["status"]["podIP"] for p in pods}) == 2
    # the operator runs as the image's user on a read-only root: the key ring came up
    keys = wait_for(
        "the published public key",
        lambda: installed.kubectl(
            "get", "configmap", "spacesecrets-public-keys", "-n", OPERATOR_NAMESPACE,
            "-o", "jsonpath={.data.current\\.kid}", check=False,
        ).stdout,
        timeout=60,
    )  # fmt: skip
    assert keys

    # both are active shards of one ring, each a member under its pod's name
    names = {p["metadata"]["name"] for p in pods}
    wait_for("both replicas in the ring", lambda: installed.members() == names, timeout=30)


def test_a_space_and_a_flow_are_served_by_the_operator_in_a_pod(installed: Installed) -> None:
    cluster = installed.cluster
    installed.kubectl("create", "namespace", "team-node")
    space = Space(cluster, kube_for(str(cluster.kubeconfig)), "team-node")
    began = time.monotonic()
    space.apply({"API_HOST": "api.example.com"})
    space.wait_version(1, timeout=60)
    space.kubectl_apply(space.flow("orders", "orders-secrets"))
    space.wait_condition("Synced", "True", name="orders", plural="flowsecretsyncs", timeout=60)
    installed.timings["space + flow applied to target projected"] = time.monotonic() - began
    assert space.target_documents("orders-secrets")["SECRETS"] == {"API_HOST": "api.example.com"}
    active = installed.active(1)
    installed.state.update(space=space, active=active)


def _history(space: Space) -> list[int]:
    return [h["version"] for h in (space.get().get("status") or {}).get("history") or []]


def _target_version(space: Space) -> int:
    return int(space.target_documents("orders-secrets")["SECRETS_METADATA"]["version"])


def _served_again(
    installed: Installed, stop: Callable[[], object], version: int, what: str
) -> float:
    """Stop the serving replica (`stop`), change the space at once, and wait for the change to be
    served: the seconds it took, within TAKEOVER_BOUND, recorded as `what`; the history then
    holds every version once, and both pods come back."""
    space: Space = installed.state["space"]
    stop()
    stopped = time.monotonic()
    space.apply({"API_HOST": f"api-{version}.example.com"})
    space.wait_version(version, timeout=TAKEOVER_BOUND + 15)
    took = time.monotonic() - stopped
    installed.timings[what] = took
    assert took < TAKEOVER_BOUND, f"{what}: {took:.1f}s"
    assert _history(space) == list(range(version, 0, -1))
    wait_for("two operator pods Ready again", lambda: len(installed.ready_pods()) == 2, timeout=90)
    return took


def test_deleting_the_active_pod_lets_the_other_serve_within_the_bound(
    installed: Installed,
) -> None:
    active: str = installed.state["active"]
    [standby] = [
        p["metadata"]["name"] for p in installed.ready_pods() if p["metadata"]["name"] != active
    ]
    delete = ("delete", "pod", active, "-n", OPERATOR_NAMESPACE, "--wait=false")
    took = _served_again(
        installed, lambda: installed.kubectl(*delete), 2, "active pod deleted to next change served"
    )
    # the other replica served it (the replacement pod may have joined by then: either is not
    # the deleted one)
    server = installed.active(2)
    assert server != active
    installed.state["server_after_takeover"] = server
    print(f"\ntakeover: {took:.2f}s, by {'the standby' if server == standby else 'the new pod'}")


def test_an_active_replica_killed_without_a_word_is_replaced_within_the_bound(
    installed: Installed,
) -> None:
    """SIGKILL to the container serving the space (it cannot delete its Lease): the other replica
    serves once the dead one's Lease has not changed for the lease duration."""
    space: Space = installed.state["space"]
    active = installed.serving(space.ns)
    [pod] = [p for p in installed.ready_pods() if p["metadata"]["name"] == active]
    container_id = pod["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]
    _served_again(
        installed,
        lambda: installed.node.ctr("tasks", "kill", "--signal", "SIGKILL", container_id),
        3,
        "active container SIGKILLed to next change served",
    )


def test_helm_upgrade_rolls_without_a_lost_or_doubled_version(installed: Installed) -> None:
    space: Space = installed.state["space"]
    before = {p["metadata"]["name"] for p in installed.ready_pods()}
    done: dict[str, Any] = {}

    def upgrade() -> None:
        began = time.monotonic()
        done["result"] = helm(
            installed.cluster,
            "upgrade", RELEASE, str(CHART), "--namespace", OPERATOR_NAMESPACE,
            "--reuse-values", "--set", "logFormat=json", "--wait", "--timeout", "180s",
            check=False,
        )  # fmt: skip
        done["took"] = time.monotonic() - began

    thread = threading.Thread(target=upgrade)
    thread.start()
    # changes keep coming while the pods roll: each one is a version, made exactly once
    applied = []
    start = space.get()["status"]["version"]
    value = start
    while thread.is_alive() or len(applied) < 2:
        value += 1
        space.apply({"API_HOST": f"api{value}.example.com"})
        applied.append(value)
        time.sleep(3)
    thread.join()
    assert done["result"].returncode == 0, done["result"].stderr
    installed.timings["helm upgrade --wait (rolling 2 pods)"] = done["took"]

    # every change reconciled (the last spec observed); one made while its namespace moved
    # between replicas may be folded into the next version, but none is lost or made twice
    def settled() -> dict[str, Any] | None:
        body = space.get()
        status = body.get("status") or {}
        return (
            status if status.get("observedGeneration") == body["metadata"]["generation"] else None
        )

    status = wait_for("the last change reconciled", settled, timeout=TAKEOVER_BOUND + 15)
    final = int(status["version"])
    assert start < final <= start + len(applied), (start, final, applied)
    # the flow (autosync 1m) is brought to the current version at its next tick
    wait_for(f"the target at version {final}", lambda: _target_version(space) == final, timeout=75)
    assert space.target_documents("orders-secrets")["SECRETS"] == {
        "API_HOST": f"api{applied[-1]}.example.com"
    }
    assert _history(space) == list(range(final, 0, -1))
    wait_for("two new operator pods Ready", lambda: len(installed.ready_pods()) == 2, timeout=90)
    after = installed.ready_pods()
    assert not before & {p["metadata"]["name"] for p in after}, "every pod was replaced"
    for pod in after:
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        assert env["SPACESECRETS_LOG_FORMAT"] == "json"
    history = json.loads(
        helm(installed.cluster, "history", RELEASE, "-n", OPERATOR_NAMESPACE, "-o", "json").stdout
    )
    assert [(h["revision"], h["status"]) for h in history] == [(1, "superseded"), (2, "deployed")]


def test_helm_uninstall_leaves_what_the_readme_says(installed: Installed) -> None:
    space: Space = installed.state["space"]
    helm(installed.cluster, "uninstall", RELEASE, "-n", OPERATOR_NAMESPACE, "--wait")
    wait_for("the operator pods gone", lambda: not installed.pods(), timeout=90)
    kubectl = installed.kubectl
    assert kubectl(
        "get", "deployment", DEPLOYMENT, "-n", OPERATOR_NAMESPACE, check=False
    ).returncode
    # what stays (README, "In a real cluster"): the CRDs and so every space and flow, the
    # targets flows mount, the operator's namespace with its key ring, the public keys and the
    # spaces' encrypted history
    for crd in ("spacesecrets.spacesecrets.io", "flowsecretsyncs.spacesecrets.io"):
        kubectl("get", "crd", crd)
    assert space.get()["status"]["version"] >= 2
    assert space.target_documents("orders-secrets")["SECRETS"]["API_HOST"]
    kubectl("get", "namespace", OPERATOR_NAMESPACE)
    kubectl("get", "configmap", "spacesecrets-public-keys", "-n", OPERATOR_NAMESPACE)
    secrets = json.loads(kubectl("get", "secrets", "-n", OPERATOR_NAMESPACE, "-o", "json").stdout)[
        "items"
    ]
    names = sorted(s["metadata"]["name"] for s in secrets)
    print(f"\nleft in {OPERATOR_NAMESPACE} after uninstall: secrets {names}")
    assert f"history-{space.ns}" in names
    # gone: every object of the release, namespaced and cluster-wide
    release = f"app.kubernetes.io/instance={RELEASE}"
    namespaced = kubectl(
        "get", "deployment,replicaset,pod,service,poddisruptionbudget,serviceaccount,role,"
        "rolebinding,configmap", "-n", OPERATOR_NAMESPACE, "-l", release, "-o", "name",
    ).stdout.split()  # fmt: skip
    cluster_wide = kubectl(
        "get", "clusterrole,clusterrolebinding,validatingadmissionpolicy,"
        "validatingadmissionpolicybinding,mutatingadmissionpolicy,mutatingadmissionpolicybinding",
        "-l", release, "-o", "name",
    ).stdout.split()  # fmt: skip
    assert (namespaced, cluster_wide) == ([], [])
    assert kubectl("get", "clusterrole", "spacesecrets-owner", check=False).returncode != 0
