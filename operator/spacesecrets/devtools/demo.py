"""`make demo`: the whole product on a local control plane, narrated as a user would see it.

Edge. Uses exactly the user-facing pieces -- the `spacesecrets` CLI, kubectl, the manifests in
`examples/`, the operator process -- plus the kubelet-like writer and the flow-side reader in place
of a kubelet and a pod (the local control plane has no nodes).
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
from spacesecrets.devtools import oci
from spacesecrets.devtools.controlplane import _checkout_root
from spacesecrets.devtools.dev import OPERATOR_NAMESPACE, LocalCluster, wait_for
from spacesecrets.devtools.kubelet import write_projection
from spacesecrets.devtools.node import Node
from spacesecrets.flow import FlowSecrets
from spacesecrets.kube.factory import kube_for

SCALE = "0.05"  # autosync 1m runs every 3 s in the demo


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

    def start_pod(self) -> None:
        """With a real node: a pod mounts the target Secret, as the flow's pod would."""
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "volume-reader", "namespace": "team-a"},
            "spec": {
                "hostNetwork": True,
                "terminationGracePeriodSeconds": 1,
                "containers": [
                    {
                        "name": "reader",
                        "image": oci.BUSYBOX_IMAGE,
                        "imagePullPolicy": "Never",
                        "command": ["sleep", "3600"],
                        "volumeMounts": [{"name": "secrets", "mountPath": "/etc/spacesecrets"}],
                    }
                ],
                "volumes": [{"name": "secrets", "secret": {"secretName": "orders-flow-secrets"}}],
            },
        }
        self.kubectl("apply", "-f", "-", stdin=json.dumps(pod))
        self.kubectl("wait", "--for=condition=Ready", "pod/volume-reader", "-n", "team-a")
        print(f"\na real pod on node {self.node.name if self.node else '?'} mounts the target:")
        print(
            self.kubectl("exec", "-n", "team-a", "volume-reader", "--", "ls", "/etc/spacesecrets")
        )
        print(f"its SECRETS_METADATA.version = {self.pod_version()}")

    def pod_version(self) -> int:
        text = self.kubectl(
            "exec",
            "-n",
            "team-a",
            "volume-reader",
            "--",
            "cat",
            "/etc/spacesecrets/SECRETS_METADATA",
        )
        return int(json.loads(text)["version"])

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

        _say("5. inside the flow's pod: SECRETS and SECRETS_METADATA, read from the volume")
        reader = FlowSecrets(self.mount(), poll_interval=0.2)
        print(f"SECRETS_METADATA.version = {reader.version}, keys = {sorted(reader)}")
        print(f"SECRETS.PRODUCT_A_API_HOST = {reader['PRODUCT_A_API_HOST']}")
        print(f"SECRETS.PRODUCT_A_CONFIG   = {json.dumps(reader['PRODUCT_A_CONFIG'])}")
        if self.node is not None:
            self.start_pod()

        _say("6. the owner edits a secret; the flow picks it up at its next autosync tick")
        print(self.cli("set", "PRODUCT_A_API_HOST", "-n", "team-a", stdin="api-v2.example.com\n"))
        wait_for(
            "version 2",
            lambda: (
                '"version":2'
                in self.kubectl(
                    "get", "spsec", "secrets", "-n", "team-a", "-o", "jsonpath={.status}"
                ).replace(" ", "")
            ),
        )
        started = time.monotonic()
        wait_for("the tick", lambda: json.loads(self.target()["SECRETS_METADATA"])["version"] == 2)
        print(f"target at version 2 after {time.monotonic() - started:.1f} s")
        changed = wait_for("the reader", lambda: self.mount() and reader.version == 2)
        print(
            f"flow now sees version {reader.version}: PRODUCT_A_API_HOST = "
            f"{reader['PRODUCT_A_API_HOST']} ({bool(changed)})"
        )
        reader.close()
        if self.node is not None:
            started = time.monotonic()
            wait_for("the pod's volume at version 2", lambda: self.pod_version() == 2, 90)
            print(
                f"the pod on node {self.node.name} reads version 2 from its real Secret volume "
                f"{time.monotonic() - started:.1f} s later (kubelet syncFrequency "
                f"{self.node.sync_frequency})"
            )

        _say("7. history (key names only) and the flows' view")
        print(self.cli("history", "-n", "team-a"))
        print(self.cli("status", "-n", "team-a"))
        print(f"\nhistory at rest: {self.kubectl('get', 'secrets', '-n', OPERATOR_NAMESPACE)}")
        _say("done: tearing everything down")
        return 0


def demo(cluster: LocalCluster, tmp: Path, node: Node | None = None) -> int:
    return _Demo(cluster, tmp, node).run()
