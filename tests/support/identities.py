"""Who acts in a test: ServiceAccount kubeconfigs, and the subjects of a space's owners binding."""

from __future__ import annotations

from pathlib import Path

from spacesecrets.core.access import OWNERS_ROLE_BINDING
from spacesecrets.devtools.dev import LocalCluster
from spacesecrets.kube import NotFound
from spacesecrets.kube.client import Kube


def sa_kubeconfig(cluster: LocalCluster, ns: str, name: str) -> Path:
    cluster.cp.kubectl("create", "serviceaccount", name, "-n", ns, check=False)
    token = cluster.cp.kubectl("create", "token", name, "-n", ns, "--duration=1h").stdout.strip()
    return cluster.cp.token_kubeconfig(f"{ns}-{name}", token)


def owners_binding_subjects(kube: Kube, ns: str) -> set[tuple[str, str]]:
    try:
        rb = kube.get_role_binding(ns, OWNERS_ROLE_BINDING)
    except NotFound:
        return set()
    return {(s["kind"], s["name"]) for s in rb.get("subjects") or []}
