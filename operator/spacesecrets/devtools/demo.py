"""`make demo`: the whole product on a local control plane, narrated as a user would see it.

Edge. Uses exactly the user-facing pieces -- the `spacesecrets` CLI, kubectl, the manifests in
`examples/`, the operator process. Where the machine runs a real node, the example's Node-RED flow
runs in a pod from the image `make nodered-image` builds, and serves the value it holds; elsewhere
the kubelet-like writer and the flow-side reader stand in for the kubelet and the pod.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from spacesecrets.core.projection import decoded_documents
from spacesecrets.devtools.controlplane import _checkout_root
from spacesecrets.devtools.dev import OPERATOR_NAMESPACE, LocalCluster, wait_for
from spacesecrets.devtools.kubelet import write_projection
from spacesecrets.devtools.node import Node
from spacesecrets.flow import FlowSecrets
from spacesecrets.kube.factory import kube_for

SCALE = "0.05"  # autosync 1m runs every 3 s in the demo
# GET /api-host on the flow pod's loopback, with the image's Node.js
FETCH = (
    'fetch("http://127.0.0.1:1880/api-host").then(r => r.text()).then(t => console.log(t),'
    " e => { console.error(String(e)); process.exit(1); })"
)


def _say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def _show(result: subprocess.CompletedProcess[str]) -> None:
    print(result.stdout.rstrip(), flush=True)


class _Demo:
    def __init__(self, cluster: LocalCluster, tmp: Path, node: Node | None = None) -> None:
        self.node = node
        self.cluster, self.tmp = cluster, tmp
        self.examples = _checkout_root() / "examples" / "team-a"
        self.alice = cluster.cp.kubeconfig_for("alice@example.com")
        self.kube = kube_for(str(cluster.kubeconfig))

    def cli(self, *args: str, as_alice: bool = True, stdin: str | None = None) -> str:
        env = {**os.environ, "KUBECONFIG": str(self.alice if as_alice else self.cluster.kubeconfig)}
        out = subprocess.run(
            [sys.executable, "-m", "spacesecrets", *args],
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if out.returncode:
            raise RuntimeError(f"spacesecrets {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout.rstrip()

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        return self.cluster.cp.kubectl(*args, input=stdin).stdout.rstrip()

    def target(self) -> dict[str, Any]:
        obj = self.kube.get("Secret", "team-a", "orders-flow-secrets")
        return {k: v.encode() for k, v in decoded_documents(obj).items()}

    def mount(self) -> Path:
        """What kubelet does for the pod: write the target into the volume."""
        volume = self.tmp / "volume"
        write_projection(volume, self.target())
        return volume

    def node_red_image(self) -> None:
        """With a real node: the Node-RED image `make nodered-image` builds (cached), imported."""
        assert self.node is not None
        began = time.monotonic()
        built = subprocess.run(
            ["bash", str(_checkout_root() / "hack" / "image" / "build.sh"), "nodered"],
            env={**os.environ, "PYTHON": sys.executable},
            capture_output=True,
            text=True,
            check=True,
            timeout=1800,
        )
        self.node.import_image(Path(built.stdout.strip().splitlines()[-1]))
        print(f"Node-RED image built (or cached) and imported: {time.monotonic() - began:.1f} s")

    def flow_pod(self) -> str:
        """The name of the flow's running, Ready pod."""

        def ready() -> str | None:
            out = self.kubectl("get", "pods", "-n", "team-a", "-l", "app=orders-flow", "-o", "json")
            for pod in json.loads(out)["items"]:
                conds = (pod.get("status") or {}).get("conditions") or []
                if any(c["type"] == "Ready" and c["status"] == "True" for c in conds):
                    return str(pod["metadata"]["name"])
            return None

        return str(wait_for("the flow's pod Ready", ready, timeout=180))

    def served(self, pod: str) -> dict[str, Any] | None:
        """What the running flow answers on GET /api-host (asked on the pod's loopback)."""
        out = self.cluster.cp.kubectl(
            "exec", "-n", "team-a", pod, "-c", "node-red", "--", "node", "-e", FETCH, check=False
        )
        try:
            return dict(json.loads(out.stdout)) if out.returncode == 0 else None
        except ValueError:
            return None

    def with_node(self) -> None:
        node = self.node
        assert node is not None
        _say("5. the running Node-RED flow serves a secret from its global context")
        pod = self.flow_pod()
        first = wait_for("the flow serving", lambda: self.served(pod), timeout=60)
        print(f"pod {pod} on node {node.name}: GET /api-host -> {json.dumps(first)}")

        _say("6. the owner edits a secret; the running flow serves it, with no restart")
        changed = time.monotonic()
        print(self.cli("set", "PRODUCT_A_API_HOST", "-n", "team-a", stdin="api-v2.example.com\n"))
        now = wait_for(
            "the new value served",
            lambda: (s := self.served(pod)) and s.get("version") == 2 and s,
            timeout=120,
            interval=0.2,
        )
        print(
            f"GET /api-host -> {json.dumps(now)}, {time.monotonic() - changed:.1f} s after the "
            "set: the flow's autosync tick (1m, every 3 s here), the operator's nudge of the pod "
            f"(kubelet syncFrequency {node.sync_frequency}), the node following its volume"
        )
        restarts = self.kubectl(
            "get",
            "pod",
            pod,
            "-n",
            "team-a",
            "-o",
            "jsonpath={.status.containerStatuses[0].restartCount}",
        )
        print(f"the same pod served both, restarts: {restarts}")

    def without_node(self) -> None:
        _say("5. inside the flow's pod: SECRETS and SECRETS_METADATA, read from the volume")
        reader = FlowSecrets(self.mount(), poll_interval=0.2)
        print(f"SECRETS_METADATA.version = {reader.version}, keys = {sorted(reader)}")
        print(f"SECRETS.PRODUCT_A_API_HOST = {reader['PRODUCT_A_API_HOST']}")
        print(f"SECRETS.PRODUCT_A_CONFIG   = {json.dumps(reader['PRODUCT_A_CONFIG'])}")

        _say("6. the owner edits a secret; the flow picks it up at its next autosync tick")
        print(self.cli("set", "PRODUCT_A_API_HOST", "-n", "team-a", stdin="api-v2.example.com\n"))
        started = time.monotonic()
        wait_for("the tick", lambda: json.loads(self.target()["SECRETS_METADATA"])["version"] == 2)
        print(f"target at version 2 after {time.monotonic() - started:.1f} s")
        wait_for("the reader", lambda: self.mount() and reader.version == 2)
        print(
            f"the flow now sees version {reader.version}: PRODUCT_A_API_HOST = "
            f"{reader['PRODUCT_A_API_HOST']}"
        )
        reader.close()

    def run(self) -> int:
        op = self.cluster.start_operator(env={"SPACESECRETS_AUTOSYNC_SCALE": SCALE})
        print(
            f"control plane {self.cluster.cp.version()} on {self.cluster.cp.server}; "
            f"operator pid {op.popen.pid} (autosync 1m runs every 3 s here)"
        )

        _say("1. the operator published its public key; an owner saves it to seal offline")
        pem = wait_for("the public key", lambda: self.cli("pubkey"))
        key_file = self.tmp / "spacesecrets.pem"
        key_file.write_text(pem + "\n")
        print(pem.splitlines()[0], "...", f"(saved to {key_file.name})")

        _say("2. seal plain values into a SpaceSecrets manifest (safe to commit) and apply it")
        self.kubectl("apply", "-f", str(self.examples / "namespace.yaml"))
        sealed = self.cli(
            "seal",
            str(self.examples / "values.yaml"),
            "-n",
            "team-a",
            "--owner",
            "User:alice@example.com",
            "--cert",
            str(key_file),
            as_alice=False,
        )
        print("\n".join(line[:110] for line in sealed.splitlines()))
        print(self.kubectl("apply", "-f", "-", stdin=sealed))

        _say("3. a flow subscribes: FlowSecretSync + the Node-RED Deployment that mounts it")
        if self.node is not None:
            self.node_red_image()
        print(
            self.kubectl(
                "apply",
                "-f",
                str(self.examples / "flowsecretsync.yaml"),
                "-f",
                str(self.examples / "node-red-flow.yaml"),
            )
        )
        wait_for(
            "Synced",
            lambda: (
                "True"
                in self.kubectl(
                    "get",
                    "fss",
                    "orders-flow",
                    "-n",
                    "team-a",
                    "-o",
                    'jsonpath={.status.conditions[?(@.type=="Synced")].status}',
                )
            ),
        )
        print(self.kubectl("get", "spacesecrets,flowsecretsyncs", "-n", "team-a"))

        _say("4. the Secrets tab, as the owner sees it (never a value)")
        print(self.cli("list", "-n", "team-a"))

        if self.node is not None:
            self.with_node()
        else:
            self.without_node()

        _say("7. history (key names only) and the flows' view")
        print(self.cli("history", "-n", "team-a"))
        print(self.cli("status", "-n", "team-a"))
        print(f"\nhistory at rest: {self.kubectl('get', 'secrets', '-n', OPERATOR_NAMESPACE)}")
        _say("done: tearing everything down")
        return 0


def demo(cluster: LocalCluster, tmp: Path, node: Node | None = None) -> int:
    return _Demo(cluster, tmp, node).run()
