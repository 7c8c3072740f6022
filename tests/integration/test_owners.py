"""Owners against the real control plane: who may do what to a space's SpaceSecrets and
FlowSecretSyncs, enforced by RBAC (the operator's owners RoleBinding) and by the
ValidatingAdmissionPolicies inside the API server -- whatever other RBAC grants.

The matrix runs every action as every subject twice, through kubectl and through the Python
client, as server-side dry runs: the API server authorizes and admits a dry run exactly like the
real request, and nothing the matrix allows changes the namespace under the next cell. The tests
after it make real changes: owners added and removed, a target the operator must not take over,
and the policy holding with the operator stopped.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from tests.support.docs import GROUP, VERSION, WILDCARD_ROLE, flow_doc, space_doc, wildcard_role
from tests.support.env import FAST_ENV
from tests.support.identities import owners_binding_subjects, sa_kubeconfig
from tests.support.space import Space

from spacesecrets.core.access import OWNER_CLUSTER_ROLE, OWNERS_ROLE_BINDING
from spacesecrets.devtools.dev import LocalCluster, OperatorProcess, wait_for
from spacesecrets.kube.client import Kube
from spacesecrets.kube.factory import kube_for, make_client
from spacesecrets.schema.manifests import operator_role

SPACES, FLOWS = "spacesecrets", "flowsecretsyncs"
ALLOW, RBAC, POLICY = "allow", "RBAC", "policy"  # a cell's outcome; a deny names who denied it

# -- the actions --------------------------------------------------------------------------------
# Each action is a kubectl command line (plus stdin) and the same request through the Python
# client; both are dry runs when they write.

DRY = "--dry-run=server"


@dataclass(frozen=True)
class World:
    """The module's cluster setup: a space in `ns` with a flow, users, roles and clients."""

    cluster: LocalCluster
    ns: str
    other_ns: str
    space: dict[str, Any]
    flow: dict[str, Any]
    kubeconfigs: dict[str, Path]
    usernames: dict[str, str]


@dataclass(frozen=True)
class Action:
    column: str
    kubectl: Callable[[World, str], tuple[list[str], str | None]]
    python: Callable[[World, str, kubernetes.client.ApiClient], object]


def _co(api: kubernetes.client.ApiClient) -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(api)


def _labelled(obj: dict[str, Any]) -> dict[str, Any]:
    doc = json.loads(json.dumps(obj))
    doc["metadata"].setdefault("labels", {})["touched"] = "yes"
    return doc


LABEL_PATCH = {"metadata": {"labels": {"touched": "yes"}}}
MERGE = "application/merge-patch+json"


def _owners_patch(w: World, subject: str) -> dict[str, Any]:
    extra = {"kind": "User", "name": w.usernames[subject]}
    return {"spec": {"owners": [*w.space["spec"]["owners"], extra]}}


def _create_kubectl(
    doc: Callable[[World], dict[str, Any]],
) -> Callable[[World, str], tuple[list[str], str | None]]:
    return lambda w, _s: (["create", DRY, "-f", "-"], yaml.safe_dump(doc(w)))


def _create_python(
    plural: str, doc: Callable[[World], dict[str, Any]]
) -> Callable[[World, str, kubernetes.client.ApiClient], object]:
    return lambda w, _s, api: _co(api).create_namespaced_custom_object(
        GROUP, VERSION, w.ns, plural, doc(w), dry_run="All"
    )


def _second_space(w: World) -> dict[str, Any]:
    return space_doc(w.ns, "another", w.space["spec"]["owners"])


def _new_flow(w: World) -> dict[str, Any]:
    return flow_doc(w.ns, "new-flow", "new-target")


def _cm_flow(w: World) -> dict[str, Any]:
    return flow_doc(w.ns, "cm-flow", "cm-target", "ConfigMap")


def _unowned_flow(w: World) -> dict[str, Any]:
    return flow_doc(w.ns, "unowned-flow", "unowned")


def _kind_actions(
    plural: str,
    short: str,
    obj: Callable[[World], dict[str, Any]],
    new: Callable[[World], dict[str, Any]],
) -> list[Action]:
    def name(w: World) -> str:
        return str(obj(w)["metadata"]["name"])

    return [
        Action(
            f"{short} get",
            lambda w, _s: (["get", plural, name(w), "-n", w.ns, "-o", "name"], None),
            lambda w, _s, api: _co(api).get_namespaced_custom_object(
                GROUP, VERSION, w.ns, plural, name(w)
            ),
        ),
        Action(
            f"{short} list",
            lambda w, _s: (["get", plural, "-n", w.ns, "-o", "name"], None),
            lambda w, _s, api: _co(api).list_namespaced_custom_object(GROUP, VERSION, w.ns, plural),
        ),
        Action(f"{short} create", _create_kubectl(new), _create_python(plural, new)),
        Action(
            f"{short} update",
            lambda w, _s: (["replace", DRY, "-f", "-"], yaml.safe_dump(_labelled(obj(w)))),
            lambda w, _s, api: _co(api).replace_namespaced_custom_object(
                GROUP, VERSION, w.ns, plural, name(w), _labelled(obj(w)), dry_run="All"
            ),
        ),
        Action(
            f"{short} patch",
            lambda w, _s: (
                [
                    "patch",
                    plural,
                    name(w),
                    "-n",
                    w.ns,
                    DRY,
                    "--type=merge",
                    "-p",
                    json.dumps(LABEL_PATCH),
                ],
                None,
            ),
            lambda w, _s, api: _co(api).patch_namespaced_custom_object(
                GROUP,
                VERSION,
                w.ns,
                plural,
                name(w),
                LABEL_PATCH,
                dry_run="All",
                _content_type=MERGE,
            ),
        ),
        Action(
            f"{short} delete",
            lambda w, _s: (["delete", plural, name(w), "-n", w.ns, DRY], None),
            lambda w, _s, api: _co(api).delete_namespaced_custom_object(
                GROUP, VERSION, w.ns, plural, name(w), dry_run="All"
            ),
        ),
    ]


def _bind_owner_role_kubectl(w: World, s: str) -> tuple[list[str], str | None]:
    return (
        [
            "create",
            "rolebinding",
            "self-owner",
            "-n",
            w.ns,
            DRY,
            f"--clusterrole={OWNER_CLUSTER_ROLE}",
            f"--user={w.usernames[s]}",
        ],
        None,
    )


def _bind_owner_role_python(w: World, s: str, api: kubernetes.client.ApiClient) -> object:
    body = {
        "metadata": {"name": "self-owner", "namespace": w.ns},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": OWNER_CLUSTER_ROLE,
        },
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": w.usernames[s]}
        ],
    }
    return kubernetes.client.RbacAuthorizationV1Api(api).create_namespaced_role_binding(
        w.ns, body, dry_run="All"
    )


APPLY = "application/apply-patch+yaml"


def _apply_doc(obj: dict[str, Any]) -> dict[str, Any]:
    """A server-side apply of one label on an existing object (a partial apply configuration)."""
    meta = obj["metadata"]
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "labels": {"applied": "by-matrix"},
        },
    }


def _ssa_actions(plural: str, short: str, obj: Callable[[World], dict[str, Any]]) -> Action:
    return Action(
        f"{short} apply (SSA)",
        lambda w, _s: (
            ["apply", "--server-side", "--field-manager=matrix", DRY, "-f", "-"],
            yaml.safe_dump(_apply_doc(obj(w))),
        ),
        lambda w, _s, api: _co(api).patch_namespaced_custom_object(
            GROUP,
            VERSION,
            w.ns,
            plural,
            obj(w)["metadata"]["name"],
            _apply_doc(obj(w)),
            field_manager="matrix",
            dry_run="All",
            _content_type=APPLY,
        ),
    )


def _rbac(api: kubernetes.client.ApiClient) -> kubernetes.client.RbacAuthorizationV1Api:
    return kubernetes.client.RbacAuthorizationV1Api(api)


OWNERS_BINDING_ACTIONS = [
    Action(
        "owners binding patch",
        lambda w, _s: (
            [
                *("patch", "rolebinding", OWNERS_ROLE_BINDING, "-n", w.ns, DRY),
                *("--type=merge", "-p", json.dumps(LABEL_PATCH)),
            ],
            None,
        ),
        lambda w, _s, api: _rbac(api).patch_namespaced_role_binding(
            OWNERS_ROLE_BINDING, w.ns, LABEL_PATCH, dry_run="All"
        ),
    ),
    Action(
        "owners binding delete",
        lambda w, _s: (["delete", "rolebinding", OWNERS_ROLE_BINDING, "-n", w.ns, DRY], None),
        lambda w, _s, api: _rbac(api).delete_namespaced_role_binding(
            OWNERS_ROLE_BINDING, w.ns, dry_run="All"
        ),
    ),
]


ACTIONS: list[Action] = [
    *_kind_actions(SPACES, "space", lambda w: w.space, _second_space),
    Action(
        "space owners+=self",
        lambda w, s: (
            [
                "patch",
                SPACES,
                "secrets",
                "-n",
                w.ns,
                DRY,
                "--type=merge",
                "-p",
                json.dumps(_owners_patch(w, s)),
            ],
            None,
        ),
        lambda w, s, api: _co(api).patch_namespaced_custom_object(
            GROUP,
            VERSION,
            w.ns,
            SPACES,
            "secrets",
            _owners_patch(w, s),
            dry_run="All",
            _content_type=MERGE,
        ),
    ),
    Action(
        "space status",
        lambda w, _s: (
            [
                "patch",
                SPACES,
                "secrets",
                "-n",
                w.ns,
                DRY,
                "--subresource=status",
                "--type=merge",
                "-p",
                '{"status":{"version":99}}',
            ],
            None,
        ),
        lambda w, _s, api: _co(api).patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            w.ns,
            SPACES,
            "secrets",
            {"status": {"version": 99}},
            dry_run="All",
            _content_type=MERGE,
        ),
    ),
    _ssa_actions(SPACES, "space", lambda w: w.space),
    *_kind_actions(FLOWS, "flow", lambda w: w.flow, _new_flow),
    _ssa_actions(FLOWS, "flow", lambda w: w.flow),
    Action(
        "flow status",
        lambda w, _s: (
            [
                "patch",
                FLOWS,
                "existing",
                "-n",
                w.ns,
                DRY,
                "--subresource=status",
                "--type=merge",
                "-p",
                '{"status":{"syncedVersion":99}}',
            ],
            None,
        ),
        lambda w, _s, api: _co(api).patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            w.ns,
            FLOWS,
            "existing",
            {"status": {"syncedVersion": 99}},
            dry_run="All",
            _content_type=MERGE,
        ),
    ),
    Action("flow create ->ConfigMap", _create_kubectl(_cm_flow), _create_python(FLOWS, _cm_flow)),
    Action(
        "flow create ->unowned Secret",
        _create_kubectl(_unowned_flow),
        _create_python(FLOWS, _unowned_flow),
    ),
    Action("bind owner role to self", _bind_owner_role_kubectl, _bind_owner_role_python),
    *OWNERS_BINDING_ACTIONS,
]

READS = {"space get", "space list", "flow get", "flow list"}
OWNERS_BINDING = {a.column for a in OWNERS_BINDING_ACTIONS}
OWNER_ROW = (
    {a.column: ALLOW for a in ACTIONS}
    | {"space status": RBAC, "flow status": RBAC, "bind owner role to self": RBAC}
    | dict.fromkeys(OWNERS_BINDING, RBAC)
)
DENIED_ROW = {a.column: RBAC for a in ACTIONS}
READER_ROW = DENIED_ROW | dict.fromkeys(READS, ALLOW)
# A namespace admin may delete RoleBindings, but not the owners' one; changing it is refused by
# RBAC's escalation check first (they do not hold the owner role's permissions).
ADMIN_ROW = READER_ROW | {"owners binding delete": POLICY}
WILDCARD_ROW = (
    {a.column: POLICY for a in ACTIONS}
    | dict.fromkeys(READS, ALLOW)
    | {"bind owner role to self": RBAC}
    | dict.fromkeys(OWNERS_BINDING, RBAC)
)

# subject -> (description, expected row)
EXPECTED: dict[str, tuple[str, dict[str, str]]] = {
    "owner-user": ("User listed in spec.owners", OWNER_ROW),
    "owner-group": ("member of a Group listed in spec.owners", OWNER_ROW),
    "owner-sa": ("ServiceAccount listed in spec.owners", OWNER_ROW),
    "ns-admin": ("namespace admin, not an owner", ADMIN_ROW),
    "wildcard": ("verbs * on spacesecrets.io/*, bound in ns", WILDCARD_ROW),
    "viewer": ("namespace view", READER_ROW),
    "other-owner": ("owner of another space", DENIED_ROW),
    "flow-sa": ("ServiceAccount the flow runs as", DENIED_ROW),
}


# -- setup --------------------------------------------------------------------------------------


class MatrixReport:
    """Writes the printed matrix into pytest's terminal summary, whatever `-s` says."""

    def __init__(self) -> None:
        self.text = ""

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.text:
            terminalreporter.section("owners matrix")
            terminalreporter.write_line(self.text)


@pytest.fixture(scope="module")
def report(request: pytest.FixtureRequest) -> MatrixReport:
    plugin = MatrixReport()
    name = "spacesecrets-owners-matrix"
    if not request.config.pluginmanager.has_plugin(name):
        request.config.pluginmanager.register(plugin, name)
    return request.config.pluginmanager.get_plugin(name) or plugin


@pytest.fixture(scope="module")
def world(cluster: LocalCluster, kube: Kube, operator: OperatorProcess) -> Iterator[World]:
    suffix = uuid.uuid4().hex[:6]
    ns, other_ns = f"team-a-{suffix}", f"team-b-{suffix}"
    cp = cluster.cp
    for n in (ns, other_ns):
        cp.kubectl("create", "namespace", n)
    users = {
        "owner-user": f"alice-{suffix}",
        "owner-group": f"gary-{suffix}",
        "ns-admin": f"adam-{suffix}",
        "wildcard": f"wendy-{suffix}",
        "viewer": f"vera-{suffix}",
        "other-owner": f"oscar-{suffix}",
    }
    owners_group = f"team-a-owners-{suffix}"
    kubeconfigs = {
        s: cp.kubeconfig_for(u, [owners_group] if s == "owner-group" else [])
        for s, u in users.items()
    }
    kubeconfigs["owner-sa"] = sa_kubeconfig(cluster, ns, "gitops")
    kubeconfigs["flow-sa"] = sa_kubeconfig(cluster, ns, "node-red")
    users["owner-sa"] = f"system:serviceaccount:{ns}:gitops"
    users["flow-sa"] = f"system:serviceaccount:{ns}:node-red"

    owners = [
        {"kind": "User", "name": users["owner-user"]},
        {"kind": "Group", "name": owners_group},
        {"kind": "ServiceAccount", "name": "gitops"},
    ]
    cluster.apply(
        [
            wildcard_role(),
            space_doc(ns, "secrets", owners),
            space_doc(other_ns, "secrets", [{"kind": "User", "name": users["other-owner"]}]),
            flow_doc(ns, "existing", "existing-target"),
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "unowned", "namespace": ns},
                "stringData": {"password": "hunter2"},
            },
        ]
    )
    for subject, role in (("ns-admin", "admin"), ("wildcard", WILDCARD_ROLE), ("viewer", "view")):
        cp.kubectl(
            "create",
            "rolebinding",
            f"{subject}",
            "-n",
            ns,
            f"--clusterrole={role}",
            f"--user={users[subject]}",
        )
    want = {("User", users["owner-user"]), ("Group", owners_group), ("ServiceAccount", "gitops")}
    wait_for("the owners RoleBinding", lambda: owners_binding_subjects(kube, ns) == want)
    # the flows policy reads the space from the API server's cache: wait until it is there
    # (until then a namespace without a space lets RBAC alone decide)
    probe = yaml.safe_dump(flow_doc(ns, "probe", "probe"))
    wait_for(
        "the owners policy to see the space",
        lambda: (
            "ValidatingAdmissionPolicy"
            in cp.kubectl(
                "create",
                DRY,
                "-f",
                "-",
                input=probe,
                kubeconfig=kubeconfigs["wildcard"],
                check=False,
            ).stderr
        ),
    )
    # the operator has finished with the existing flow (finalizer, status): no stale version
    wait_for(
        "the existing flow to be synced",
        lambda: any(
            c["type"] == "Synced" and c["status"] == "True"
            for c in (kube.get_custom(FLOWS, ns, "existing").get("status") or {}).get(
                "conditions", []
            )
        ),
    )
    space = kube.get_custom(SPACES, ns, "secrets")
    flow = kube.get_custom(FLOWS, ns, "existing")
    yield World(cluster, ns, other_ns, space, flow, kubeconfigs, users)
    cp.kubectl("delete", "clusterrole", WILDCARD_ROLE, "--wait=false", check=False)
    for n in (ns, other_ns):
        cp.kubectl("delete", "namespace", n, "--wait=false", check=False)


# -- running a cell -----------------------------------------------------------------------------


def classify(message: str) -> str:
    """Which layer denied a request, from the message a person reads."""
    if "ValidatingAdmissionPolicy" in message:
        return POLICY
    if " cannot " in message or "attempting to grant RBAC permissions" in message:
        return RBAC
    return f"error: {message.strip()[:200]}"


def run_kubectl(w: World, subject: str, action: Action) -> tuple[str, str]:
    args, stdin = action.kubectl(w, subject)
    result = w.cluster.cp.kubectl(
        *args, input=stdin, kubeconfig=w.kubeconfigs[subject], check=False
    )
    if result.returncode == 0:
        return ALLOW, ""
    return classify(result.stderr), result.stderr.strip()


def run_python(
    w: World, subject: str, action: Action, api: kubernetes.client.ApiClient
) -> tuple[str, str]:
    try:
        action.python(w, subject, api)
    except kubernetes.client.ApiException as exc:
        try:
            message = str(json.loads(exc.body)["message"])
        except (TypeError, ValueError, KeyError):
            message = f"{exc.status} {exc.reason} {exc.body}"
        return classify(message), message
    return ALLOW, ""


def check_message(w: World, subject: str, outcome: str, message: str) -> str | None:
    """A deny must say who may do it and who the requester is; None when it does."""
    if outcome == POLICY:
        wanted = [w.usernames[subject]]
        if (
            "writes the status" not in message
            and "written by the spacesecrets operator" not in message
        ):
            wanted.append(f"only owners of space {w.ns} (User {w.usernames['owner-user']}, ")
    elif outcome == RBAC:
        wanted = [w.usernames[subject]]
    else:
        return None
    missing = [p for p in wanted if p not in message]
    return f"{subject}: message {message!r} lacks {missing}" if missing else None


def render(rows: dict[str, dict[str, str]], expected: dict[str, dict[str, str]]) -> str:
    cols = [a.column for a in ACTIONS]
    width = max(len(s) for s in rows) + 2
    head = " " * width + " ".join(f"{i + 1:>7}" for i in range(len(cols)))
    lines = [head]
    for subject, row in rows.items():
        cells = []
        for c in cols:
            mark = {ALLOW: "allow", RBAC: "x rbac", POLICY: "X VAP"}.get(row[c], "ERR")
            cells.append(f"{mark + ('' if row[c] == expected[subject][c] else '!'):>7}")
        lines.append(f"{subject:<{width}}" + " ".join(cells))
    legend = "  ".join(f"{i + 1}={c}" for i, c in enumerate(cols))
    return "\n".join(
        [
            *lines,
            "",
            legend,
            "allow / x rbac = denied by RBAC / X VAP = denied by the admission policy;"
            " ! = not as expected",
        ]
    )


# -- the tests ----------------------------------------------------------------------------------


def test_matrix_subjects_by_actions(world: World, report: MatrixReport) -> None:
    started = time.monotonic()
    expected = {s: row for s, (_d, row) in EXPECTED.items()}
    kubectl_rows: dict[str, dict[str, str]] = {}
    python_rows: dict[str, dict[str, str]] = {}
    problems: list[str] = []
    for subject in EXPECTED:
        api = make_client(str(world.kubeconfigs[subject]))
        kubectl_rows[subject], python_rows[subject] = {}, {}
        for action in ACTIONS:
            k_out, k_msg = run_kubectl(world, subject, action)
            p_out, p_msg = run_python(world, subject, action, api)
            kubectl_rows[subject][action.column] = k_out
            python_rows[subject][action.column] = p_out
            for via, out, msg in (("kubectl", k_out, k_msg), ("python", p_out, p_msg)):
                bad = check_message(world, subject, out, msg)
                if bad:
                    problems.append(f"{via} {action.column}: {bad}")
        api.close()
    text = "\n".join(
        [
            f"owners matrix in {world.ns} (kubectl; the Python client agrees unless listed below)",
            render(kubectl_rows, expected),
            "",
            *(f"{s:<12} {d}" for s, (d, _r) in EXPECTED.items()),
            f"({len(EXPECTED) * len(ACTIONS) * 2} requests in {time.monotonic() - started:.1f}s)",
        ]
    )
    diff_py = [
        f"python {s} {c}: {python_rows[s][c]} != kubectl {kubectl_rows[s][c]}"
        for s in EXPECTED
        for c in python_rows[s]
        if python_rows[s][c] != kubectl_rows[s][c]
    ]
    report.text = text + ("\n" + "\n".join(diff_py) if diff_py else "")
    print(report.text)
    assert kubectl_rows == expected, report.text
    assert python_rows == expected, report.text
    assert not problems, "\n".join(problems)


def test_policy_denials_read_well_in_kubectl_and_python(world: World) -> None:
    """The exact words a person sees, through both clients."""
    wendy, user = world.kubeconfigs["wildcard"], world.usernames["wildcard"]
    owners = f"User {world.usernames['owner-user']}, Group team-a-owners-"
    out = world.cluster.cp.kubectl(
        "delete", SPACES, "secrets", "-n", world.ns, DRY, kubeconfig=wendy, check=False
    )
    assert out.returncode != 0
    assert f"only owners of space {world.ns} ({owners}" in out.stderr, out.stderr
    assert f"may delete its SpaceSecrets secrets; {user} is not one" in out.stderr, out.stderr

    api = make_client(str(wendy))
    with pytest.raises(kubernetes.client.ApiException) as err:
        _co(api).create_namespaced_custom_object(
            GROUP, VERSION, world.ns, FLOWS, _new_flow(world), dry_run="All"
        )
    api.close()
    assert err.value.status == 403
    message = json.loads(err.value.body)["message"]
    assert f"only owners of space {world.ns} ({owners}" in message, message
    assert f"may create FlowSecretSyncs; {user} is not one" in message, message

    out = world.cluster.cp.kubectl(
        "create",
        DRY,
        "-f",
        "-",
        kubeconfig=wendy,
        check=False,
        input=yaml.safe_dump(_second_space(world)),
    )
    assert f"namespace {world.ns} already has the SpaceSecrets secrets; only owners" in out.stderr


def test_owner_of_another_space_manages_only_that_one(world: World) -> None:
    oscar = world.kubeconfigs["other-owner"]
    wait_for(
        "oscar's owner binding",
        lambda: (
            world.cluster.cp.kubectl(
                "patch",
                SPACES,
                "secrets",
                "-n",
                world.other_ns,
                DRY,
                "--type=merge",
                "-p",
                json.dumps(LABEL_PATCH),
                kubeconfig=oscar,
                check=False,
            ).returncode
            == 0
        ),
    )
    doc = flow_doc(world.other_ns, "f", "t")
    assert (
        world.cluster.cp.kubectl(
            "create", DRY, "-f", "-", input=yaml.safe_dump(doc), kubeconfig=oscar, check=False
        ).returncode
        == 0
    )


def _can(
    cluster: LocalCluster, kubeconfig: Path, *args: str, stdin: str | None = None
) -> tuple[bool, str]:
    """Run kubectl as someone: (allowed, what the API server said)."""
    out = cluster.cp.kubectl(*args, kubeconfig=kubeconfig, input=stdin, check=False)
    return out.returncode == 0, out.stderr


def denied(result: tuple[bool, str]) -> str:
    """The message of a request that must have been refused."""
    ok, err = result
    assert not ok, "the request was allowed"
    return err


def test_owners_added_or_removed_gain_or_lose_access_at_once(
    cluster: LocalCluster, kube: Kube, operator: OperatorProcess, ns: str
) -> None:
    cp = cluster.cp
    alice, nina = f"alice-{ns}", f"nina-{ns}"
    alice_kc, nina_kc = cp.kubeconfig_for(alice), cp.kubeconfig_for(nina)
    cluster.apply([space_doc(ns, "secrets", [{"kind": "User", "name": alice}])])
    wait_for("alice's binding", lambda: owners_binding_subjects(kube, ns) == {("User", alice)})
    nina_api = _co(make_client(str(nina_kc)))

    def nina_patch_outcome() -> str:
        """Through the Python client (no GET first): who, if anyone, refuses nina's patch."""
        try:
            nina_api.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                ns,
                SPACES,
                "secrets",
                LABEL_PATCH,
                dry_run="All",
                _content_type=MERGE,
            )
        except kubernetes.client.ApiException as exc:
            return classify(str(json.loads(exc.body)["message"]))
        return ALLOW

    def patch_space(kc: Path, body: dict[str, Any], dry: bool = True) -> tuple[bool, str]:
        extra = [DRY] if dry else []
        return _can(
            cluster,
            kc,
            "patch",
            SPACES,
            "secrets",
            "-n",
            ns,
            *extra,
            "--type=merge",
            "-p",
            json.dumps(body),
        )

    def create_flow(kc: Path) -> tuple[bool, str]:
        return _can(
            cluster, kc, "create", DRY, "-f", "-", stdin=yaml.safe_dump(flow_doc(ns, "f", "t"))
        )

    assert " cannot " in denied(patch_space(nina_kc, LABEL_PATCH))  # RBAC: kubectl gets first

    # alice adds nina: the policy knows at once (it reads the stored object), RBAC as soon as
    # the operator has rewritten the RoleBinding
    both = [{"kind": "User", "name": alice}, {"kind": "User", "name": nina}]
    ok, err = patch_space(alice_kc, {"spec": {"owners": both}}, dry=False)
    assert ok, err
    # the policy already counts nina (RBAC may not yet): never a policy denial from here on
    assert nina_patch_outcome() in {ALLOW, RBAC}
    wait_for(
        "nina in the owners RoleBinding",
        lambda: owners_binding_subjects(kube, ns) == {("User", alice), ("User", nina)},
        timeout=15,
    )
    assert patch_space(nina_kc, LABEL_PATCH)[0]
    assert nina_patch_outcome() == ALLOW
    wait_for("nina may create a flow", lambda: create_flow(nina_kc)[0], timeout=10)

    # nina removes alice: alice is out of the policy with the very next request, while the
    # RoleBinding may still name her
    ok, err = patch_space(
        nina_kc, {"spec": {"owners": [{"kind": "User", "name": nina}]}}, dry=False
    )
    assert ok, err
    ok, err = patch_space(alice_kc, LABEL_PATCH)
    assert not ok, "a removed owner could still edit the space"
    assert ("only owners of space" in err and f"(User {nina})" in err) or " cannot " in err, err
    wait_for(
        "alice out of the owners RoleBinding",
        lambda: owners_binding_subjects(kube, ns) == {("User", nina)},
        timeout=15,
    )
    assert "cannot create" in denied(create_flow(alice_kc))
    assert patch_space(nina_kc, LABEL_PATCH)[0]


def test_flow_onto_an_unowned_secret_is_admitted_but_left_untouched(
    cluster: LocalCluster, kube: Kube, operator: OperatorProcess, ns: str
) -> None:
    cp = cluster.cp
    alice = f"alice-{ns}"
    alice_kc = cp.kubeconfig_for(alice)
    space = Space(cluster, kube, ns, owners=[{"kind": "User", "name": alice}])
    space.apply({"TOKEN": "s3cret"})
    space.wait_version(1)
    cluster.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "db-password", "namespace": ns},
                "stringData": {"password": "hunter2"},
            }
        ]
    )
    before = kube.get("Secret", ns, "db-password")
    wait_for("alice's binding", lambda: owners_binding_subjects(kube, ns) == {("User", alice)})

    def create() -> bool:
        return (
            cp.kubectl(
                "create",
                "-f",
                "-",
                input=yaml.safe_dump(flow_doc(ns, "grab", "db-password")),
                kubeconfig=alice_kc,
                check=False,
            ).returncode
            == 0
        )

    wait_for("alice's FlowSecretSync to be admitted", create, timeout=10)
    cond = space.wait_condition("Synced", "False", "TargetNotOwned", name="grab", plural=FLOWS)
    assert "Secret db-password exists and is not managed by spacesecrets" in cond["message"]
    assert "left untouched" in cond["message"]
    after = kube.get("Secret", ns, "db-password")
    assert after["data"] == before["data"]
    assert after["metadata"].get("ownerReferences") == before["metadata"].get("ownerReferences")
    assert after["metadata"].get("labels") == before["metadata"].get("labels")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def test_flow_target_is_always_in_the_flows_own_namespace(world: World) -> None:
    """A FlowSecretSync names its target without a namespace: there is none to point elsewhere."""
    doc = _new_flow(world)
    doc["spec"]["target"]["namespace"] = world.other_ns
    err = denied(
        _can(
            world.cluster,
            world.kubeconfigs["owner-user"],
            "create",
            DRY,
            "-f",
            "-",
            stdin=yaml.safe_dump(doc),
        )
    )
    assert 'unknown field "spec.target.namespace"' in err, err


def test_operator_rbac_binds_only_the_owner_role(world: World) -> None:
    """Even the operator's own permissions cannot hand out more than `spacesecrets-owner`."""
    cp, probe = world.cluster.cp, f"operator-probe-{world.ns}"
    role = operator_role()
    role["metadata"]["name"] = f"owners-test-{role['metadata']['name']}"
    world.cluster.apply([role])
    cp.kubectl(
        "create",
        "clusterrolebinding",
        probe,
        f"--clusterrole={role['metadata']['name']}",
        f"--user={probe}",
    )
    kc = cp.kubeconfig_for(probe)
    try:
        for granted, ok in ((OWNER_CLUSTER_ROLE, True), ("admin", False), ("edit", False)):
            done, err = _can(
                world.cluster,
                kc,
                "create",
                "rolebinding",
                f"probe-{granted}",
                "-n",
                world.ns,
                DRY,
                f"--clusterrole={granted}",
                f"--user={probe}",
            )
            assert done is ok, f"{granted}: {err}"
    finally:
        cp.kubectl("delete", "clusterrolebinding", probe, check=False)
        cp.kubectl("delete", "clusterrole", role["metadata"]["name"], check=False)


def test_policy_holds_with_the_operator_stopped(fresh_cluster: Callable[[], LocalCluster]) -> None:
    cluster = fresh_cluster()
    cp = cluster.cp
    kube = kube_for(str(cluster.kubeconfig))
    op = cluster.start_operator(env=FAST_ENV)
    ns = "team-a"
    cp.kubectl("create", "namespace", ns)
    alice, bob, wendy = (cp.kubeconfig_for(u) for u in ("alice", "bob", "wendy"))
    cluster.apply([wildcard_role(), space_doc(ns, "secrets", [{"kind": "User", "name": "alice"}])])
    cp.kubectl(
        "create", "rolebinding", "wendy", "-n", ns, f"--clusterrole={WILDCARD_ROLE}", "--user=wendy"
    )
    wait_for("alice's binding", lambda: owners_binding_subjects(kube, ns) == {("User", "alice")})
    op.stop()
    assert not op.alive()

    def kubectl(kc: Path, *args: str, doc: dict[str, Any] | None = None) -> tuple[bool, str]:
        return _can(cluster, kc, *args, stdin=yaml.safe_dump(doc) if doc else None)

    flow = flow_doc(ns, "f", "t")
    err = denied(kubectl(wendy, "delete", SPACES, "secrets", "-n", ns))
    assert "only owners of space team-a (User alice)" in err, err
    err = denied(kubectl(wendy, "create", "-f", "-", doc=flow))
    assert "only owners of space team-a (User alice)" in err, err
    err = denied(
        kubectl(
            wendy,
            "patch",
            SPACES,
            "secrets",
            "-n",
            ns,
            "--type=merge",
            "-p",
            json.dumps({"spec": {"owners": [{"kind": "User", "name": "wendy"}]}}),
        )
    )
    assert "wendy is not one" in err, err
    wait_for(
        "alice to create a flow",
        lambda: kubectl(alice, "create", "-f", "-", doc=flow)[0],
        timeout=10,
    )

    # alice hands the space to bob while nobody runs the operator: the RoleBinding still names
    # alice (and not bob), yet the policy follows spec.owners from the very next request
    ok, err = kubectl(
        alice,
        "patch",
        SPACES,
        "secrets",
        "-n",
        ns,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"owners": [{"kind": "User", "name": "bob"}]}}),
    )
    assert ok, err
    assert owners_binding_subjects(kube, ns) == {("User", "alice")}

    # (the flows policy reads the space from the API server's watch cache: a moment, not an
    # operator, away)
    def refused() -> str:
        ok, err = kubectl(alice, "delete", FLOWS, "f", "-n", ns, DRY)
        return "" if ok else err

    err = wait_for("alice's flow delete to be refused", refused, timeout=5)
    assert "only owners of space team-a (User bob)" in err, err
    err = denied(kubectl(alice, "delete", SPACES, "secrets", "-n", ns))
    assert "alice is not one" in err, err
    # RBAC: nobody has bound bob yet, and the policy alone grants nothing
    assert "cannot delete" in denied(kubectl(bob, "delete", FLOWS, "f", "-n", ns))


def test_no_space_no_owners_rbac_alone_decides(world: World) -> None:
    """Without a SpaceSecrets a namespace has no owners and no secrets to protect: RBAC alone
    decides about flows there (the operator reports them SpaceMissing). The API server resolves a
    policy's parameters before its exemptions, so refusing here would also refuse the operator
    and the namespace controller."""
    cp, ns = world.cluster.cp, f"{world.ns}-empty"
    cp.kubectl("create", "namespace", ns)
    try:
        cp.kubectl(
            "create",
            "rolebinding",
            "wildcard",
            "-n",
            ns,
            f"--clusterrole={WILDCARD_ROLE}",
            f"--user={world.usernames['wildcard']}",
        )

        def wildcard_creates(doc: dict[str, Any]) -> tuple[bool, str]:
            return _can(
                world.cluster,
                world.kubeconfigs["wildcard"],
                "create",
                DRY,
                "-f",
                "-",
                stdin=yaml.safe_dump(doc),
            )

        ok, err = wildcard_creates(flow_doc(ns, "f", "t"))
        assert ok, err
        # cluster admins too (the case the exemptions cannot reach)
        assert (
            cp.kubectl(
                "create", DRY, "-f", "-", input=yaml.safe_dump(flow_doc(ns, "f", "t")), check=False
            ).returncode
            == 0
        )
        # the first SpaceSecrets, though, is anyone's whom RBAC lets create it
        assert wildcard_creates(
            space_doc(ns, "secrets", [{"kind": "User", "name": world.usernames["wildcard"]}])
        )[0]
    finally:
        cp.kubectl("delete", "namespace", ns, "--wait=false", check=False)
