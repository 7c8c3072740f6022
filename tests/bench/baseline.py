"""The write baseline: the writes a cold start cannot skip, issued straight to the API server by a
minimal concurrent client, with no operator logic -- what our cold start is measured against.

Test support, not a test module: importing it needs no cluster. Per space: the history Secret in
the operator's namespace (built by the operator's own builders, so it is as large and as
encrypted as ours), the owners' RoleBinding and the SpaceSecrets status; per flow: the target
Secret and the FlowSecretSync status. The bodies are built before the clock starts; the timed
part is HTTP only: `workers` threads, each taking one namespace at a time and issuing its five
writes in the order the operator must (the history before any projection of it).
"""

from __future__ import annotations

import base64
import datetime as dt
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from spacesecrets.core import access, crypto, decisions, projection, provenance, versions
from spacesecrets.core.conditions import now_rfc3339, set_condition
from spacesecrets.kube.transport import JSON, MERGE_PATCH, Transport
from spacesecrets.names import HISTORY_PREFIX, MANAGED_BY_LABEL, SPACE_LABEL, Condition, SpaceReason

GROUP_VERSION = "spacesecrets.io/v1alpha1"
Write = tuple[str, str, dict[str, Any], str]  # method, path, body, content type


@dataclass(frozen=True)
class Space:
    """What the baseline needs to know of one created space and its flow."""

    namespace: str
    space_uid: str
    flow_name: str
    flow_uid: str
    flow_spec: Mapping[str, Any]
    owners: list[dict[str, str]]
    data: Mapping[str, Mapping[str, Any]]  # the sealed spec.data


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _history_secret(operator_namespace: str, history: versions.History) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"{HISTORY_PREFIX}{history.namespace}",
            "namespace": operator_namespace,
            "labels": {MANAGED_BY_LABEL: "spacesecrets", SPACE_LABEL: history.namespace},
        },
        "type": "Opaque",
        "data": {k: _b64(v) for k, v in history.to_data().items()},
    }


def writes_for(
    ring: crypto.KeyRing, operator_namespace: str, space: Space, namespace_uid: str
) -> list[Write]:
    """The five writes of one namespace, in order, with the bodies the operator would send."""
    ns, now = space.namespace, now_rfc3339(dt.datetime.now(dt.UTC))
    plain, errors = versions.open_spec(ring, ns, space.data)
    assert not errors, errors
    history = versions.History.new(ring, ns)
    history.index.update(
        namespaceUid=namespace_uid,
        spaceUid=space.space_uid,
        spaceName="secrets",
        owners=[list(o) for o in provenance.owners_of(space.owners)],
    )
    versions.record(history, ring, plain, now, 20)
    status = {
        **versions.status_fields(history, versions.sealing_kids(space.data)),
        "observedGeneration": 1,
        "conditions": set_condition(
            [],
            Condition.READY,
            True,
            SpaceReason.UNSEALED,
            f"version 1: {len(plain)} keys",
            generation=1,
            now=now,
        ),
    }
    index = history.index
    view = projection.SpaceView.of(
        ns,
        version=history.version,
        created_at=str(index["createdAt"]),
        updated_at=str(index["updatedAt"]),
        keys=index["keys"],
        values=plain,
    )
    flow = projection.FlowSpec.from_body(space.flow_name, space.flow_uid, space.flow_spec)
    docs = projection.documents(view, flow, now)
    target = projection.desired_target(ns, flow, docs, history.version, now)
    flow_status = decisions.synced_status({}, history.version, now, generation=1, now=now)
    custom = f"/apis/{GROUP_VERSION}/namespaces/{ns}"
    return [
        (
            "POST",
            f"/api/v1/namespaces/{operator_namespace}/secrets",
            _history_secret(operator_namespace, history),
            JSON,
        ),
        (
            "POST",
            f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
            access.desired_role_binding(ns, space.owners, "secrets", space.space_uid),
            JSON,
        ),
        ("PATCH", f"{custom}/spacesecrets/secrets/status", {"status": status}, MERGE_PATCH),
        ("POST", f"/api/v1/namespaces/{ns}/secrets", target, JSON),
        (
            "PATCH",
            f"{custom}/flowsecretsyncs/{space.flow_name}/status",
            {"status": flow_status},
            MERGE_PATCH,
        ),
    ]


def run(
    transport: Transport,
    writes: list[list[Write]],
    cpu: Callable[[], Mapping[str, float]],
    workers: int = 16,
) -> dict[str, Any]:
    """Issue every namespace's writes, `workers` namespaces at a time; the figures."""

    def one(batch: list[Write]) -> None:
        for method, path, body, content_type in batch:
            response = transport.request(method, path, body, content_type=content_type)
            assert 200 <= response.status < 300, (method, path, response.status, response.data)

    cpu0 = cpu()
    started = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, writes))
    wall = time.monotonic() - started
    used = {name: round(seconds - cpu0[name], 1) for name, seconds in cpu().items()}
    total = sum(len(batch) for batch in writes)
    return {
        "writes": total,
        "workers": workers,
        "wallSeconds": round(wall, 2),
        "writesPerSecond": round(total / wall, 1),
        "controlPlaneCpuSeconds": used,
        "apiServerCpuMsPerWrite": round(used.get("kube-apiserver", 0.0) / total * 1000, 2),
    }
