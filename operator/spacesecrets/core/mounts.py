"""Which running pods mount a flow's target, and the change that makes their kubelet refresh it.

Pure core. The kubelet brings a Secret or ConfigMap volume up to date when it syncs the pod: at
its periodic resync (`syncFrequency`, 1m by default, plus jitter) or whenever the pod object
changes. The operator changes one annotation of each running pod that mounts a target it has
just updated, so the pod's files follow the target within a second instead of a minute. Only that
annotation: an admission policy refuses any other change of a pod by the operator.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from spacesecrets.names import REFRESH_ANNOTATION


def _volume_names(volume: Mapping[str, Any], kind: str) -> Iterable[str]:
    """The Secret or ConfigMap names a pod volume of `kind` reads (projected sources too)."""
    if kind == "Secret":
        secret = volume.get("secret") or {}
        if secret.get("secretName"):
            yield str(secret["secretName"])
    elif (volume.get("configMap") or {}).get("name"):
        yield str(volume["configMap"]["name"])
    field = "secret" if kind == "Secret" else "configMap"
    for source in (volume.get("projected") or {}).get("sources") or []:
        name = (source.get(field) or {}).get("name")
        if name:
            yield str(name)


def mounts(pod: Mapping[str, Any], kind: str, name: str) -> bool:
    """Whether `pod` has a volume made of the `kind` named `name`."""
    volumes = (pod.get("spec") or {}).get("volumes") or []
    return any(name in _volume_names(v, kind) for v in volumes)


def to_refresh(pods: Iterable[Mapping[str, Any]], kind: str, name: str, revision: str) -> list[str]:
    """The pods to nudge after the target became `revision` (its resourceVersion): running on a
    node, not being deleted, mounting the target, and not nudged for this revision already."""
    chosen = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        if meta.get("deletionTimestamp") or not (pod.get("spec") or {}).get("nodeName"):
            continue
        if (pod.get("status") or {}).get("phase") != "Running" or not mounts(pod, kind, name):
            continue
        if (meta.get("annotations") or {}).get(REFRESH_ANNOTATION) == revision:
            continue
        chosen.append(str(meta["name"]))
    return sorted(chosen)


def refresh_patch(revision: str) -> dict[str, Any]:
    """The merge patch of a pod that makes its kubelet sync it: one annotation, nothing else."""
    return {"metadata": {"annotations": {REFRESH_ANNOTATION: revision}}}
