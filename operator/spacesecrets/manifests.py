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
POLICY_NEW_SPACES = "spacesecrets-owners-new-spaces"
POLICY_FLOWS = "spacesecrets-owners-flows"
POLICY_STATUS = "spacesecrets-status"
_LABELS = {"app.kubernetes.io/part-of": "spacesecrets"}
_KINDS = ["spacesecrets", "flowsecretsyncs"]


def _rule(
    groups: list[str], resources: list[str], verbs: list[str], names: list[str] | None = None
) -> dict[str, Any]:
    rule: dict[str, Any] = {"apiGroups": groups, "resources": resources, "verbs": verbs}
    if names:
        rule["resourceNames"] = names
    return rule


def _cluster_role(
    name: str, rules: list[dict[str, Any]], labels: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": {**_LABELS, **(labels or {})}},
        "rules": rules,
    }


def owner_role() -> dict[str, Any]:
    """What the owners of a space may do in its namespace (bound by the operator)."""
    return _cluster_role(
        OWNER_CLUSTER_ROLE,
        [
            _rule([GROUP], _KINDS, ["get", "list", "watch", "create", "update", "patch", "delete"]),
        ],
    )


def viewer_role() -> dict[str, Any]:
    """Read both kinds (ciphertext and metadata only); aggregated into view, edit and admin."""
    aggregate = {
        "rbac.authorization.k8s.io/aggregate-to-view": "true",
        "rbac.authorization.k8s.io/aggregate-to-edit": "true",
        "rbac.authorization.k8s.io/aggregate-to-admin": "true",
    }
    return _cluster_role(
        VIEWER_CLUSTER_ROLE,
        [
            _rule([GROUP], _KINDS, ["get", "list", "watch"]),
        ],
        aggregate,
    )


def operator_rules() -> list[dict[str, Any]]:
    """The operator's cluster-wide permissions: named verbs, no wildcards."""
    return [
        _rule([GROUP], _KINDS, ["get", "list", "watch", "patch", "update"]),
        _rule([GROUP], [f"{k}/status" for k in _KINDS], ["get", "patch", "update"]),
        # flow targets, in the FlowSecretSync's own namespace (no delete: garbage collection
        # does it)
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


def operator_identity(namespace: str, service_account: str) -> list[dict[str, Any]]:
    """The operator's ServiceAccount with exactly its least-privilege roles bound (what the chart
    installs; the tests run the operator as this identity)."""
    subject = [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}]
    rbac = "rbac.authorization.k8s.io"
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": service_account, "namespace": namespace, "labels": dict(_LABELS)},
        },
        operator_role(),
        {
            "apiVersion": f"{rbac}/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": OPERATOR_ROLE, "labels": dict(_LABELS)},
            "roleRef": {"apiGroup": rbac, "kind": "ClusterRole", "name": OPERATOR_ROLE},
            "subjects": subject,
        },
        {
            "apiVersion": f"{rbac}/v1",
            "kind": "Role",
            "metadata": {"name": OPERATOR_ROLE, "namespace": namespace, "labels": dict(_LABELS)},
            "rules": operator_namespace_rules(),
        },
        {
            "apiVersion": f"{rbac}/v1",
            "kind": "RoleBinding",
            "metadata": {"name": OPERATOR_ROLE, "namespace": namespace, "labels": dict(_LABELS)},
            "roleRef": {"apiGroup": rbac, "kind": "Role", "name": OPERATOR_ROLE},
            "subjects": subject,
        },
    ]


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
_NOT_ONE = "'; ' + request.userInfo.username + ' is not one'"


def _rules(resources: list[str], operations: list[str]) -> dict[str, Any]:
    # Admission rules name subresources explicitly ("spacesecrets/status"), so a rule for
    # "spacesecrets" never matches a status write and vice versa.
    return {
        "resourceRules": [
            {
                "apiGroups": [GROUP],
                "apiVersions": ["*"],
                "operations": operations,
                "resources": resources,
            }
        ]
    }


def _policy(
    name: str,
    match: dict[str, Any],
    operator_namespace: str,
    service_account: str,
    *,
    validation: dict[str, str],
    owners: str | None = None,
    param_kind: bool = False,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "failurePolicy": "Fail",
        "matchConstraints": match,
        "matchConditions": [
            {"name": "not-exempt", "expression": _exempt(operator_namespace, service_account)}
        ],
        "validations": [{**validation, "reason": "Forbidden"}],
    }
    if owners:
        spec["variables"] = [{"name": "owners", "expression": owners}]
    if param_kind:
        # the namespace's own SpaceSecrets are the parameters: its owners decide
        spec["paramKind"] = {"apiVersion": f"{GROUP}/v1alpha1", "kind": "SpaceSecrets"}
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name, "labels": dict(_LABELS)},
        "spec": spec,
    }


def _binding(name: str, parameter_not_found: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"policyName": name, "validationActions": ["Deny"]}
    if parameter_not_found:
        # no namespace: a namespaced paramKind is looked up in the request's namespace
        spec["paramRef"] = {"selector": {}, "parameterNotFoundAction": parameter_not_found}
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name, "labels": dict(_LABELS)},
        "spec": spec,
    }


def admission_policies(
    operator_namespace: str = "spacesecrets-system",
    service_account: str = "spacesecrets-operator",
) -> list[dict[str, Any]]:
    """Owners are enforced inside the API server: no webhook to be down, no operator needed.

    - spaces: update/delete of a SpaceSecrets only by the owners it lists now (`oldObject`, read
      from storage, so an owner removed is out at once).
    - new spaces: the first SpaceSecrets of a namespace may be created by whoever RBAC allows; a
      further one only by the owners of those already there (otherwise a second, ignored store
      would make its creator an owner of the namespace's flows).
    - flows: create/update/delete of a FlowSecretSync only by the owners of the namespace's
      SpaceSecrets (the policy's parameters, from the API server's cache). With no SpaceSecrets
      there are no owners and no secrets to protect: RBAC alone decides (the operator reports
      such a flow `SpaceMissing`).
    - status: only the operator writes the status of either kind (a wildcard role would
      otherwise let anyone forge `Synced` or versions).
    """

    def owners_message(what: str) -> str:
        return (
            "'only owners of space ' + request.namespace + ' (' + "
            + _OWNER_LIST
            + " + ') may ' + request.operation.lowerAscii() + ' "
            + what
            + "' + "
            + _NOT_ONE
        )

    spaces = _policy(
        POLICY_SPACES,
        _rules(["spacesecrets"], ["UPDATE", "DELETE"]),
        operator_namespace,
        service_account,
        validation={
            "expression": _IS_OWNER,
            "messageExpression": owners_message("its SpaceSecrets ' + request.name + '"),
        },
        owners="oldObject.spec.owners",
    )
    new_spaces = _policy(
        POLICY_NEW_SPACES,
        _rules(["spacesecrets"], ["CREATE"]),
        operator_namespace,
        service_account,
        validation={
            "expression": _IS_OWNER,
            "messageExpression": (
                "'namespace ' + request.namespace + ' already has the SpaceSecrets ' + "
                "params.metadata.name + '; only owners of space ' + request.namespace + ' (' + "
                + _OWNER_LIST
                + " + ') may create another' + "
                + _NOT_ONE
            ),
        },
        owners="params.spec.owners",
        param_kind=True,
    )
    flows = _policy(
        POLICY_FLOWS,
        _rules(["flowsecretsyncs"], ["CREATE", "UPDATE", "DELETE"]),
        operator_namespace,
        service_account,
        validation={
            "expression": _IS_OWNER,
            "messageExpression": owners_message("FlowSecretSyncs"),
        },
        owners="params.spec.owners",
        param_kind=True,
    )
    status = _policy(
        POLICY_STATUS,
        _rules(["spacesecrets/status", "flowsecretsyncs/status"], ["CREATE", "UPDATE"]),
        operator_namespace,
        service_account,
        validation={
            "expression": "false",
            "messageExpression": (
                "'only the spacesecrets operator writes the status of ' + request.resource.resource"
                " + '; ' + request.userInfo.username + ' may not'"
            ),
        },
    )
    return [
        spaces,
        new_spaces,
        flows,
        status,
        _binding(POLICY_SPACES),
        _binding(POLICY_NEW_SPACES, "Allow"),
        # With no SpaceSecrets there are no owners and nothing to protect. Parameters are
        # resolved before matchConditions, so "Deny" here would refuse even the operator and the
        # namespace controller (a namespace whose space went first could never be deleted), and
        # a GitOps apply of a space with its flows would race the API server's parameter cache.
        _binding(POLICY_FLOWS, "Allow"),
        _binding(POLICY_STATUS),
    ]
