"""Who may manage a space: the owners' RoleBinding, built from `spec.owners`.

Pure core. The operator binds exactly the ClusterRole `spacesecrets-owner` -- never anything more --
to the subjects listed as owners, in the space's own namespace.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from spacesecrets import MANAGED_BY

OWNER_CLUSTER_ROLE = "spacesecrets-owner"
VIEWER_CLUSTER_ROLE = "spacesecrets-viewer"
OWNERS_ROLE_BINDING = "spacesecrets-owners"


def subjects(namespace: str, owners: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for owner in owners:
        kind, name = str(owner["kind"]), str(owner["name"])
        if kind == "ServiceAccount":
            out.append({"kind": kind, "name": name, "namespace": namespace})
        else:
            out.append({"kind": kind, "name": name, "apiGroup": "rbac.authorization.k8s.io"})
    return out


def desired_role_binding(
    namespace: str, owners: Sequence[Mapping[str, Any]], space_name: str, space_uid: str
) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {
            "name": OWNERS_ROLE_BINDING,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": MANAGED_BY},
            "ownerReferences": [
                {
                    "apiVersion": "spacesecrets.io/v1alpha1",
                    "kind": "SpaceSecrets",
                    "name": space_name,
                    "uid": space_uid,
                    "controller": True,
                    "blockOwnerDeletion": False,
                }
            ],
        },
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": OWNER_CLUSTER_ROLE,
        },
        "subjects": subjects(namespace, owners),
    }


def normalized(items: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, str]]:
    """Subjects as comparable tuples, order-independent."""
    return sorted((s["kind"], s["name"], s.get("namespace", "")) for s in items)


def role_binding_current(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Whether an existing binding grants exactly what the owners should have: the same subjects
    and the whole roleRef (apiGroup, kind and name), and is still marked as ours."""
    return bool(
        normalized(existing.get("subjects") or []) == normalized(desired["subjects"])
        and dict(existing.get("roleRef") or {}) == desired["roleRef"]
        and managed(existing)
    )


def managed(existing: Mapping[str, Any]) -> bool:
    """Whether spacesecrets made this RoleBinding (its mark): one it did not make is never
    overwritten."""
    labels = (existing.get("metadata") or {}).get("labels") or {}
    return bool(labels.get("app.kubernetes.io/managed-by") == MANAGED_BY)


def not_managed_message(namespace: str) -> str:
    return (
        f"RoleBinding {OWNERS_ROLE_BINDING} in namespace {namespace} exists and was not created "
        "by spacesecrets; it is left untouched, so the owners get no role from spacesecrets: "
        "delete it to let the operator bind the owners"
    )
