"""One space in one namespace, built, applied and observed as an owner would; the published key."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from spacesecrets.core import crypto
from spacesecrets.devtools.dev import OPERATOR_NAMESPACE, LocalCluster, wait_for
from spacesecrets.kube.client import Kube


def public_key(cluster: LocalCluster) -> Any:
    pem = wait_for(
        "the published public key",
        lambda: (
            cluster.cp.kubectl(
                "get",
                "configmap",
                "-n",
                OPERATOR_NAMESPACE,
                "spacesecrets-public-keys",
                "-o",
                "jsonpath={.data.current\\.pem}",
                check=False,
            ).stdout
        ),
    )
    return crypto.load_public_key_pem(pem)


class Space:
    """Helpers to build, apply and observe one space in one namespace, as an owner would."""

    def __init__(
        self,
        cluster: LocalCluster,
        kube: Kube,
        namespace: str,
        owners: list[dict[str, str]] | None = None,
    ) -> None:
        self.cluster, self.kube, self.ns = cluster, kube, namespace
        self.owners = owners or [{"kind": "User", "name": "alice@example.com"}]
        self.name = "secrets"

    @property
    def pub(self) -> Any:
        return public_key(self.cluster)

    def sealed(
        self, key: str, value: str | bytes, fmt: str = "text", namespace: str | None = None
    ) -> dict[str, str]:
        data = value.encode() if isinstance(value, str) else value
        return {
            "format": fmt,
            "sealed": crypto.seal(self.pub, namespace or self.ns, key, fmt, data),
        }

    def manifest(self, values: dict[str, Any], name: str | None = None) -> dict[str, Any]:
        data = {}
        for key, value in values.items():
            if isinstance(value, dict) and "sealed" in value:
                data[key] = value
            elif isinstance(value, str):
                data[key] = self.sealed(key, value)
            else:
                data[key] = self.sealed(key, json.dumps(value), "json")
        return {
            "apiVersion": "spacesecrets.io/v1alpha1",
            "kind": "SpaceSecrets",
            "metadata": {"name": name or self.name, "namespace": self.ns},
            "spec": {"owners": self.owners, "data": data},
        }

    def apply(
        self, values: dict[str, Any], name: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self.kubectl_apply(self.manifest(values, name), check=check)

    def kubectl_apply(
        self, doc: dict[str, Any], check: bool = True, kubeconfig: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self.cluster.cp.kubectl(
            "apply", "-f", "-", input=yaml.safe_dump(doc), check=check, kubeconfig=kubeconfig
        )

    def get(self, name: str | None = None) -> dict[str, Any]:
        return self.kube.get_custom("spacesecrets", self.ns, name or self.name)

    def condition(
        self, type_: str = "Ready", name: str | None = None, plural: str = "spacesecrets"
    ) -> dict[str, Any]:
        obj = self.kube.get_custom(plural, self.ns, name or self.name)
        for cond in (obj.get("status") or {}).get("conditions") or []:
            if cond["type"] == type_:
                return dict(cond)
        return {}

    def wait_version(self, version: int, timeout: float = 30) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            obj = self.get()
            status = obj.get("status") or {}
            ok = (
                status.get("version") == version
                and status.get("observedGeneration") == obj["metadata"]["generation"]
            )
            return obj if ok else None

        return dict(wait_for(f"{self.ns} at version {version}", reached, timeout))

    def wait_condition(
        self,
        type_: str,
        status: str,
        reason: str | None = None,
        name: str | None = None,
        plural: str = "spacesecrets",
        timeout: float = 30,
    ) -> dict[str, Any]:
        def matches() -> dict[str, Any] | None:
            cond = self.condition(type_, name, plural)
            ok = cond.get("status") == status and (reason is None or cond.get("reason") == reason)
            return cond if ok else None

        return dict(
            wait_for(
                f"{plural} {name or self.name} {type_}={status} {reason or ''}", matches, timeout
            )
        )

    def flow(self, name: str, target: str, **spec: Any) -> dict[str, Any]:
        doc = {
            "apiVersion": "spacesecrets.io/v1alpha1",
            "kind": "FlowSecretSync",
            "metadata": {"name": name, "namespace": self.ns},
            "spec": {"target": {"name": target}, **spec},
        }
        return doc

    def target_documents(self, name: str, kind: str = "Secret") -> dict[str, Any]:
        from spacesecrets.core.projection import decoded_documents

        obj = self.kube.get(kind, self.ns, name)
        return {k: json.loads(v) for k, v in decoded_documents(obj).items()}

    def events(self, reason: str | None = None) -> list[dict[str, Any]]:
        out = self.cluster.cp.kubectl("get", "events", "-n", self.ns, "-o", "json").stdout
        items = json.loads(out)["items"]
        return [e for e in items if reason is None or e["reason"] == reason]
