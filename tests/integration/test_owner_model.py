"""The owner model at a space's birth and death, against the real control plane: who may restore
a deleted space's history, which flows get secrets, the owners' RoleBinding, and who the admission
policies exempt. Each test makes real changes as real users (client certificates and
ServiceAccount tokens), with the operator running as its least-privilege ServiceAccount.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.cli import cli
from tests.support.docs import flow_doc
from tests.support.identities import owners_binding_subjects, sa_kubeconfig
from tests.support.logs import DENIED_BY_A_TEST
from tests.support.space import Space

from spacesecrets.core import provenance
from spacesecrets.core.access import OWNER_CLUSTER_ROLE, OWNERS_ROLE_BINDING
from spacesecrets.devtools.dev import OPERATOR_NAMESPACE, LocalCluster, OperatorProcess, wait_for
from spacesecrets.kube import NotFound
from spacesecrets.kube.client import Kube
from spacesecrets.names import SYNC_NOW

CREATOR_ROLE = "owner-model-creator"  # what a namespace's developers often get: all of our kinds
SECRET = "alice-only-value-7d1f"


@dataclass
class People:
    cluster: LocalCluster
    kube: Kube
    ns: str
    alice: Path  # the space's owner
    bob: Path  # may create our kinds in the namespace (RBAC), never an owner
    alice_name: str
    bob_name: str

    def space(self) -> Space:
        return Space(self.cluster, self.kube, self.ns, [{"kind": "User", "name": self.alice_name}])

    def grant(self) -> None:
        """RBAC for both in the namespace (again after it is created anew)."""
        for who, user in (("alice", self.alice_name), ("bob", self.bob_name)):
            self.cluster.cp.kubectl(
                "create",
                "rolebinding",
                f"creator-{who}",
                "-n",
                self.ns,
                f"--clusterrole={CREATOR_ROLE}",
                f"--user={user}",
            )


@pytest.fixture
def people(cluster: LocalCluster, kube: Kube, operator: OperatorProcess) -> Iterator[People]:
    suffix = uuid.uuid4().hex[:6]
    ns = f"om-{suffix}"
    cp = cluster.cp
    cluster.apply(
        [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": CREATOR_ROLE},
                "rules": [
                    {
                        "apiGroups": ["spacesecrets.io"],
                        "resources": ["spacesecrets", "flowsecretsyncs"],
                        "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
                    }
                ],
            }
        ]
    )
    cp.kubectl("create", "namespace", ns)
    alice, bob = f"alice-{suffix}", f"bob-{suffix}"
    p = People(cluster, kube, ns, cp.kubeconfig_for(alice), cp.kubeconfig_for(bob), alice, bob)
    p.grant()
    yield p
    cp.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def history_index(kube: Kube, ns: str, name: str | None = None) -> dict[str, Any]:
    import base64

    secret = kube.get("Secret", OPERATOR_NAMESPACE, name or f"history-{ns}")
    return dict(json.loads(base64.b64decode(secret["data"]["index.json"])))


def wait_deleted_in_history(kube: Kube, ns: str) -> dict[str, Any]:
    return dict(
        wait_for(
            f"the history of {ns} to be marked deleted",
            lambda: history_index(kube, ns).get("deletedAt") and history_index(kube, ns),
        )
    )


def secrets_of(space: Space, target: str) -> dict[str, Any]:
    return dict(space.target_documents(target)["SECRETS"])


def alice_space_then_deleted(people: People) -> tuple[Space, str]:
    """Alice's space at version 1 holding SECRET, then deleted by her: its uid."""
    space = people.space()
    space.kubectl_apply(space.manifest({"API_TOKEN": SECRET}), kubeconfig=people.alice)
    space.wait_version(1)
    uid = str(space.get()["metadata"]["uid"])
    stamp = provenance.Identity.parse(
        space.get()["metadata"]["annotations"].get(provenance.CREATED_BY)
    )
    assert stamp is not None and stamp.user == people.alice_name  # the API server's word
    people.cluster.cp.kubectl(
        "delete", "spacesecrets", "secrets", "-n", people.ns, kubeconfig=people.alice
    )
    wait_deleted_in_history(people.kube, people.ns)
    return space, uid


# -- 1. a deleted space's history -------------------------------------------------------------


def test_a_non_owner_cannot_restore_a_deleted_space(people: People) -> None:
    """Bob, whom RBAC lets create SpaceSecrets, makes himself the owner of a new one asking for
    version 1 back, and a flow: he gets a fresh space, a message naming who may restore the old
    history, and his flow never sees Alice's value. Alice then restores it by its uid."""
    space, old_uid = alice_space_then_deleted(people)
    bob_space = Space(
        people.cluster, people.kube, people.ns, [{"kind": "User", "name": people.bob_name}]
    )
    doc = bob_space.manifest({"BOB_KEY": "bob's own"})
    doc["metadata"]["annotations"] = {"spacesecrets.io/rollback-to": "1"}
    bob_space.kubectl_apply(doc, kubeconfig=people.bob)
    bob_space.kubectl_apply(flow_doc(people.ns, "bobs-flow", "bobs-target"), kubeconfig=people.bob)

    cond = bob_space.wait_condition("Restore", "False", "RestoreNotAllowed")
    assert f"User {people.alice_name}" in cond["message"], cond
    assert old_uid in cond["message"] and SECRET not in cond["message"]
    assert bob_space.events("RestoreNotAllowed"), "no Warning Event"
    bob_space.wait_condition("Synced", "True", name="bobs-flow", plural="flowsecretsyncs")
    status = bob_space.wait_version(1)["status"]
    assert [k["name"] for k in status["keys"]] == ["BOB_KEY"]
    assert [h["version"] for h in status["history"]] == [1]
    assert secrets_of(bob_space, "bobs-target") == {"BOB_KEY": "bob's own"}
    # the old history is set aside, not lost
    assert history_index(people.kube, people.ns, f"archive-{old_uid}")["spaceUid"] == old_uid

    # Alice, a former owner, asks for it back by uid once Bob's store is gone
    people.cluster.cp.kubectl(
        "delete", "spacesecrets", "secrets", "-n", people.ns, kubeconfig=people.bob
    )
    wait_deleted_in_history(people.kube, people.ns)
    doc = space.manifest({"API_TOKEN": SECRET})
    doc["metadata"]["annotations"] = {provenance.RESTORE_FROM: old_uid}
    space.kubectl_apply(doc, kubeconfig=people.alice)
    cond = space.wait_condition("Restore", "True", "Restored")
    assert old_uid in cond["message"]
    status = space.wait_version(1)["status"]  # the same values: no new version
    assert [k["name"] for k in status["keys"]] == ["API_TOKEN"]
    space.kubectl_apply(
        flow_doc(people.ns, "alices-flow", "alices-target"), kubeconfig=people.alice
    )
    space.wait_condition("Synced", "True", name="alices-flow", plural="flowsecretsyncs")
    assert secrets_of(space, "alices-target") == {"API_TOKEN": SECRET}


def blocking_status_writes(people: People) -> tuple[list[dict[str, Any]], str]:
    """A ValidatingAdmissionPolicy that refuses every write of a SpaceSecrets' status in the
    namespace (and, to tell when the API server enforces it, any ConfigMap created there), and
    the name of its binding: the one fault of the API server this test needs, made for real."""
    name = f"block-space-status-{people.ns}"
    return [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": ["spacesecrets.io"],
                            "apiVersions": ["*"],
                            "operations": ["UPDATE"],
                            "resources": ["spacesecrets/status"],
                        },
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE"],
                            "resources": ["configmaps"],
                        },
                    ]
                },
                "validations": [{"expression": "false", "message": DENIED_BY_A_TEST}],
            },
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name},
            "spec": {
                "policyName": name,
                "validationActions": ["Deny"],
                "matchResources": {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": people.ns}}
                },
            },
        },
    ], name


def enforced(people: People) -> bool:
    probe = people.cluster.cp.kubectl(
        "create", "configmap", "probe", "-n", people.ns, "--dry-run=server", check=False
    )
    return probe.returncode != 0 and DENIED_BY_A_TEST in probe.stderr


def test_a_refused_restore_is_reported_when_the_first_status_write_failed(
    people: People,
) -> None:
    """The decision on a deleted store's history is made once, when a new store takes the
    namespace; if the status that reports it cannot be written then (here an admission policy
    refuses it), a later reconcile still reports it: it is kept with the history."""
    _, old_uid = alice_space_then_deleted(people)
    policy, binding = blocking_status_writes(people)
    people.cluster.apply(policy)
    wait_for("the policy to be enforced", lambda: enforced(people))
    bob_space = Space(
        people.cluster, people.kube, people.ns, [{"kind": "User", "name": people.bob_name}]
    )
    bob_space.kubectl_apply(bob_space.manifest({"BOB_KEY": "bob's own"}), kubeconfig=people.bob)
    bob_uid = bob_space.get()["metadata"]["uid"]
    wait_for(
        "Bob's store to take the namespace's history",
        lambda: history_index(people.kube, people.ns).get("spaceUid") == bob_uid,
    )
    assert not (bob_space.get().get("status") or {}).get("conditions"), "the status was written"

    cp = people.cluster.cp
    cp.kubectl("delete", "validatingadmissionpolicybinding", binding)
    wait_for("the policy to be lifted", lambda: not enforced(people))
    cp.kubectl("delete", "validatingadmissionpolicy", binding)
    # any change makes the operator look again (a refused status write is not retried by itself)
    cp.kubectl(
        "annotate",
        "spacesecrets",
        "secrets",
        "-n",
        people.ns,
        "example.com/touched=1",
        kubeconfig=people.bob,
    )
    cond = bob_space.wait_condition("Restore", "False", "RestoreNotAllowed")
    assert f"User {people.alice_name}" in cond["message"] and old_uid in cond["message"], cond
    assert bob_space.get()["status"]["version"] == 1


def test_a_namespace_created_again_is_a_new_space(people: People) -> None:
    """Deleted and created again, a namespace is a new space even for a former owner, unless
    she asks for the old history by uid."""
    space, old_uid = alice_space_then_deleted(people)
    cp = people.cluster.cp
    cp.kubectl("delete", "namespace", people.ns, "--timeout=120s")
    cp.kubectl("create", "namespace", people.ns)
    people.grant()

    space.kubectl_apply(space.manifest({"OTHER": "new"}), kubeconfig=people.alice)
    cond = space.wait_condition("Restore", "False", "RestoreNotAllowed")
    assert f"{provenance.RESTORE_FROM}: '{old_uid}'" in cond["message"], cond
    assert [h["version"] for h in space.wait_version(1)["status"]["history"]] == [1]

    cp.kubectl("delete", "spacesecrets", "secrets", "-n", people.ns, kubeconfig=people.alice)
    wait_deleted_in_history(people.kube, people.ns)
    doc = space.manifest({"API_TOKEN": SECRET})
    doc["metadata"]["annotations"] = {provenance.RESTORE_FROM: old_uid}
    space.kubectl_apply(doc, kubeconfig=people.alice)
    space.wait_condition("Restore", "True", "Restored")
    assert [h["version"] for h in space.wait_version(1)["status"]["history"]] == [1]


# -- 2. flows made before a space -------------------------------------------------------------


def test_a_flow_no_owner_authorized_gets_nothing_until_an_owner_approves(people: People) -> None:
    """With no space, RBAC alone lets Bob create a flow asking for every key. When Alice creates
    the space, the flow gets nothing until she approves it; Bob cannot approve it himself."""
    cp = people.cluster.cp
    cp.kubectl(
        "apply",
        "-f",
        "-",
        kubeconfig=people.bob,
        input=yaml.safe_dump(flow_doc(people.ns, "early", "early-target")),
    )
    space = people.space()
    space.kubectl_apply(space.manifest({"API_TOKEN": SECRET}), kubeconfig=people.alice)
    space.wait_version(1)
    cond = space.wait_condition(
        "Synced", "False", "ApprovalRequired", name="early", plural="flowsecretsyncs"
    )
    assert people.bob_name in cond["message"] and f"User {people.alice_name}" in cond["message"]
    assert "spacesecrets approve early" in cond["message"]
    assert space.events("ApprovalRequired")
    with pytest.raises(NotFound):
        people.kube.get("Secret", people.ns, "early-target")

    refused = cli(people.bob, "approve", "early", "-n", people.ns)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "only owners of space" in refused.stderr, refused.stderr

    approved = cli(people.alice, "approve", "early", "-n", people.ns)
    assert approved.returncode == 0, approved.stderr
    assert f"approved by {people.alice_name}" in approved.stdout
    space.wait_condition("Synced", "True", name="early", plural="flowsecretsyncs")
    assert secrets_of(space, "early-target") == {"API_TOKEN": SECRET}

    # an owner removed: the flow she authorized stops getting secrets at once
    carol = f"carol-{uuid.uuid4().hex[:6]}"
    patch = {"spec": {"owners": [{"kind": "User", "name": carol}]}}
    cp.kubectl(
        "patch",
        "spacesecrets",
        "secrets",
        "-n",
        people.ns,
        "--type=merge",
        "-p",
        json.dumps(patch),
        kubeconfig=people.alice,
    )
    space.wait_condition(
        "Synced", "False", "ApprovalRequired", name="early", plural="flowsecretsyncs"
    )


def test_only_an_owner_may_ask_for_a_sync_and_asking_is_no_approval(people: People) -> None:
    """Bob may update and patch FlowSecretSyncs (RBAC) but is no owner: the admission policy
    refuses his Sync now request, by PUT, by patch and by the CLI. Alice's request is allowed and
    handled, but leaves the API server's stamp alone: the flow Bob authorized stays unapproved."""
    cp = people.cluster.cp
    cp.kubectl(
        "apply",
        "-f",
        "-",
        kubeconfig=people.bob,
        input=yaml.safe_dump(flow_doc(people.ns, "early", "early-target")),
    )  # no space yet: RBAC alone decides
    space = people.space()
    space.kubectl_apply(space.manifest({"API_TOKEN": SECRET}), kubeconfig=people.alice)
    space.wait_version(1)
    space.wait_condition(
        "Synced", "False", "ApprovalRequired", name="early", plural="flowsecretsyncs"
    )
    stamp = people.kube.get_custom("flowsecretsyncs", people.ns, "early")["metadata"][
        "annotations"
    ][provenance.AUTHORIZED_BY]

    obj = people.kube.get_custom("flowsecretsyncs", people.ns, "early")
    obj["metadata"]["annotations"][SYNC_NOW] = "bob-asks"
    put = cp.kubectl(
        "replace", "-f", "-", input=json.dumps(obj), kubeconfig=people.bob, check=False
    )
    assert put.returncode != 0 and "only owners of space" in put.stderr, put.stderr
    patch = cp.kubectl(
        "annotate", "flowsecretsync", "early", "-n", people.ns, f"{SYNC_NOW}=bob-asks",
        kubeconfig=people.bob, check=False,
    )  # fmt: skip
    assert patch.returncode != 0 and "only owners of space" in patch.stderr, patch.stderr
    refused = cli(people.bob, "sync", "early", "-n", people.ns)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "only owners of space" in refused.stderr, refused.stderr
    assert (
        SYNC_NOW
        not in people.kube.get_custom("flowsecretsyncs", people.ns, "early")["metadata"][
            "annotations"
        ]
    )

    asked = cli(people.alice, "sync", "early", "-n", people.ns)
    assert asked.returncode != 0 and "Traceback" not in asked.stderr
    assert "not synced, holds no version (ApprovalRequired" in asked.stdout, asked.stdout
    got = people.kube.get_custom("flowsecretsyncs", people.ns, "early")
    assert got["metadata"]["annotations"][provenance.AUTHORIZED_BY] == stamp  # not re-stamped
    assert got["status"]["syncNow"]["requested"] == got["metadata"]["annotations"][SYNC_NOW]
    assert space.condition("Synced", "early", "flowsecretsyncs")["reason"] == "ApprovalRequired"
    with pytest.raises(NotFound):
        people.kube.get("Secret", people.ns, "early-target")


def test_gitops_applies_a_space_and_its_flows_together(people: People) -> None:
    """An owner's identity (a GitOps ServiceAccount) applies the space and its flows from one
    manifest, flows first: they sync with no manual step."""
    cp = people.cluster.cp
    cp.kubectl(
        "create",
        "rolebinding",
        "gitops-creator",
        "-n",
        people.ns,
        f"--clusterrole={CREATOR_ROLE}",
        f"--serviceaccount={people.ns}:gitops",
    )
    gitops = sa_kubeconfig(people.cluster, people.ns, "gitops")
    space = Space(
        people.cluster, people.kube, people.ns, [{"kind": "ServiceAccount", "name": "gitops"}]
    )
    docs = [
        flow_doc(people.ns, "from-git", "from-git-target"),
        space.manifest({"API_TOKEN": SECRET}),
    ]
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs), kubeconfig=gitops)
    space.wait_condition("Synced", "True", name="from-git", plural="flowsecretsyncs")
    assert secrets_of(space, "from-git-target") == {"API_TOKEN": SECRET}


def test_a_forged_stamp_is_overwritten_by_the_api_server(people: People) -> None:
    """Bob writes Alice's name into the stamp himself: the API server replaces it with his."""
    forged = json.dumps({"user": people.alice_name, "groups": ["system:masters"]})
    doc = flow_doc(people.ns, "forged", "forged-target")
    doc["metadata"]["annotations"] = {provenance.AUTHORIZED_BY: forged}
    people.cluster.cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc), kubeconfig=people.bob)
    got = people.kube.get_custom("flowsecretsyncs", people.ns, "forged")
    who = provenance.Identity.parse(got["metadata"]["annotations"][provenance.AUTHORIZED_BY])
    assert who is not None and who.user == people.bob_name
    assert "system:masters" not in who.groups


# -- 3. the owners' RoleBinding ---------------------------------------------------------------


def test_the_owners_binding_is_repaired_at_once(people: People) -> None:
    """Deleted or edited by someone the policy cannot stop (a cluster admin), the binding is
    repaired by the running operator, without a restart or a change of the space."""
    space = people.space()
    space.kubectl_apply(space.manifest({"API_TOKEN": SECRET}), kubeconfig=people.alice)
    want = {("User", people.alice_name)}
    wait_for("the owners binding", lambda: owners_binding_subjects(people.kube, people.ns) == want)
    cp = people.cluster.cp
    cp.kubectl("delete", "rolebinding", OWNERS_ROLE_BINDING, "-n", people.ns)
    wait_for(
        "the deleted binding repaired",
        lambda: owners_binding_subjects(people.kube, people.ns) == want,
        15,
    )
    patch = {
        "subjects": [
            {"kind": "User", "name": people.bob_name, "apiGroup": "rbac.authorization.k8s.io"}
        ]
    }
    cp.kubectl(
        "patch",
        "rolebinding",
        OWNERS_ROLE_BINDING,
        "-n",
        people.ns,
        "--type=merge",
        "-p",
        json.dumps(patch),
    )
    wait_for(
        "the edited binding repaired",
        lambda: owners_binding_subjects(people.kube, people.ns) == want,
        15,
    )


def test_a_binding_the_operator_did_not_create_is_never_taken_over(people: People) -> None:
    cp = people.cluster.cp
    cp.kubectl(
        "create",
        "rolebinding",
        OWNERS_ROLE_BINDING,
        "-n",
        people.ns,
        "--clusterrole=view",
        f"--user={people.bob_name}",
    )
    space = people.space()
    space.kubectl_apply(space.manifest({"API_TOKEN": SECRET}), kubeconfig=people.alice)
    cond = space.wait_condition("OwnersBound", "False", "RoleBindingNotOwned")
    assert OWNERS_ROLE_BINDING in cond["message"]
    assert space.events("RoleBindingNotOwned")
    rb = people.kube.get_role_binding(people.ns, OWNERS_ROLE_BINDING)
    assert rb["roleRef"]["name"] == "view"
    assert owners_binding_subjects(people.kube, people.ns) == {("User", people.bob_name)}
    assert space.condition("Ready")["status"] == "True"  # the store itself works

    # deleted by its creator: the next reconcile of the space binds the owners
    cp.kubectl("delete", "rolebinding", OWNERS_ROLE_BINDING, "-n", people.ns)
    space.kubectl_apply(space.manifest({"API_TOKEN": SECRET, "MORE": "x"}), kubeconfig=people.alice)
    space.wait_condition("OwnersBound", "True", "Bound")
    rb = people.kube.get_role_binding(people.ns, OWNERS_ROLE_BINDING)
    assert rb["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": OWNER_CLUSTER_ROLE,
    }


# -- 6. exemptions and the operator's namespace ----------------------------------------------


def test_only_the_namespace_controller_and_garbage_collector_are_exempt(people: People) -> None:
    """Any other ServiceAccount of kube-system, even with wildcard RBAC, is judged like anyone."""
    cp = people.cluster.cp
    name = f"intruder-{uuid.uuid4().hex[:6]}"
    cp.kubectl(
        "create",
        "rolebinding",
        name,
        "-n",
        people.ns,
        f"--clusterrole={CREATOR_ROLE}",
        f"--serviceaccount=kube-system:{name}",
    )
    intruder = sa_kubeconfig(people.cluster, "kube-system", name)
    space = people.space()
    space.kubectl_apply(space.manifest({"API_TOKEN": SECRET}), kubeconfig=people.alice)
    space.wait_version(1)
    result = cp.kubectl(
        "delete",
        "spacesecrets",
        "secrets",
        "-n",
        people.ns,
        "--dry-run=server",
        kubeconfig=intruder,
        check=False,
    )
    assert result.returncode != 0
    assert "ValidatingAdmissionPolicy" in result.stderr, result.stderr
    cp.kubectl("delete", "serviceaccount", name, "-n", "kube-system", check=False)


def test_no_space_or_flow_in_the_operators_namespace(
    cluster: LocalCluster, operator: OperatorProcess
) -> None:
    for doc in (
        {
            "apiVersion": "spacesecrets.io/v1alpha1",
            "kind": "SpaceSecrets",
            "metadata": {"name": "secrets", "namespace": OPERATOR_NAMESPACE},
            "spec": {"owners": [{"kind": "User", "name": "x"}], "data": {}},
        },
        flow_doc(OPERATOR_NAMESPACE, "f", "history-team-a"),
    ):
        result = cluster.cp.kubectl(
            "create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(doc), check=False
        )
        assert result.returncode != 0
        assert "operator's own namespace" in result.stderr, result.stderr
