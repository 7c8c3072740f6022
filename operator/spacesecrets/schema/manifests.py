"""Cluster-scoped manifests shipped with the CRDs: the owner and viewer ClusterRoles, the operator's
least-privilege RBAC, and the ValidatingAdmissionPolicy that enforces owners in the API server.

Pure core. `crdgen` writes them to `crds/` and the chart renders the same builders' output, so the
repo, the chart and the tests share one definition.
"""

from __future__ import annotations

from typing import Any

from spacesecrets import GROUP, MANAGED_BY
from spacesecrets.core.access import OWNER_CLUSTER_ROLE, OWNERS_ROLE_BINDING, VIEWER_CLUSTER_ROLE
from spacesecrets.core.provenance import APPROVE, AUTHORIZED_BY, CLUSTER_ADMINS, CREATED_BY
from spacesecrets.names import REFRESH_ANNOTATION

OPERATOR_ROLE = "spacesecrets-operator"
PUBLIC_KEYS_READER = "spacesecrets-public-keys-reader"
POLICY_SPACES = "spacesecrets-owners-spaces"
POLICY_NEW_SPACES = "spacesecrets-owners-new-spaces"
POLICY_FLOWS = "spacesecrets-owners-flows"
POLICY_STATUS = "spacesecrets-status"
POLICY_OWNERS_BINDING = "spacesecrets-owners-binding"
POLICY_OPERATOR_NAMESPACE = "spacesecrets-operator-namespace"
POLICY_PROVENANCE = "spacesecrets-provenance"
POLICY_POD_REFRESH = "spacesecrets-pod-refresh"
STAMP_PROVENANCE = "spacesecrets-stamp-provenance"
SHARD_LEASES_FLOW = "spacesecrets-shard-leases"
# The control plane's own controllers that delete what a namespace or an owner leaves behind
# (with --use-service-account-credentials, as kubeadm and most distributions run them).
NAMESPACE_CONTROLLER = "system:serviceaccount:kube-system:namespace-controller"
GARBAGE_COLLECTOR = "system:serviceaccount:kube-system:generic-garbage-collector"
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
        # the owners' RoleBindings, watched so that a deleted or edited one is repaired at once
        _rule(
            ["rbac.authorization.k8s.io"],
            ["rolebindings"],
            ["get", "list", "watch", "create", "update"],
        ),
        # may bind exactly the owner role, nothing more
        _rule(["rbac.authorization.k8s.io"], ["clusterroles"], ["bind"], [OWNER_CLUSTER_ROLE]),
        _rule(["apps"], ["deployments", "statefulsets"], ["get", "list", "watch"]),
        # the running pods that mount a target just updated, nudged with one annotation so that
        # their kubelet refreshes the volume now (an admission policy allows nothing else)
        _rule([""], ["pods"], ["list", "patch"]),
        _rule(["apiextensions.k8s.io"], ["customresourcedefinitions"], ["list", "watch"]),
        # get: the UID of a space's namespace, which tells a namespace created again from the old
        _rule([""], ["namespaces"], ["get", "list", "watch"]),
    ]


def operator_namespace_rules() -> list[dict[str, Any]]:
    """Extra permissions in the operator's own namespace: key ring and history housekeeping,
    and the shards' Leases (engine.shards: each member renews its own, reads the others' with a
    consistent LIST rather than a watch, and deletes its own when it stops, or a member's dead
    long ago)."""
    return [
        _rule([""], ["secrets"], ["delete"]),
        _rule(["coordination.k8s.io"], ["leases"], ["get", "list", "create", "update", "delete"]),
    ]


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
        shard_leases_flow(namespace, service_account),
    ]


def shard_leases_flow(namespace: str, service_account: str) -> dict[str, Any]:
    """API Priority and Fairness: the shards' Lease calls in the `leader-election` priority
    level, as Kubernetes' own controllers' are. Otherwise they queue in the API server behind
    the operator's own writes (one flow, the ServiceAccount's), and under a cold start's storm a
    renewal can wait longer than the lease lasts: the member fences itself and its namespaces
    are handed over and back for nothing."""
    return {
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
        "kind": "FlowSchema",
        "metadata": {"name": SHARD_LEASES_FLOW, "labels": dict(_LABELS)},
        "spec": {
            "priorityLevelConfiguration": {"name": "leader-election"},
            "matchingPrecedence": 800,  # after the built-in leader-election schemas (100-200)
            "distinguisherMethod": {"type": "ByUser"},
            "rules": [
                {
                    "subjects": [
                        {
                            "kind": "ServiceAccount",
                            "serviceAccount": {"name": service_account, "namespace": namespace},
                        }
                    ],
                    "resourceRules": [
                        {
                            "verbs": ["get", "list", "create", "update", "delete"],
                            "apiGroups": ["coordination.k8s.io"],
                            "resources": ["leases"],
                            "namespaces": [namespace],
                        }
                    ],
                }
            ],
        },
    }


def _exempt(operator_namespace: str, service_account: str) -> str:
    """CEL: requests the owner policies do not judge: cluster admins, the operator, and the two
    controllers of the control plane that delete what a namespace or an owner leaves behind
    (the namespace controller deleting a namespace, the garbage collector following owner
    references). No other ServiceAccount of kube-system is exempt."""
    sa = f"system:serviceaccount:{operator_namespace}:{service_account}"
    return (
        "!(has(request.userInfo.groups) && request.userInfo.groups.exists(g, "
        f"g == '{CLUSTER_ADMINS}')) && "
        f"request.userInfo.username != '{sa}' && "
        f"request.userInfo.username != '{NAMESPACE_CONTROLLER}' && "
        f"request.userInfo.username != '{GARBAGE_COLLECTOR}'"
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


def _rules(
    resources: list[str], operations: list[str], group: str = GROUP, version: str = "*"
) -> dict[str, Any]:
    # Admission rules name subresources explicitly ("spacesecrets/status"), so a rule for
    # "spacesecrets" never matches a status write and vice versa.
    return {
        "resourceRules": [
            {
                "apiGroups": [group],
                "apiVersions": [version],
                "operations": operations,
                "resources": resources,
            }
        ]
    }


def _policy(
    name: str,
    match: dict[str, Any],
    conditions: list[dict[str, str]],
    *,
    validation: dict[str, str],
    owners: str | None = None,
    param_kind: bool = False,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "failurePolicy": "Fail",
        "matchConstraints": match,
        "validations": [{**validation, "reason": "Forbidden"}],
    }
    if conditions:
        spec["matchConditions"] = conditions
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


def _binding(
    name: str, parameter_not_found: str | None = None, kind: str = "ValidatingAdmissionPolicy"
) -> dict[str, Any]:
    spec: dict[str, Any] = {"policyName": name}
    if kind == "ValidatingAdmissionPolicy":
        spec["validationActions"] = ["Deny"]
    if parameter_not_found:
        # no namespace: a namespaced paramKind is looked up in the request's namespace
        spec["paramRef"] = {"selector": {}, "parameterNotFoundAction": parameter_not_found}
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": f"{kind}Binding",
        "metadata": {"name": name, "labels": dict(_LABELS)},
        "spec": spec,
    }


def _annotation(obj: str, key: str) -> str:
    """CEL: the annotation `key` of `obj` ('' when absent)."""
    return f"{obj}.metadata.?annotations[?'{key}'].orValue('')"


# CEL: the requester as the API server authenticated it, as a JSON document (provenance.Identity).
# strings.quote escapes like JSON but for two control characters, which Identity.parse maps.
STAMP = (
    "'{\"user\":' + strings.quote(request.userInfo.username) + ',\"groups\":[' + "
    "(has(request.userInfo.groups) ? "
    "request.userInfo.groups.map(g, strings.quote(g)).join(',') : '') + ']}'"
)


def _stamps() -> dict[str, str]:
    """CEL, per kind: the provenance annotation's value after the request.

    A SpaceSecrets keeps who created it. A FlowSecretSync is re-stamped whenever its spec or its
    approval annotation changes, so its stamp always names who authorized what it asks for now.
    Whatever the request itself carried in these annotations is never kept."""
    flow_changed = (
        "request.operation == 'CREATE' || object.spec != oldObject.spec || "
        f"{_annotation('object', APPROVE)} != {_annotation('oldObject', APPROVE)}"
    )
    return {
        "spacesecrets": (
            f"request.operation == 'CREATE' ? {STAMP} : {_annotation('oldObject', CREATED_BY)}"
        ),
        "flowsecretsyncs": (
            f"({flow_changed}) ? {STAMP} : {_annotation('oldObject', AUTHORIZED_BY)}"
        ),
    }


_STAMP_KEYS = {"spacesecrets": CREATED_BY, "flowsecretsyncs": AUTHORIZED_BY}


def provenance_policies() -> list[dict[str, Any]]:
    """Who created a space or authorized a flow, stamped by the API server itself.

    A MutatingAdmissionPolicy per kind writes the stamp on every create and update, for every
    requester (cluster admins and the operator included), overwriting what the request carried;
    a ValidatingAdmissionPolicy refuses any object whose stamp is not the one the API server
    computes, so a forged stamp cannot get in even with the mutating policy missing."""
    docs: list[dict[str, Any]] = []
    for plural, stamp in _stamps().items():
        key = _STAMP_KEYS[plural]
        name = f"{STAMP_PROVENANCE}-{plural}"
        docs.append(
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "MutatingAdmissionPolicy",
                "metadata": {"name": name, "labels": dict(_LABELS)},
                "spec": {
                    "failurePolicy": "Fail",
                    "matchConstraints": _rules([plural], ["CREATE", "UPDATE"]),
                    "reinvocationPolicy": "IfNeeded",
                    "mutations": [
                        {
                            "patchType": "ApplyConfiguration",
                            "applyConfiguration": {
                                "expression": (
                                    "Object{metadata: Object.metadata{annotations: "
                                    f"{{'{key}': {stamp}}}}}}}"
                                )
                            },
                        }
                    ],
                },
            }
        )
        docs.append(_binding(name, kind="MutatingAdmissionPolicy"))
        docs.append(
            _policy(
                f"{POLICY_PROVENANCE}-{plural}",
                _rules([plural], ["CREATE", "UPDATE"]),
                [],
                validation={
                    "expression": f"{_annotation('object', key)} == ({stamp})",
                    "messageExpression": (
                        f"'the annotation {key} is stamped by the API server (who created or "
                        "authorized the object); it may not be set or changed by a request'"
                    ),
                },
            )
        )
        docs.append(_binding(f"{POLICY_PROVENANCE}-{plural}"))
    return docs


def _not_exempt(operator_namespace: str, service_account: str) -> list[dict[str, str]]:
    return [{"name": "not-exempt", "expression": _exempt(operator_namespace, service_account)}]


def _owners_binding_policy(operator_namespace: str, service_account: str) -> dict[str, Any]:
    """Only the operator writes the owners' RoleBinding: nobody else may create one of that name,
    and nobody else may change or delete the one it manages (a RoleBinding of that name it did
    not create stays its creator's, and is reported by the operator, never overwritten)."""
    ours = "app.kubernetes.io/managed-by"

    def managed(obj: str) -> str:
        return f"({obj} != null && {obj}.metadata.?labels[?'{ours}'].orValue('') == '{MANAGED_BY}')"

    return _policy(
        POLICY_OWNERS_BINDING,
        _rules(["rolebindings"], ["CREATE", "UPDATE", "DELETE"], "rbac.authorization.k8s.io"),
        [
            {"name": "owners-binding", "expression": f"request.name == '{OWNERS_ROLE_BINDING}'"},
            *_not_exempt(operator_namespace, service_account),
        ],
        validation={
            "expression": (
                f"request.operation != 'CREATE' && !{managed('oldObject')} && !{managed('object')}"
            ),
            "messageExpression": (
                f"'RoleBinding {OWNERS_ROLE_BINDING} is written by the spacesecrets operator "
                "from spec.owners of the namespace\\'s SpaceSecrets; change the owners there; ' + "
                "request.userInfo.username + ' may not ' + request.operation.lowerAscii() + ' it'"
            ),
        },
    )


def _pod_refresh_policy(operator_namespace: str, service_account: str) -> dict[str, Any]:
    """The operator may patch pods (to make their kubelet refresh a target volume at once), and
    nothing of a pod but that one annotation: no image, no label, no other annotation."""
    sa = f"system:serviceaccount:{operator_namespace}:{service_account}"
    key = REFRESH_ANNOTATION

    def same(field: str, empty: str) -> str:
        fallback = f".orValue({empty})"
        return f"object.metadata.?{field}{fallback} == oldObject.metadata.?{field}{fallback}"

    new, old = "variables.new", "variables.old"
    policy = _policy(
        POLICY_POD_REFRESH,
        _rules(["pods"], ["UPDATE"], ""),
        [{"name": "the-operator", "expression": f"request.userInfo.username == '{sa}'"}],
        validation={
            "expression": (
                "object.spec == oldObject.spec && "
                f"{same('labels', '{}')} && {same('ownerReferences', '[]')} && "
                f"{same('finalizers', '[]')} && "
                f"{new}.all(k, k == '{key}' || (k in {old} && {old}[k] == {new}[k])) && "
                f"{old}.all(k, k == '{key}' || k in {new})"
            ),
            "messageExpression": (
                f"'the spacesecrets operator may change only the annotation {key} of a pod'"
            ),
        },
    )
    policy["spec"]["variables"] = [
        {"name": "new", "expression": "object.metadata.?annotations.orValue({})"},
        {"name": "old", "expression": "oldObject.metadata.?annotations.orValue({})"},
    ]
    return policy


def _operator_namespace_policy(operator_namespace: str) -> dict[str, Any]:
    """No space or flow in the operator's own namespace: its key ring and every space's history
    live there, and a flow there would project into the namespace that holds them."""
    return _policy(
        POLICY_OPERATOR_NAMESPACE,
        _rules(_KINDS, ["CREATE"]),
        [
            {
                "name": "operator-namespace",
                "expression": f"request.namespace == '{operator_namespace}'",
            }
        ],
        validation={
            "expression": "false",
            "messageExpression": (
                f"'namespace {operator_namespace} is the spacesecrets operator\\'s own namespace "
                "(its keys and every space\\'s history live there); ' + request.resource.resource "
                "+ ' are not served in it: use another namespace'"
            ),
        },
    )


def _owner_policies(exempt: list[dict[str, str]]) -> list[dict[str, Any]]:
    """The policies that let only a space's owners change it and its flows, and only the
    operator write their status."""

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
        exempt,
        validation={
            "expression": _IS_OWNER,
            "messageExpression": owners_message("its SpaceSecrets ' + request.name + '"),
        },
        owners="oldObject.spec.owners",
    )
    new_spaces = _policy(
        POLICY_NEW_SPACES,
        _rules(["spacesecrets"], ["CREATE"]),
        exempt,
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
        exempt,
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
        exempt,
        validation={
            "expression": "false",
            "messageExpression": (
                "'only the spacesecrets operator writes the status of ' + request.resource.resource"
                " + '; ' + request.userInfo.username + ' may not'"
            ),
        },
    )
    return [spaces, new_spaces, flows, status]


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
      there are no owners: RBAC alone decides, and the stamp of who did it (see
      `provenance_policies`) lets the operator refuse such a flow secrets until an owner
      approves it.
    - status: only the operator writes the status of either kind (a wildcard role would
      otherwise let anyone forge `Synced` or versions).
    - the owners' RoleBinding: only the operator writes it.
    - the operator's namespace: no space or flow is created there.
    - provenance: who created each space and who authorized each flow, stamped by the API server.
    """
    exempt = _not_exempt(operator_namespace, service_account)
    spaces, new_spaces, flows, status = _owner_policies(exempt)
    return [
        spaces,
        new_spaces,
        flows,
        status,
        _owners_binding_policy(operator_namespace, service_account),
        _operator_namespace_policy(operator_namespace),
        _binding(POLICY_SPACES),
        _binding(POLICY_NEW_SPACES, "Allow"),
        # With no SpaceSecrets there are no owners and nothing to protect. Parameters are
        # resolved before matchConditions, so "Deny" here would refuse even the operator and the
        # namespace controller (a namespace whose space went first could never be deleted), and
        # a GitOps apply of a space with its flows would race the API server's parameter cache.
        _binding(POLICY_FLOWS, "Allow"),
        _binding(POLICY_STATUS),
        _binding(POLICY_OWNERS_BINDING),
        _binding(POLICY_OPERATOR_NAMESPACE),
        _pod_refresh_policy(operator_namespace, service_account),
        _binding(POLICY_POD_REFRESH),
        *provenance_policies(),
    ]
