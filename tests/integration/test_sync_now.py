"""Sync now against the real control plane: an owner's request (the annotation
spacesecrets.io/sync-now, set by `spacesecrets sync` or by hand or GitOps) brings a flow that waits
for its tick to the current version at once, is recorded in status.syncNow, and is handled once:
after a restart too, and in the manifest a flow is created with."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import yaml
from tests.support.audit import audit_mark, audit_writes, described
from tests.support.cli import cli
from tests.support.metrics import reconciles
from tests.support.space import Space

from spacesecrets.core import provenance
from spacesecrets.devtools.dev import LocalCluster, wait_for
from spacesecrets.kube.factory import kube_for
from spacesecrets.names import SYNC_NOW

VALUE_1, VALUE_2 = "sync-now-value-one-4e1a", "sync-now-value-two-9c3b"
WAITING = {"autosync": "24h", "syncOnSave": False}  # its next tick is hours away: only a request


def apply(space: Space, doc: dict[str, Any]) -> None:
    space.cluster.cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))


def flow(space: Space, name: str) -> dict[str, Any]:
    return space.kube.get_custom("flowsecretsyncs", space.ns, name)


def annotate(space: Space, name: str, value: str) -> None:
    space.cluster.cp.kubectl(
        "annotate", "flowsecretsync", name, "-n", space.ns, f"{SYNC_NOW}={value}", "--overwrite"
    )


def handled(space: Space, name: str, value: str, timeout: float = 30) -> dict[str, Any]:
    """The flow's status once the operator has recorded the request `value` as handled."""

    def done() -> dict[str, Any] | None:
        status = flow(space, name).get("status") or {}
        return status if (status.get("syncNow") or {}).get("requested") == value else None

    return dict(wait_for(f"{name} to handle the sync request {value}", done, timeout))


def a_space_a_version_ahead(space: Space, *names: str) -> None:
    """Flows issued version 1, waiting for their tick while the space is at version 2."""
    space.apply({"A": VALUE_1})
    space.wait_version(1)
    for name in names:
        apply(space, space.flow(name, f"{name}-secrets", **WAITING))
        space.wait_condition("Synced", "True", name=name, plural="flowsecretsyncs")
    space.apply({"A": VALUE_2})
    space.wait_version(2)


def test_a_request_brings_a_waiting_flow_to_the_current_version_at_once(space: Space) -> None:
    """24h autosync, no sync on save: only the request moves it, at once, with an Event naming
    the flow and the version, and without touching who authorized the flow."""
    a_space_a_version_ahead(space, "slow")
    assert flow(space, "slow")["status"]["syncedVersion"] == 1
    stamp_before = flow(space, "slow")["metadata"]["annotations"][provenance.AUTHORIZED_BY]

    annotate(space, "slow", "2026-12-02T01:02:03.456Z")
    status = handled(space, "slow", "2026-12-02T01:02:03.456Z", timeout=10)
    assert status["syncNow"]["version"] == 2 and status["syncedVersion"] == 2
    assert status["syncNow"]["at"] >= status["issuedAt"]
    assert space.target_documents("slow-secrets")["SECRETS"] == {"A": VALUE_2}
    event = wait_for("the SyncedNow Event", lambda: space.events("SyncedNow"))[0]
    assert event["type"] == "Normal"
    assert "slow" in event["message"] and "version 2" in event["message"]
    assert VALUE_2 not in json.dumps(space.events())
    assert flow(space, "slow")["metadata"]["annotations"][provenance.AUTHORIZED_BY] == stamp_before

    # handled: the same value again, or any other event of the flow, writes nothing to it (a
    # bounded window, to prove that nothing happens)
    start = audit_mark(space.cluster, space.ns)
    annotate(space, "slow", "2026-12-02T01:02:03.456Z")
    space.cluster.cp.kubectl("label", "flowsecretsync", "slow", "-n", space.ns, "team=a")
    space.apply({"A": VALUE_2, "B": "x"})
    space.wait_version(3)
    window_end = time.time() + 2
    wait_for("the window to pass", lambda: time.time() > window_end)
    audit_mark(space.cluster, space.ns)
    writes = [
        w
        for w in audit_writes(space.cluster.cp.audit_log, start, space.ns)
        if str((w.get("objectRef") or {}).get("name", "")).startswith("slow")
    ]
    assert writes == [], described(writes)
    assert flow(space, "slow")["status"]["syncedVersion"] == 2  # version 3 waits for its tick
    assert len(space.events("SyncedNow")) == 1


def test_a_flow_created_with_a_request_handles_it_once(space: Space) -> None:
    """GitOps: the annotation in the manifest a flow is created with is a request too."""
    space.apply({"A": VALUE_1})
    space.wait_version(1)
    doc = space.flow("born", "born-secrets", **WAITING)
    doc["metadata"]["annotations"] = {SYNC_NOW: "from-git-1"}
    apply(space, doc)
    status = handled(space, "born", "from-git-1")
    assert status["syncNow"]["version"] == 1 and status["syncedVersion"] == 1
    # re-applying the same manifest is no new request
    apply(space, doc)
    space.apply({"A": VALUE_2})
    space.wait_version(2)
    doc["metadata"]["annotations"] = {SYNC_NOW: "from-git-2"}
    apply(space, doc)
    assert handled(space, "born", "from-git-2")["syncNow"]["version"] == 2
    assert len(space.events("SyncedNow")) == 2


def test_the_cli_syncs_named_flows_or_all_and_prints_what_each_holds(space: Space) -> None:
    a_space_a_version_ahead(space, "one", "two")
    admin = space.cluster.kubeconfig
    out = cli(admin, "sync", "one", "-n", space.ns)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "flowsecretsync one synced now: holds version 2"
    assert flow(space, "two")["status"]["syncedVersion"] == 1
    stamp = flow(space, "one")["metadata"]["annotations"][SYNC_NOW]
    assert stamp.endswith("Z") and len(stamp) == len("2026-12-02T01:02:03.456Z")

    space.apply({"A": VALUE_1})
    space.wait_version(3)
    out = cli(admin, "sync", "--all", "-n", space.ns)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "flowsecretsync one synced now: holds version 3",
        "flowsecretsync two synced now: holds version 3",
    ]
    assert VALUE_1 not in out.stdout + out.stderr

    no_wait = cli(admin, "sync", "two", "--no-wait", "-n", space.ns)
    assert no_wait.returncode == 0 and "sync requested" in no_wait.stdout

    for args, phrase in (
        (("sync",), "name the flows to sync, or give --all"),
        (("sync", "one", "--all"), "name the flows to sync, or give --all"),
        (("sync", "nope"), "not found"),
    ):
        result = cli(admin, *args, "-n", space.ns)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode != 0 and len(lines) == 1 and phrase in lines[0], result.stderr


def test_a_refused_flow_has_its_request_handled_and_the_cli_says_why(space: Space) -> None:
    """A flow that may not be synced reports as before; its request is marked handled (so no
    restart tries it again), with the version it still holds, and `sync` exits non-zero."""
    space.apply({"A": VALUE_1})
    space.wait_version(1)
    space.cluster.cp.kubectl(
        "create", "secret", "generic", "theirs", "-n", space.ns, "--from-literal=x=y"
    )
    apply(space, space.flow("grabby", "theirs", **WAITING))
    space.wait_condition("Synced", "False", "TargetNotOwned", "grabby", "flowsecretsyncs")
    out = cli(space.cluster.kubeconfig, "sync", "grabby", "-n", space.ns)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "flowsecretsync grabby not synced, holds no version (TargetNotOwned" in out.stdout
    assert "not synced: grabby" in out.stderr
    status = flow(space, "grabby")["status"]
    assert "version" not in status["syncNow"]
    assert space.condition("Synced", "grabby", "flowsecretsyncs")["reason"] == "TargetNotOwned"
    assert space.events("SyncedNow") == []
    assert space.kube.get("Secret", space.ns, "theirs")["data"].keys() == {"x"}


def test_requests_made_while_the_operator_was_down_are_honoured_and_a_restart_writes_nothing(
    fresh_cluster: Callable[[], LocalCluster],
) -> None:
    """Without the request a restart keeps a waiting flow at the version it was issued; with it
    (annotation != status.syncNow.requested) the new process syncs it on its first pass. A second
    restart over handled requests (synced and refused ones) makes no write at all."""
    cluster = fresh_cluster()
    env = {"SPACESECRETS_AUTOSYNC_SCALE": "0.05"}
    op = cluster.start_operator(env=env)
    cluster.cp.kubectl("create", "namespace", "team-s")
    space = Space(cluster, kube_for(str(cluster.kubeconfig)), "team-s")
    a_space_a_version_ahead(space, "asked", "unasked")
    cluster.cp.kubectl(
        "create", "secret", "generic", "theirs", "-n", space.ns, "--from-literal=x=y"
    )
    refused = space.flow("grabby", "theirs", **WAITING)
    refused["metadata"]["annotations"] = {SYNC_NOW: "r-1"}
    apply(space, refused)
    handled(space, "grabby", "r-1")
    op.stop()

    annotate(space, "asked", "2026-12-02T01:02:03.456Z")
    op = cluster.start_operator(env=env)
    status = handled(space, "asked", "2026-12-02T01:02:03.456Z")
    assert status["syncedVersion"] == 2 and status["syncNow"]["version"] == 2
    assert space.target_documents("asked-secrets")["SECRETS"] == {"A": VALUE_2}
    wait_for("every flow reconciled", lambda: reconciles(op.metrics(), "FlowSecretSync") >= 3)
    assert flow(space, "unasked")["status"]["syncedVersion"] == 1  # keeps what it was issued
    op.stop()
    events = len(space.events())

    start = audit_mark(cluster)
    op = cluster.start_operator(env=env)
    wait_for("every flow reconciled", lambda: reconciles(op.metrics(), "FlowSecretSync") >= 3)
    audit_mark(cluster)
    writes = audit_writes(cluster.cp.audit_log, start)
    assert writes == [], described(writes)
    assert len(space.events()) == events
    assert VALUE_2 not in op.log_text()
