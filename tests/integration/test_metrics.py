"""Operations: /metrics moves when it should, Events carry constant reasons, JSON logs parse."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import yaml
from tests.support.metrics import sample
from tests.support.space import Space

from spacesecrets.devtools.dev import LocalCluster, OperatorProcess, wait_for


def test_metrics_move(space: Space, operator: OperatorProcess) -> None:
    ns = space.ns
    failures = (
        sample(operator.metrics(), "spacesecrets_unseal_failures_total", {"reason": "InvalidJSON"})
        or 0.0
    )
    reconciles = (
        sample(
            operator.metrics(),
            "spacesecrets_reconcile_duration_seconds_count",
            {"kind": "SpaceSecrets"},
        )
        or 0.0
    )
    writes = (
        sample(operator.metrics(), "spacesecrets_projection_writes_total", {"kind": "Secret"})
        or 0.0
    )
    age = sample(operator.metrics(), "spacesecrets_key_ring_age_seconds")
    assert age is not None
    assert age >= 0

    space.apply({"A": "1"})
    space.wait_version(1)
    space.cluster.cp.kubectl(
        "apply", "-f", "-", input=yaml.safe_dump(space.flow("f", "f-secrets", autosync="24h"))
    )
    wait_for(
        "the flow's metric",
        lambda: (
            sample(
                operator.metrics(),
                "spacesecrets_flow_synced_version",
                {"namespace": ns, "flow": "f"},
            )
            == 1
        ),
    )
    assert sample(operator.metrics(), "spacesecrets_space_version", {"namespace": ns}) == 1
    assert (
        sample(operator.metrics(), "spacesecrets_projection_writes_total", {"kind": "Secret"})
        == writes + 1
    )
    assert (
        sample(
            operator.metrics(),
            "spacesecrets_reconcile_duration_seconds_count",
            {"kind": "SpaceSecrets"},
        )
        or 0
    ) > reconciles

    # the 24h flow stays behind when the space moves on
    space.apply({"A": "2"})
    space.wait_version(2)
    wait_for(
        "versions behind",
        lambda: (
            sample(
                operator.metrics(),
                "spacesecrets_flow_versions_behind",
                {"namespace": ns, "flow": "f"},
            )
            == 1
        ),
    )
    assert sample(operator.metrics(), "spacesecrets_space_version", {"namespace": ns}) == 2

    space.apply({"A": "2", "BAD": space.sealed("BAD", "{", "json")})
    space.wait_condition("Ready", "False", "InvalidJSON")
    assert (
        sample(operator.metrics(), "spacesecrets_unseal_failures_total", {"reason": "InvalidJSON"})
        == failures + 1
    )
    # the key ring ages between scrapes (the gauge is computed when scraped)
    assert (sample(operator.metrics(), "spacesecrets_key_ring_age_seconds") or 0) > age

    # a deleted flow's series go with it
    space.cluster.cp.kubectl("delete", "flowsecretsyncs", "f", "-n", ns, "--timeout=60s")
    wait_for(
        "the deleted flow's series to go",
        lambda: (
            sample(operator.metrics(), "spacesecrets_flow_synced_version", {"namespace": ns})
            is None
        ),
    )
    assert (
        sample(operator.metrics(), "spacesecrets_flow_versions_behind", {"namespace": ns}) is None
    )
    assert sample(operator.metrics(), "spacesecrets_space_version", {"namespace": ns}) == 2
    # and so does a deleted space's
    space.cluster.cp.kubectl("delete", "spacesecrets", space.name, "-n", ns, "--timeout=60s")
    wait_for(
        "the deleted space's series to go",
        lambda: sample(operator.metrics(), "spacesecrets_space_version", {"namespace": ns}) is None,
    )


def test_events_have_constant_reasons(space: Space) -> None:
    space.apply({"A": "1"})
    space.wait_version(1)
    space.cluster.cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(space.flow("f", "t")))
    space.wait_condition("Synced", "True", name="f", plural="flowsecretsyncs")
    space.apply({"A": "1", "X": space.sealed("X", "v", namespace="elsewhere")})
    space.wait_condition("Ready", "False", "CannotOpen")
    events = wait_for("three events", lambda: len(space.events()) >= 3 and space.events())
    reasons = {(e["type"], e["reason"]) for e in events}
    assert {
        ("Normal", "VersionCreated"),
        ("Normal", "Issued"),
        ("Warning", "CannotOpen"),
    } <= reasons
    for event in events:
        assert event["source"]["component"] == "spacesecrets"
        assert re.fullmatch(r"[A-Z][A-Za-z]+", event["reason"])


def test_structured_json_logs(fresh_cluster: Callable[[], LocalCluster]) -> None:
    cluster = fresh_cluster()
    op = cluster.start_operator(env={"SPACESECRETS_LOG_FORMAT": "json"})
    cluster.cp.kubectl("create", "namespace", "team-j")
    from spacesecrets.kube.factory import kube_for

    space = Space(cluster, kube_for(str(cluster.kubeconfig)), "team-j")
    space.apply({"A": "1"})
    space.wait_version(1)
    lines = [line for line in op.log_text().splitlines() if line.startswith("{")]
    assert lines, op.log_text()[-2000:]
    records = [json.loads(line) for line in lines]
    assert any("key ring" in r.get("message", "") for r in records)
    assert all("message" in r and "severity" in r for r in records)
