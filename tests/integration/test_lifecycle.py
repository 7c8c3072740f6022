"""Private control planes for what the shared operator can't show: the real 1m schedule with
default settings, key rotation and operator restarts over the history store, and a scan for
plaintext in everything the API returns and in the operator's log."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import yaml
from tests.support.audit import audit_mark, audit_writes, described
from tests.support.metrics import reconciles
from tests.support.space import Space

from spacesecrets.core import crypto, schedule
from spacesecrets.core.conditions import parse_rfc3339
from spacesecrets.core.projection import decoded_documents
from spacesecrets.devtools.dev import OPERATOR_NAMESPACE, LocalCluster, wait_for
from spacesecrets.kube.factory import kube_for


def _space(cluster: LocalCluster, ns: str) -> Space:
    cluster.cp.kubectl("create", "namespace", ns)
    return Space(cluster, kube_for(str(cluster.kubeconfig)), ns)


def _apply(space: Space, doc: dict) -> None:
    space.cluster.cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))


def test_real_one_minute_schedule_with_default_settings(
    fresh_cluster: Callable[[], LocalCluster],
) -> None:
    cluster = fresh_cluster()
    cluster.start_operator()  # defaults: 1m is sixty seconds, ConfigMap targets refused
    space = _space(cluster, "team-a")
    space.apply({"HOST": "v1.example.com"})
    space.wait_version(1)
    _apply(space, space.flow("orders", "orders-secrets"))
    wait_for(
        "the first projection",
        lambda: (
            (space.kube.get_custom("flowsecretsyncs", "team-a", "orders").get("status") or {}).get(
                "syncedVersion"
            )
            == 1
        ),
    )
    uid = space.kube.get_custom("flowsecretsyncs", "team-a", "orders")["metadata"]["uid"]

    space.apply({"HOST": "v2.example.com"})
    space.wait_version(2)
    changed_at = time.time()
    tick = schedule.next_tick(uid, 60.0, changed_at)
    if tick - changed_at > 2:  # between ticks the flow keeps the version it was issued
        docs = decoded_documents(space.kube.get("Secret", "team-a", "orders-secrets"))
        assert json.loads(docs["SECRETS_METADATA"])["version"] == 1
    wait_for(
        "the tick",
        lambda: (
            json.loads(
                decoded_documents(space.kube.get("Secret", "team-a", "orders-secrets"))[
                    "SECRETS_METADATA"
                ]
            )["version"]
            == 2
        ),
        timeout=75,
        interval=0.5,
    )
    delivered = time.time()
    assert delivered >= tick - 1.5, f"delivered {tick - delivered:.1f}s before its tick"
    assert delivered <= tick + 10

    cm = space.flow("exposed", "exposed-values")
    cm["spec"]["target"]["kind"] = "ConfigMap"
    _apply(space, cm)
    cond = space.wait_condition(
        "Synced", "False", "ConfigMapNotAllowed", "exposed", "flowsecretsyncs"
    )
    assert "ConfigMap" in cond["message"]
    assert (
        cluster.cp.kubectl(
            "get", "configmap", "exposed-values", "-n", "team-a", check=False
        ).returncode
        != 0
    )


def _history_index(space: Space) -> tuple[str, dict]:
    secret = space.kube.get("Secret", OPERATOR_NAMESPACE, f"history-{space.ns}")
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    return data["datakey"], json.loads(data["index.json"])


def _current_kid(cluster: LocalCluster) -> str:
    return cluster.cp.kubectl(
        "get",
        "configmap",
        "-n",
        OPERATOR_NAMESPACE,
        "spacesecrets-public-keys",
        "-o",
        "jsonpath={.data.current\\.kid}",
        check=False,
    ).stdout


def test_history_survives_rotation_and_restarts(fresh_cluster: Callable[[], LocalCluster]) -> None:
    cluster = fresh_cluster()
    env = {"SPACESECRETS_ROTATION_PERIOD": "4s"}
    op = cluster.start_operator(env=env)
    space = _space(cluster, "team-r")
    old_kid = wait_for("a published key", lambda: _current_kid(cluster))
    old_value = space.sealed("OLD", "sealed-before-rotation")
    space.apply({"OLD": old_value})
    space.wait_version(1)
    old_master = _history_index(space)[0].split(":")[0]

    new_kid = wait_for(
        "a rotation", lambda: (k := _current_kid(cluster)) != old_kid and k, timeout=30
    )
    op.kill()  # SIGKILL: nothing is flushed
    op = cluster.start_operator(env=env)

    # a value sealed under the rotated-out key still opens, beside one sealed under the new key
    space.apply({"OLD": old_value, "NEW": space.sealed("NEW", "sealed-after-rotation")})
    obj = space.wait_version(2)
    assert set(obj["status"]["sealingKeys"]) == {old_kid, new_kid}
    datakey, index = _history_index(space)
    assert datakey.split(":")[0] != old_master, "the data key was re-wrapped"
    assert index["version"] == 2

    op.kill()
    cluster.start_operator(env=env)
    cluster.cp.kubectl(
        "annotate", "spacesecrets", "secrets", "-n", space.ns, "spacesecrets.io/rollback-to=1"
    )
    obj = space.wait_version(3)
    assert sorted(obj["spec"]["data"]) == ["OLD"]
    assert obj["status"]["history"][0]["rollbackOf"] == 1
    # the restored value was re-sealed to the current key
    assert obj["spec"]["data"]["OLD"]["sealed"].split(":")[1] != old_kid


def test_a_restart_is_not_a_tick(fresh_cluster: Callable[[], LocalCluster]) -> None:
    """Between ticks a flow keeps the version it was issued, across an operator restart too; a
    tick that passed while no operator ran is made up at once, and a target changed meanwhile is
    restored."""
    cluster = fresh_cluster()
    env = {"SPACESECRETS_AUTOSYNC_SCALE": "0.25"}  # 1m ticks every 15 s, 24h every 6h
    op = cluster.start_operator(env=env)
    space = _space(cluster, "team-k")
    space.apply({"A": "1"})
    space.wait_version(1)
    uids = {}
    for name, autosync in (("calm", "24h"), ("tampered", "24h"), ("late", "1m")):
        _apply(space, space.flow(name, f"{name}-secrets", autosync=autosync))
        space.wait_condition("Synced", "True", name=name, plural="flowsecretsyncs")
        uids[name] = space.kube.get_custom("flowsecretsyncs", space.ns, name)["metadata"]["uid"]

    def status(flow: str) -> dict[str, Any]:
        return dict(space.kube.get_custom("flowsecretsyncs", space.ns, flow).get("status") or {})

    # the new version lands, and the operator stops, well before the late flow's next tick
    wait_for(
        "the late flow's tick to be 8 s away or more",
        lambda: schedule.next_tick(uids["late"], 15, time.time()) - time.time() >= 8,
    )
    space.apply({"A": "2"})
    space.wait_version(2)
    op.stop()
    assert [status(n)["syncedVersion"] for n in ("calm", "tampered", "late")] == [1, 1, 1]
    missed = schedule.next_tick(uids["late"], 15, time.time())

    calm_rv = space.kube.get("Secret", space.ns, "calm-secrets")["metadata"]["resourceVersion"]
    forged = base64.b64encode(json.dumps({"A": "forged"}).encode()).decode()
    cluster.cp.kubectl(
        "patch", "secret", "tampered-secrets", "-n", space.ns, "--type=merge",
        "-p", json.dumps({"data": {"SECRETS": forged}}),
    )  # fmt: skip
    wait_for("the late flow's tick to pass with no operator", lambda: time.time() > missed + 1)

    op = cluster.start_operator(env=env)
    wait_for(
        "every flow reconciled by the new process",
        lambda: reconciles(op.metrics(), "FlowSecretSync") >= 3,
    )
    calm = space.kube.get("Secret", space.ns, "calm-secrets")
    assert calm["metadata"]["resourceVersion"] == calm_rv, "an intact target was rewritten"
    assert space.target_documents("calm-secrets")["SECRETS"] == {"A": "1"}
    assert status("calm")["syncedVersion"] == 1
    # the forged value is gone: like any drift, the target is restored at the current version
    # (its target is written before the status that records it, and the reconciles counted above
    # may include the late flow's made-up tick: the status may still be on its way)
    assert space.target_documents("tampered-secrets")["SECRETS"] == {"A": "2"}
    wait_for(
        "the tampered flow's status to record the version its target was restored at",
        lambda: status("tampered").get("syncedVersion") == 2,
    )
    # the tick missed while no operator ran is made up
    wait_for(
        "the late flow's status to record the version of its made-up tick",
        lambda: status("late").get("syncedVersion") == 2,
    )
    assert space.target_documents("late-secrets")["SECRETS"] == {"A": "2"}
    assert "forged" not in op.log_text()


def _conflict_pair_and_a_refused_flow(space: Space) -> None:
    """A healthy flow, a Conflict and a TargetNotOwned, as a converged state holds them.

    zulu owns shared-secrets, yet alpha was created before it and is listed first: neither
    creation order nor the order a new process sees the flows in may hand alpha the target."""
    _apply(space, space.flow("calm", "calm-secrets"))
    _apply(space, space.flow("alpha", "alpha-secrets"))
    space.wait_condition("Synced", "True", name="alpha", plural="flowsecretsyncs")
    created = space.kube.get_custom("flowsecretsyncs", space.ns, "alpha")["metadata"]
    born = parse_rfc3339(created["creationTimestamp"]).timestamp()
    wait_for("a later creationTimestamp", lambda: time.time() >= born + 1.2)
    _apply(space, space.flow("zulu", "shared-secrets"))
    space.wait_condition("Synced", "True", name="zulu", plural="flowsecretsyncs")
    _apply(space, space.flow("alpha", "shared-secrets"))  # now names zulu's target
    space.cluster.cp.kubectl(
        "create", "secret", "generic", "theirs", "-n", space.ns, "--from-literal=x=y"
    )
    _apply(space, space.flow("grabby", "theirs"))
    space.wait_condition("Synced", "False", "Conflict", "alpha", "flowsecretsyncs")
    space.wait_condition("Synced", "False", "TargetNotOwned", "grabby", "flowsecretsyncs")
    space.wait_condition("Synced", "True", name="calm", plural="flowsecretsyncs")


def _synced_conditions(space: Space) -> dict[str, Any]:
    """Each flow's Synced condition, and who owns the shared target."""
    out: dict[str, Any] = {
        name: space.condition("Synced", name, "flowsecretsyncs")
        for name in ("calm", "alpha", "zulu", "grabby")
    }
    owners = space.kube.get("Secret", space.ns, "shared-secrets")["metadata"]["ownerReferences"]
    out["owner"] = [o["name"] for o in owners]
    return out


def test_a_restart_over_failing_flows_writes_nothing(
    fresh_cluster: Callable[[], LocalCluster],
) -> None:
    """A new process over a converged state with a Conflict and a TargetNotOwned in it: no write,
    no Event, the same winner -- on its first pass and on the ticks after it."""
    cluster = fresh_cluster()
    env = {"SPACESECRETS_AUTOSYNC_SCALE": "0.05"}  # 1m ticks every 3 s: failing flows retry at each
    op = cluster.start_operator(env=env)
    space = _space(cluster, "team-c")
    space.apply({"A": "1"})
    space.wait_version(1)
    _conflict_pair_and_a_refused_flow(space)
    before = _synced_conditions(space)
    flows = len(space.kube.list_custom("flowsecretsyncs", space.ns))
    op.stop()
    events = len(space.events())
    start = audit_mark(cluster)

    op = cluster.start_operator(env=env)
    # every flow once, then the two failing ones again at two ticks each at least
    wait_for(
        "every flow reconciled, and the failing ones again at their ticks",
        lambda: reconciles(op.metrics(), "FlowSecretSync") >= flows + 6,
        timeout=60,
    )
    audit_mark(cluster)
    writes = audit_writes(cluster.cp.audit_log, start)
    assert writes == [], described(writes)
    assert len(space.events()) == events
    after = _synced_conditions(space)
    assert after == before
    # the owner kept its target; the other one, created first, is the one in conflict
    assert after["owner"] == ["zulu"] and after["zulu"]["status"] == "True"
    assert after["alpha"]["reason"] == "Conflict" and "zulu" in after["alpha"]["message"]
    assert after["grabby"]["reason"] == "TargetNotOwned"
    assert "Traceback" not in op.log_text()


MARKERS = ["pl41ntext-marker-alpha", "pl41ntext-marker-beta", "pl41ntext-marker-gamma"]


def test_no_plaintext_anywhere_but_the_projection(
    fresh_cluster: Callable[[], LocalCluster],
) -> None:
    cluster = fresh_cluster()
    op = cluster.start_operator(env={"SPACESECRETS_AUTOSYNC_SCALE": "0.05"})
    space = _space(cluster, "team-p")
    space.apply({"A": MARKERS[0], "B": {"password": MARKERS[1]}})
    space.wait_version(1)
    _apply(space, space.flow("f", "f-secrets"))
    space.wait_condition("Synced", "True", name="f", plural="flowsecretsyncs")
    # a refused value (invalid JSON quoting the marker) and a rollback go through the system too
    space.apply({"A": MARKERS[0], "B": space.sealed("B", "{" + MARKERS[2], "json")})
    space.wait_condition("Ready", "False", "InvalidJSON")
    space.apply({"A": MARKERS[2]})
    space.wait_version(2)
    cluster.cp.kubectl(
        "annotate", "spacesecrets", "secrets", "-n", "team-p", "spacesecrets.io/rollback-to=1"
    )
    space.wait_version(3)
    time.sleep(0)  # nothing to wait for: everything above waited on its condition

    dump = cluster.cp.kubectl(
        "get",
        "spacesecrets,flowsecretsyncs,events,configmaps,secrets,rolebindings",
        "-A",
        "-o",
        "json",
    ).stdout
    items = json.loads(dump)["items"]
    projection_targets = {("team-p", "f-secrets")}
    hits = []
    for item in items:
        meta = item["metadata"]
        if (meta.get("namespace"), meta["name"]) in projection_targets:
            continue
        text = json.dumps(item)
        decoded = ""
        if item["kind"] == "Secret":
            decoded = json.dumps(decoded_documents(item))
        hits += [(item["kind"], meta["name"], m) for m in MARKERS if m in text or m in decoded]
    log_hits = [m for m in MARKERS if m in op.log_text()]
    audit = cluster.cp.audit_log.read_text()
    audit_hits = [m for m in MARKERS if m in audit]
    assert (hits, log_hits, audit_hits) == ([], [], [])
    # the projection does hold them: the scan would have found them
    target = decoded_documents(space.kube.get("Secret", "team-p", "f-secrets"))
    assert MARKERS[0] in target["SECRETS"] or MARKERS[2] in target["SECRETS"]
    assert crypto.WIRE_PREFIX  # the scan covered sealed objects as well


def test_two_replicas_starting_at_once_share_one_key_ring(
    fresh_cluster: Callable[[], LocalCluster],
) -> None:
    import urllib.request

    cluster = fresh_cluster()
    first = cluster.start_operator(wait=False)
    second = cluster.start_operator(wait=False)  # both race to create the ring
    first.wait_ready()
    second.wait_ready()

    def kid(op: object) -> str:
        port = op.health_port  # type: ignore[attr-defined]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            return str(json.loads(resp.read())["keyring"])

    assert kid(first) == kid(second) == _current_kid(cluster)
    secret = kube_for(str(cluster.kubeconfig)).get(
        "Secret", OPERATOR_NAMESPACE, "spacesecrets-keyring"
    )
    ring = crypto.KeyRing.from_json(base64.b64decode(secret["data"]["keyring.json"]))
    assert ring.kids() == [kid(first)]
    created = [op for op in (first, second) if "created the key ring" in op.log_text()]
    assert len(created) == 1


def test_history_of_a_deleted_space_expires_after_retention(
    fresh_cluster: Callable[[], LocalCluster],
) -> None:
    cluster = fresh_cluster()
    cluster.start_operator(env={"SPACESECRETS_HISTORY_RETENTION": "3s"})
    space = _space(cluster, "team-x")
    space.apply({"A": "1"})
    space.wait_version(1)
    assert _history_index(space)[1]["deletedAt"] is None
    cluster.cp.kubectl("delete", "spacesecrets", "secrets", "-n", "team-x")
    wait_for("the history to be marked deleted", lambda: _history_index(space)[1]["deletedAt"])
    wait_for(
        "the history to expire",
        lambda: (
            cluster.cp.kubectl(
                "get", "secret", "history-team-x", "-n", OPERATOR_NAMESPACE, check=False
            ).returncode
            != 0
        ),
        timeout=30,
    )
