"""Manifests tests apply: a SpaceSecrets, a FlowSecretSync, a ClusterRole over all our kinds."""

from __future__ import annotations

from typing import Any

GROUP, VERSION = "spacesecrets.io", "v1alpha1"
WILDCARD_ROLE = "owners-test-wildcard"


def space_doc(ns: str, name: str, owners: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SpaceSecrets",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"owners": owners, "data": {}},
    }


def flow_doc(ns: str, name: str, target: str, kind: str = "Secret") -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "FlowSecretSync",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"target": {"kind": kind, "name": target}},
    }


def wildcard_role() -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": WILDCARD_ROLE},
        "rules": [{"apiGroups": [GROUP], "resources": ["*"], "verbs": ["*"]}],
    }
