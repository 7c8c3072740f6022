"""Cluster-scoped manifests shipped with the CRDs: the owner and viewer ClusterRoles, the operator's
least-privilege RBAC, and the ValidatingAdmissionPolicy that enforces owners in the API server.

Pure core. `crdgen` writes them to `crds/` and the chart renders the same builders' output, so the
repo, the chart and the tests share one definition.
"""

from __future__ import annotations

from typing import Any

from spacesecrets import GROUP
from spacesecrets.access import OWNER_CLUSTER_ROLE, VIEWER_CLUSTER_ROLE

OPERATOR_ROLE = "spacesecrets-operator"
PUBLIC_KEYS_READER = "spacesecrets-public-keys-reader"
POLICY_SPACES = "spacesecrets-owners-spaces"
POLICY_FLOWS = "spacesecrets-owners-flows"
_LABELS = {"app.kubernetes.io/part-of": "spacesecrets"}
_KINDS = ["spacesecrets", "flowsecretsyncs"]


def _rule(groups: list[str], resources: list[str], verbs: list[str],
          names: list[str] | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"apiGroups": groups, "resources": resources, "verbs": verbs}
    if names:
        rule["resourceNames"] = names
    return rule


def _cluster_role(name: str, rules: list[dict[str, Any]],
                  labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": {**_LABELS, **(labels or {})}},
        "rules": rules,
    }


def owner_role() -> dict[str, Any]:
    """What the owners of a space may do in its namespace (bound by the operator)."""
    return _cluster_role(OWNER_CLUSTER_ROLE, [
        _rule([GROUP], _KINDS, ["get", "list", "watch", "create", "update", "patch", "delete"]),
    ])


def viewer_role() -> dict[str, Any]:
    """Read both kinds (ciphertext and metadata only); aggregated into view, edit and admin."""
    aggregate = {
        "rbac.authorization.k8s.io/aggregate-to-view": "true",
        "rbac.authorization.k8s.io/aggregate-to-edit": "true",
        "rbac.authorization.k8s.io/aggregate-to-admin": "true",
    }
    return _cluster_role(VIEWER_CLUSTER_ROLE, [
        _rule([GROUP], _KINDS, ["get", "list", "watch"]),
    ], aggregate)


def operator_rules() -> list[dict[str, Any]]:
    """The operator's cluster-wide permissions: named verbs, no wildcards."""
    return [
        _rule([GROUP], _KINDS, ["get", "list", "watch", "patch", "update"]),
        _rule([GROUP], [f"{k}/status" for k in _KINDS], ["get", "patch", "update"]),
        # flow targets, in the FlowSecretSync's own namespace (no delete: garbage collection does it)
        _rule([""], ["secrets", "configmaps"], ["get", "list", "watch", "create", "update"]),
        _rule([""], ["events"], ["create", "patch"]),
        _rule(["events.k8s.io"], ["events"], ["create", "patch"]),
        _rule(["rbac.authorization.k8s.io"], ["rolebindings"], ["get", "create", "update"]),
        # may bind exactly the owner role, nothing more
        _rule(["rbac.authorization.k8s.io"], ["clusterroles"], ["bind"], [OWNER_CLUSTER_ROLE]),
        _rule(["apps"], ["deployments", "statefulsets"], ["get", "list", "watch"]),
        _rule(["apiextensions.k8s.io"], ["customresourcedefinitions"], ["list", "watch"]),
        _rule([""], ["namespaces"], ["list", "watch"]),
        _rule(["kopf.dev"], ["clusterkopfpeerings"], ["get", "list", "watch", "patch"]),
    ]


def operator_namespace_rules() -> list[dict[str, Any]]:
    """Extra permissions in the operator's own namespace: key ring and history housekeeping."""
    return [_rule([""], ["secrets"], ["delete"])]


def operator_role() -> dict[str, Any]:
    return _cluster_role(OPERATOR_ROLE, operator_rules())


def _exempt(operator_namespace: str, service_account: str) -> str:
    """CEL: requests the policies do not judge (cluster admins, the operator, the control plane's
    own controllers -- e.g. the namespace controller deleting a namespace)."""
    sa = f"system:serviceaccount:{operator_namespace}:{service_account}"
    return (
        "!(has(request.userInfo.groups) && request.userInfo.groups.exists(g, "
        "g == 'system:masters' || g == 'system:serviceaccounts:kube-system')) && "
        f"request.userInfo.username != '{sa}' && "
        "request.userInfo.username != 'system:kube-controller-manager'"
    )


_IS_OWNER = (
    "variables.owners.exists(o, "
    "(o.kind == 'User' && o.name == request.userInfo.username) || "
    "(o.kind == 'Group' && has(request.userInfo.groups) && "
    "request.userInfo.groups.exists(g, g == o.name)) || "
    "(o.kind == 'ServiceAccount' && request.userInfo.username == "
    "'system:serviceaccount:' + request.namespace + ':' + o.name))"
)
_OWNER_LIST = "variables.owners.map(o, o.kind + ' ' + o.name).join(', ')"


def _policy(name: str, resources: list[str], operations: list[str], owners: str,
            operator_namespace: str, service_account: str,
            param_kind: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "failurePolicy": "Fail",
        "matchConstraints": {"resourceRules": [{
            "apiGroups": [GROUP], "apiVersions": ["*"], "operations": operations,
            "resources": resources,
        }]},
        "matchConditions": [{"name": "not-exempt",
                             "expression": _exempt(operator_namespace, service_account)}],
        "variables": [{"name": "owners", "expression": owners}],
        "validations": [{
            "expression": _IS_OWNER,
            "messageExpression": (
                "'only owners of space ' + request.namespace + ' (' + " + _OWNER_LIST
                + " + ') may ' + request.operation.lowerAscii() + ' "
                + ("FlowSecretSyncs" if param_kind else "its SpaceSecrets")
                + "; ' + request.userInfo.username + ' is not one'"
            ),
            "reason": "Forbidden",
        }],
    }
    if param_kind:
        spec["paramKind"] = {"apiVersion": f"{GROUP}/v1alpha1", "kind": "SpaceSecrets"}
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name, "labels": dict(_LABELS)},
        "spec": spec,
    }


def admission_policies(
    operator_namespace: str = "spacesecrets-system",
    service_account: str = "spacesecrets-operator",
) -> list[dict[str, Any]]:
    """Owners are enforced inside the API server: no webhook to be down."""
    spaces = _policy(POLICY_SPACES, ["spacesecrets"], ["UPDATE", "DELETE"],
                     "oldObject.spec.owners", operator_namespace, service_account, False)
    # subresources (status) are the operator's; the policy guards the object itself
    spaces["spec"]["matchConditions"].append(
        {"name": "main-resource", "expression": "request.subResource == ''"})
    flows = _policy(POLICY_FLOWS, ["flowsecretsyncs"], ["CREATE", "UPDATE", "DELETE"],
                    "params.spec.owners", operator_namespace, service_account, True)
    flows["spec"]["matchConditions"].append(
        {"name": "main-resource", "expression": "request.subResource == ''"})
    bindings = [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": POLICY_SPACES, "labels": dict(_LABELS)},
            "spec": {"policyName": POLICY_SPACES, "validationActions": ["Deny"]},
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": POLICY_FLOWS, "labels": dict(_LABELS)},
            "spec": {
                "policyName": POLICY_FLOWS,
                "validationActions": ["Deny"],
                # the namespace's own SpaceSecrets are the parameters: its owners decide
                "paramRef": {"selector": {}, "parameterNotFoundAction": "Deny"},
            },
        },
    ]
    return [spaces, flows, *bindings]
