"""Which running pods mount a target, for the kubelet nudge after a target update (core.mounts)."""

from __future__ import annotations

from typing import Any

from spacesecrets.core import mounts
from spacesecrets.names import REFRESH_ANNOTATION


def pod(name: str, *volumes: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {"name": name, **overrides.pop("metadata", {})},
        "spec": {"nodeName": "node-1", "volumes": list(volumes)},
        "status": {"phase": "Running"},
    }
    body.update(overrides)
    return body


SECRET = {"name": "s", "secret": {"secretName": "flow-secrets"}}
CONFIGMAP = {"name": "c", "configMap": {"name": "flow-secrets"}}
PROJECTED = {"name": "p", "projected": {"sources": [{"secret": {"name": "flow-secrets"}}]}}


def test_a_pod_mounts_the_target_by_a_secret_configmap_or_projected_volume() -> None:
    assert mounts.mounts(pod("a", SECRET), "Secret", "flow-secrets")
    assert mounts.mounts(pod("a", PROJECTED), "Secret", "flow-secrets")
    assert mounts.mounts(pod("a", CONFIGMAP), "ConfigMap", "flow-secrets")
    # the same name of the other kind, or another name, is not the target
    assert not mounts.mounts(pod("a", CONFIGMAP), "Secret", "flow-secrets")
    assert not mounts.mounts(pod("a", SECRET), "ConfigMap", "flow-secrets")
    assert not mounts.mounts(pod("a", SECRET), "Secret", "other")
    assert not mounts.mounts(pod("a", {"name": "e", "emptyDir": {}}), "Secret", "flow-secrets")
    assert not mounts.mounts({"metadata": {"name": "a"}}, "Secret", "flow-secrets")


def test_only_running_scheduled_live_pods_not_yet_nudged_for_this_revision() -> None:
    pods = [
        pod("b-running", SECRET),
        pod("a-projected", PROJECTED),
        pod("pending", SECRET, status={"phase": "Pending"}),
        pod("unscheduled", SECRET, spec={"volumes": [SECRET]}),
        pod("deleting", SECRET, metadata={"deletionTimestamp": "2026-12-02T00:00:00Z"}),
        pod("done", SECRET, metadata={"annotations": {REFRESH_ANNOTATION: "42"}}),
        pod("older", SECRET, metadata={"annotations": {REFRESH_ANNOTATION: "41"}}),
        pod("unrelated", {"name": "x", "secret": {"secretName": "another"}}),
    ]
    assert mounts.to_refresh(pods, "Secret", "flow-secrets", "42") == [
        "a-projected",
        "b-running",
        "older",
    ]


def test_the_patch_is_that_one_annotation_and_nothing_else() -> None:
    assert mounts.refresh_patch("42") == {"metadata": {"annotations": {REFRESH_ANNOTATION: "42"}}}
