"""The operator may patch pods, to make their kubelet refresh a target volume at once (see
core.mounts), and the admission policy lets it change nothing of a pod but that one annotation.

Against the real API server, as the operator's ServiceAccount with the chart's RBAC. The pod needs
no node: it stays Pending, and admission judges its updates all the same.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from spacesecrets.devtools.dev import LocalCluster
from spacesecrets.kube import Permanent
from spacesecrets.kube.factory import kube_for
from spacesecrets.names import REFRESH_ANNOTATION

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "flow", "labels": {"app": "flow"}, "annotations": {"team": "a"}},
    "spec": {
        "containers": [{"name": "c", "image": "example.com/flow:1"}],
        "volumes": [{"name": "s", "secret": {"secretName": "flow-secrets"}}],
    },
}


def test_the_operator_may_change_only_the_refresh_annotation_of_a_pod(
    cluster: LocalCluster, ns: str
) -> None:
    cp = cluster.cp
    cp.kubectl("create", "-n", ns, "-f", "-", input=json.dumps(POD))
    operator = cluster.operator_kubeconfig()
    created = json.loads(cp.kubectl("get", "pod", "flow", "-n", ns, "-o", "json").stdout)
    [container] = created["spec"]["containers"]  # whole, as a merge patch replaces the list

    def patch(body: dict[str, Any], kubeconfig: Path = operator) -> tuple[bool, str]:
        """A merge patch as the operator sends it (no read first: it holds no `get` on pods)."""
        try:
            kube_for(str(kubeconfig)).patch_pod(ns, "flow", body)
        except Permanent as exc:
            return False, str(exc)
        return True, ""

    ok, err = patch({"metadata": {"annotations": {REFRESH_ANNOTATION: "7"}}})
    assert ok, err
    refused = [
        {"metadata": {"labels": {"app": "other"}}},
        {"metadata": {"annotations": {"team": "b"}}},
        {"metadata": {"annotations": {"team": None}}},
        {"metadata": {"annotations": {"new": "x", REFRESH_ANNOTATION: "8"}}},
        {"metadata": {"finalizers": ["example.com/hold"]}},
        {"spec": {"containers": [{**container, "image": "example.com/evil:1"}]}},
        {"spec": {"activeDeadlineSeconds": 5}},
    ]
    for body in refused:
        ok, err = patch(body)
        assert not ok, f"the operator was allowed {body}"
        assert f"may change only the annotation {REFRESH_ANNOTATION} of a pod" in err, err
    # anyone else is not judged by this policy (RBAC alone decides for them)
    ok, err = patch({"metadata": {"labels": {"app": "other"}}}, kubeconfig=cp.admin_kubeconfig)
    assert ok, err
    pod = json.loads(cp.kubectl("get", "pod", "flow", "-n", ns, "-o", "json").stdout)
    assert pod["metadata"]["annotations"] == {"team": "a", REFRESH_ANNOTATION: "7"}
    assert pod["spec"]["containers"][0]["image"] == "example.com/flow:1"
