"""FlowSecretSync against the real control plane: projection, autosync ticks, sync on save,
ownership, drift, garbage collection, and the zero-write rule read from the audit log."""

from __future__ import annotations

import base64
import json
import time

import yaml
from tests.support.audit import audit_mark, audit_writes, described
from tests.support.metrics import sample
from tests.support.space import Space

from spacesecrets.core import schedule
from spacesecrets.core.projection import decoded_documents
from spacesecrets.devtools.dev import OperatorProcess, wait_for

SCALE = 0.05  # the shared operator's autosync scale (conftest.FAST_ENV)


def apply(space: Space, doc: dict) -> None:
    space.cluster.cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))


def flow_status(space: Space, name: str) -> dict:
    return space.kube.get_custom("flowsecretsyncs", space.ns, name).get("status") or {}


def wait_synced(space: Space, name: str, version: int, timeout: float = 30) -> dict:
    return dict(
        wait_for(
            f"{name} synced at version {version}",
            lambda: (
                (st := flow_status(space, name)).get("syncedVersion") == version
                and any(
                    c["type"] == "Synced" and c["status"] == "True"
                    for c in st.get("conditions", [])
                )
                and st
            ),
            timeout,
        )
    )


def target_version(space: Space, target: str, kind: str = "Secret") -> int:
    return int(space.target_documents(target, kind)["SECRETS_METADATA"]["version"])


def test_projection_matches_the_contract(space: Space) -> None:
    space.apply({"PRODUCT_A_API_HOST": "api.example.com", "PRODUCT_A_CONFIG": {"retries": 3}})
    space.wait_version(1)
    apply(space, space.flow("orders-flow", "orders-flow-secrets"))
    status = wait_synced(space, "orders-flow", 1)
    docs = space.target_documents("orders-flow-secrets")
    assert docs["SECRETS"] == {
        "PRODUCT_A_API_HOST": "api.example.com",
        "PRODUCT_A_CONFIG": {"retries": 3},
    }
    meta = docs["SECRETS_METADATA"]
    space_status = space.get()["status"]
    assert meta["space"] == space.ns and meta["version"] == 1
    assert meta["createdAt"] == space_status["createdAt"]
    assert meta["updatedAt"] == space_status["updatedAt"]
    assert meta["issuedAt"] == status["issuedAt"]
    assert (meta["autosync"], meta["syncOnSave"]) == ("1m", True)
    assert meta["keys"]["PRODUCT_A_CONFIG"] == {
        "format": "json",
        "version": 1,
        "updatedAt": space_status["updatedAt"],
    }
    target = space.kube.get("Secret", space.ns, "orders-flow-secrets")
    assert target["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "spacesecrets"
    assert target["metadata"]["annotations"]["spacesecrets.io/version"] == "1"
    owner = target["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == (
        "FlowSecretSync",
        "orders-flow",
        True,
    )
    cond = space.condition("Synced", "orders-flow", "flowsecretsyncs")
    assert cond["message"] == "🆗 Synced"
    header = space.cluster.cp.kubectl("get", "fss", "-n", space.ns).stdout.splitlines()[0]
    assert header.split() == ["NAME", "TARGET", "AUTOSYNC", "VERSION", "ISSUED", "SYNCED"]


def test_key_subset_and_missing_key(space: Space) -> None:
    space.apply({"A": "1", "B": "2"})
    space.wait_version(1)
    apply(space, space.flow("subset", "subset-secrets", keys=["B"]))
    wait_synced(space, "subset", 1)
    assert space.target_documents("subset-secrets")["SECRETS"] == {"B": "2"}
    assert list(space.target_documents("subset-secrets")["SECRETS_METADATA"]["keys"]) == ["B"]
    apply(space, space.flow("missing", "missing-secrets", keys=["B", "NOPE"]))
    cond = space.wait_condition("Synced", "False", "MissingKey", "missing", "flowsecretsyncs")
    assert "NOPE" in cond["message"]
    assert flow_status(space, "missing").get("syncedVersion") is None
    assert wait_for("the MissingKey event", lambda: space.events("MissingKey"))


def _wait_past_tick(uid: str, period: float, margin: float) -> None:
    """Make sure the next tick of `uid` is at least `margin` seconds away."""
    now = time.time()
    nxt = schedule.next_tick(uid, period, now)
    if nxt - now < margin:
        wait_for("the tick to pass", lambda: time.time() > nxt + 0.5, timeout=margin + 5)


def test_autosync_tick_brings_the_new_version_and_slow_flows_wait(space: Space) -> None:
    space.apply({"HOST": "v1.example.com"})
    space.wait_version(1)
    apply(space, space.flow("fast", "fast-secrets"))  # 1m, scaled to 3 s
    apply(space, space.flow("slow", "slow-secrets", autosync="24h"))  # scaled to 72 min
    wait_synced(space, "fast", 1)
    wait_synced(space, "slow", 1)
    slow_uid = space.kube.get_custom("flowsecretsyncs", space.ns, "slow")["metadata"]["uid"]
    _wait_past_tick(slow_uid, schedule.period_seconds("24h", SCALE), 30)

    space.apply({"HOST": "v2.example.com"})
    space.wait_version(2)
    status = wait_synced(space, "fast", 2, timeout=3 / SCALE * SCALE + 10)
    assert space.target_documents("fast-secrets")["SECRETS"] == {"HOST": "v2.example.com"}
    assert "behind" not in status  # derived where it is shown, never stored
    # between its ticks a flow keeps the version it was issued
    assert target_version(space, "slow-secrets") == 1
    slow = flow_status(space, "slow")
    assert slow["syncedVersion"] == 1
    operator = space.cluster.operators[0]
    labels = {"namespace": space.ns, "flow": "slow"}
    wait_for(
        "slow reported one version behind",
        lambda: sample(operator.metrics(), "spacesecrets_flow_versions_behind", labels) == 1,
    )
    # a save of the FlowSecretSync (any change of it) syncs at once
    apply(space, space.flow("slow", "slow-secrets", autosync="24h", syncOnSave=True, keys=["HOST"]))
    wait_synced(space, "slow", 2, timeout=15)


def test_sync_on_save_of_the_flow_workload(space: Space) -> None:
    space.apply({"HOST": "v1"})
    space.wait_version(1)
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "orders-flow", "namespace": space.ns},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "orders"}},
            "template": {
                "metadata": {"labels": {"app": "orders"}},
                "spec": {"containers": [{"name": "node-red", "image": "nodered/node-red:4.1"}]},
            },
        },
    }
    apply(space, deployment)
    apply(
        space,
        space.flow(
            "orders",
            "orders-secrets",
            autosync="24h",
            flowRef={"kind": "Deployment", "name": "orders-flow"},
        ),
    )
    wait_synced(space, "orders", 1)
    uid = space.kube.get_custom("flowsecretsyncs", space.ns, "orders")["metadata"]["uid"]
    _wait_past_tick(uid, schedule.period_seconds("24h", SCALE), 30)
    space.apply({"HOST": "v2"})
    space.wait_version(2)
    assert flow_status(space, "orders")["syncedVersion"] == 1
    # "save" the flow: a new pod template (what a redeploy does)
    deployment["spec"]["template"]["metadata"]["annotations"] = {"redeployed": "1"}
    apply(space, deployment)
    wait_synced(space, "orders", 2, timeout=15)
    assert space.target_documents("orders-secrets")["SECRETS"] == {"HOST": "v2"}


def test_foreign_target_is_never_overwritten(space: Space) -> None:
    space.apply({"A": "1"})
    space.wait_version(1)
    space.cluster.cp.kubectl(
        "create",
        "secret",
        "generic",
        "hand-made",
        "-n",
        space.ns,
        "--from-literal=password=do-not-touch",
    )
    apply(space, space.flow("intruder", "hand-made"))
    cond = space.wait_condition("Synced", "False", "TargetNotOwned", "intruder", "flowsecretsyncs")
    assert "hand-made" in cond["message"]
    secret = space.kube.get("Secret", space.ns, "hand-made")
    assert list(secret["data"]) == ["password"]
    assert "labels" not in secret["metadata"] or not secret["metadata"]["labels"]
    assert wait_for("the warning", lambda: space.events("TargetNotOwned"))[0]["type"] == "Warning"


def test_two_flows_on_one_target_the_later_conflicts(space: Space) -> None:
    space.apply({"A": "1"})
    space.wait_version(1)
    apply(space, space.flow("first", "shared-secrets"))
    wait_synced(space, "first", 1)
    apply(space, space.flow("second", "shared-secrets"))
    cond = space.wait_condition("Synced", "False", "Conflict", "second", "flowsecretsyncs")
    assert "first" in cond["message"]
    owner = space.kube.get("Secret", space.ns, "shared-secrets")["metadata"]["ownerReferences"]
    assert [o["name"] for o in owner] == ["first"]


def test_drift_is_restored_and_deletion_collects_the_target(space: Space) -> None:
    space.apply({"A": "original"})
    space.wait_version(1)
    apply(space, space.flow("guarded", "guarded-secrets"))
    wait_synced(space, "guarded", 1)
    space.cluster.cp.kubectl(
        "patch",
        "secret",
        "guarded-secrets",
        "-n",
        space.ns,
        "--type=merge",
        "-p",
        json.dumps({"stringData": {"SECRETS": '{"A": "forged"}'}}),
    )
    wait_for(
        "the edit to be undone",
        lambda: space.target_documents("guarded-secrets")["SECRETS"] == {"A": "original"},
        timeout=15,
    )
    space.cluster.cp.kubectl("delete", "secret", "guarded-secrets", "-n", space.ns)
    wait_for(
        "the target to be recreated",
        lambda: space.target_documents("guarded-secrets")["SECRETS"] == {"A": "original"},
        timeout=15,
    )
    assert space.events("TargetRestored")
    # deleting the FlowSecretSync removes its target through garbage collection
    space.cluster.cp.kubectl("delete", "fss", "guarded", "-n", space.ns)
    wait_for(
        "garbage collection",
        lambda: (
            space.cluster.cp.kubectl(
                "get", "secret", "guarded-secrets", "-n", space.ns, check=False
            ).returncode
            != 0
        ),
        timeout=30,
    )


def test_deleted_space_leaves_flows_their_last_projection(space: Space) -> None:
    space.apply({"A": "kept"})
    space.wait_version(1)
    apply(space, space.flow("orphan", "orphan-secrets"))
    wait_synced(space, "orphan", 1)
    space.cluster.cp.kubectl("delete", "spacesecrets", "secrets", "-n", space.ns)
    cond = space.wait_condition("Synced", "False", "SpaceMissing", "orphan", "flowsecretsyncs")
    assert space.ns in cond["message"]
    assert space.target_documents("orphan-secrets")["SECRETS"] == {"A": "kept"}
    # with its space gone first, the namespace can still be deleted: the operator releases the
    # flow's finalizer and the namespace controller removes the flow
    space.cluster.cp.kubectl("delete", "namespace", space.ns, "--wait=false")
    wait_for(
        "the namespace to be deleted",
        lambda: space.cluster.cp.kubectl("get", "namespace", space.ns, check=False).returncode != 0,
        timeout=60,
    )


def test_configmap_target_is_flagged(space: Space) -> None:
    space.apply({"A": "1"})
    space.wait_version(1)
    doc = space.flow("cm", "cm-secrets")
    doc["spec"]["target"]["kind"] = "ConfigMap"
    apply(space, doc)
    wait_synced(space, "cm", 1)
    assert space.target_documents("cm-secrets", "ConfigMap")["SECRETS"] == {"A": "1"}
    cond = space.condition("ConfigMapTarget", "cm", "flowsecretsyncs")
    assert cond["status"] == "True"
    warning = wait_for("the warning", lambda: space.events("ConfigMapTarget"))[0]
    assert warning["type"] == "Warning"


def test_idle_ticks_make_no_api_writes(space: Space) -> None:
    """The audit log proves it: several autosync ticks with no change, zero operator writes."""
    space.apply({"A": "1", "B": {"x": 1}})
    space.wait_version(1)
    for i in range(3):
        apply(space, space.flow(f"idle-{i}", f"idle-{i}-secrets"))
    for i in range(3):
        wait_synced(space, f"idle-{i}", 1)
    start = audit_mark(space.cluster, space.ns)
    period = schedule.period_seconds("1m", SCALE)
    window_end = time.time() + 4 * period  # at least three ticks of every flow
    wait_for("several ticks", lambda: time.time() > window_end, timeout=4 * period + 5)
    audit_mark(space.cluster, space.ns)
    writes = audit_writes(space.cluster.cp.audit_log, start, space.ns)
    assert writes == [], described(writes)
    # and a real change is still delivered by the next tick
    space.apply({"A": "2", "B": {"x": 1}})
    space.wait_version(2)
    for i in range(3):
        wait_synced(space, f"idle-{i}", 2, timeout=15)


RETRY_SECONDS = 30  # the longest a retry of a failed reconcile ever waits (controller)


def _quiet_window(space: Space, seconds: float) -> list[dict]:
    """The operator's writes touching this space over the next `seconds`."""
    start = audit_mark(space.cluster, space.ns)
    window_end = time.time() + seconds
    wait_for("the window to pass", lambda: time.time() > window_end, timeout=seconds + 5)
    audit_mark(space.cluster, space.ns)
    return audit_writes(space.cluster.cp.audit_log, start, space.ns)


def test_a_refused_flow_is_reported_once_and_waits_for_a_change(space: Space) -> None:
    """TargetNotOwned is permanent: one condition, one Warning, and no write at the ticks or on a
    retry timer after it; what it waits for (the foreign target gone) lets it sync at its tick."""
    space.apply({"A": "1"})
    space.wait_version(1)
    space.cluster.cp.kubectl(
        "create", "secret", "generic", "theirs", "-n", space.ns, "--from-literal=x=y"
    )
    apply(space, space.flow("grabby", "theirs"))  # 1m: a tick every 3 s
    space.wait_condition("Synced", "False", "TargetNotOwned", "grabby", "flowsecretsyncs")
    wait_for("the warning", lambda: space.events("TargetNotOwned"))
    # longer than the longest retry delay, and a dozen ticks: each one tries the flow again
    writes = _quiet_window(space, RETRY_SECONDS + 4 * schedule.period_seconds("1m", SCALE))
    assert writes == [], described(writes)
    assert len(space.events("TargetNotOwned")) == 1
    space.cluster.cp.kubectl("delete", "secret", "theirs", "-n", space.ns)
    wait_synced(space, "grabby", 1, timeout=15)
    assert space.target_documents("theirs")["SECRETS"] == {"A": "1"}


def test_a_target_made_immutable_is_reported_and_restored_once_deleted(
    space: Space, operator: OperatorProcess
) -> None:
    log_from = len(operator.log_text())
    space.apply({"A": "1"})
    space.wait_version(1)
    apply(space, space.flow("frozen", "frozen-secrets"))
    wait_synced(space, "frozen", 1)
    space.cluster.cp.kubectl(
        "patch", "secret", "frozen-secrets", "-n", space.ns, "-p", '{"immutable": true}'
    )
    space.apply({"A": "2"})
    space.wait_version(2)
    cond = space.wait_condition("Synced", "False", "TargetImmutable", "frozen", "flowsecretsyncs")
    assert "frozen-secrets" in cond["message"]
    warning = wait_for("the warning", lambda: space.events("TargetImmutable"))[0]
    assert warning["type"] == "Warning" and "frozen-secrets" in warning["message"]
    assert flow_status(space, "frozen")["syncedVersion"] == 1  # what the target still holds
    writes = _quiet_window(space, 4 * schedule.period_seconds("1m", SCALE))
    assert writes == [], described(writes)
    assert len(space.events("TargetImmutable")) == 1
    space.cluster.cp.kubectl("delete", "secret", "frozen-secrets", "-n", space.ns)
    wait_synced(space, "frozen", 2, timeout=15)
    assert space.target_documents("frozen-secrets")["SECRETS"] == {"A": "2"}
    assert "Traceback" not in operator.log_text()[log_from:]


def test_a_target_that_does_not_parse_is_restored_with_a_warning(
    space: Space, operator: OperatorProcess
) -> None:
    log_from = len(operator.log_text())
    space.apply({"A": "1"})
    space.wait_version(1)
    apply(space, space.flow("parsed", "parsed-secrets"))
    wait_synced(space, "parsed", 1)
    target = space.kube.get("Secret", space.ns, "parsed-secrets")
    deep = "[" * 100_000  # too deep for any recursive JSON parser
    target["data"]["SECRETS"] = base64.b64encode(deep.encode()).decode()
    space.kube.replace("Secret", space.ns, target)

    def restored() -> bool:
        text = decoded_documents(space.kube.get("Secret", space.ns, "parsed-secrets"))["SECRETS"]
        return not text.startswith("[") and json.loads(text) == {"A": "1"}

    wait_for("the target to be restored", restored, timeout=15)
    warning = wait_for("the warning", lambda: space.events("TargetUnreadable"))[0]
    assert warning["type"] == "Warning" and "parsed-secrets" in warning["message"]
    assert "SECRETS" in warning["message"] and "[[" not in warning["message"]
    assert space.condition("Synced", "parsed", "flowsecretsyncs")["status"] == "True"
    logged = operator.log_text()[log_from:]
    assert "Traceback" not in logged and "RecursionError" not in logged


def test_a_status_stored_after_ours_is_taken_from_the_watch(space: Space) -> None:
    """A killed operator's last status write can be applied after its successor has read the
    flow (so can another shard's, around a handover): the watch brings that status, and the
    operator must not go on believing the flow holds what it wrote itself -- it would never
    sync the flow again. The late write is played with the operator's own credentials: nobody
    else may write a flow's status."""
    space.apply({"A": "one"})
    space.wait_version(1)
    apply(space, space.flow("late", "late-secrets"))
    wait_synced(space, "late", 1)
    space.apply({"A": "two"})
    space.wait_version(2)
    wait_synced(space, "late", 2)  # at its next tick
    space.cluster.cp.kubectl(
        "patch", "flowsecretsyncs", "late", "-n", space.ns, "--subresource=status",
        "--type=merge", "-p", '{"status":{"syncedVersion":1}}',
        kubeconfig=space.cluster.operator_kubeconfig(),
    )  # fmt: skip
    assert flow_status(space, "late")["syncedVersion"] == 1
    wait_synced(space, "late", 2, timeout=20)  # its next tick finds it behind, and says so
    assert target_version(space, "late-secrets") == 2
