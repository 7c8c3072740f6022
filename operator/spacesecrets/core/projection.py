"""What a flow is handed: the SECRETS and SECRETS_METADATA documents and the target object.

Pure core. `desired_target` builds the Secret or ConfigMap; `ownership` tells whether an existing
object is ours to overwrite (the managed-by mark and a controller reference to this
FlowSecretSync), so the operator never writes over what it does not own; `keeper` decides which of
several FlowSecretSyncs naming one target keeps it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

from spacesecrets import API_VERSION, MANAGED_BY
from spacesecrets.core.versions import Plain
from spacesecrets.names import (
    FLOW_LABEL,
    ISSUED_ANNOTATION,
    MANAGED_BY_LABEL,
    VERSION_ANNOTATION,
)

__all__ = ["FLOW_LABEL", "ISSUED_ANNOTATION", "MANAGED_BY_LABEL", "VERSION_ANNOTATION"]
SECRETS = "SECRETS"
SECRETS_METADATA = "SECRETS_METADATA"


class KeyEntry(NamedTuple):
    """One key of a space's current version: its metadata and its plaintext."""

    format: str
    version: int
    updated_at: str
    text: str

    def projected(self) -> Any:
        """The value as a flow sees it: a string, or the parsed JSON document."""
        return json.loads(self.text) if self.format == "json" else self.text


@dataclass(frozen=True, slots=True)
class SpaceView:
    """The current version of one space, as flows are handed it.

    The keys are kept packed in one JSON document rather than as a hundred small objects: the
    operator holds every space's view for as long as it runs, and unpacks one only to project it.
    """

    namespace: str
    version: int
    created_at: str
    updated_at: str
    packed: bytes = field(repr=False)

    @classmethod
    def of(
        cls,
        namespace: str,
        *,
        version: int,
        created_at: str,
        updated_at: str,
        keys: Mapping[str, Mapping[str, Any]],  # KEY -> {version, updatedAt, ...}
        values: Plain,
    ) -> SpaceView:
        entries = {
            k: (v.format, int(keys[k]["version"]), str(keys[k]["updatedAt"]), v.data.decode())
            for k, v in values.items()
        }
        packed = json.dumps(entries, ensure_ascii=False, separators=(",", ":")).encode()
        return cls(namespace, version, created_at, updated_at, packed)

    def entries(self) -> dict[str, KeyEntry]:
        return {k: KeyEntry(*e) for k, e in json.loads(self.packed).items()}


@dataclass(frozen=True, slots=True)
class FlowSpec:
    name: str
    uid: str
    target_kind: str
    target_name: str
    autosync: str
    sync_on_save: bool
    keys: tuple[str, ...] | None

    @classmethod
    def from_body(cls, name: str, uid: str, spec: Mapping[str, Any]) -> FlowSpec:
        target = spec.get("target") or {}
        keys = spec.get("keys")
        return cls(
            name=name,
            uid=uid,
            target_kind=str(target.get("kind", "Secret")),
            target_name=str(target.get("name", "")),
            autosync=str(spec.get("autosync", "1m")),
            sync_on_save=bool(spec.get("syncOnSave", True)),
            keys=tuple(keys) if keys is not None else None,
        )


def missing_keys(space: SpaceView, flow: FlowSpec) -> list[str]:
    if flow.keys is None:
        return []
    present = space.entries()
    return sorted(k for k in flow.keys if k not in present)


def documents(space: SpaceView, flow: FlowSpec, issued_at: str) -> dict[str, str]:
    """SECRETS and SECRETS_METADATA as the flow reads them (JSON text)."""
    entries = space.entries()
    keys = sorted(entries if flow.keys is None else set(flow.keys) & set(entries))
    secrets = {k: entries[k].projected() for k in keys}
    metadata = {
        "space": space.namespace,
        "version": space.version,
        "createdAt": space.created_at,
        "updatedAt": space.updated_at,
        "issuedAt": issued_at,
        "autosync": flow.autosync,
        "syncOnSave": flow.sync_on_save,
        "keys": {
            k: {
                "format": entries[k].format,
                "version": entries[k].version,
                "updatedAt": entries[k].updated_at,
            }
            for k in keys
        },
    }
    return {
        SECRETS: json.dumps(secrets, ensure_ascii=False, sort_keys=True),
        SECRETS_METADATA: json.dumps(metadata, ensure_ascii=False, sort_keys=True),
    }


def desired_target(
    namespace: str, flow: FlowSpec, docs: Mapping[str, str], version: int, issued_at: str
) -> dict[str, Any]:
    """The full target object, ready to create or replace."""
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": flow.target_kind,
        "metadata": {
            "name": flow.target_name,
            "namespace": namespace,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY, FLOW_LABEL: flow.name},
            "annotations": {VERSION_ANNOTATION: str(version), ISSUED_ANNOTATION: issued_at},
            "ownerReferences": [owner_reference(flow)],
        },
    }
    if flow.target_kind == "Secret":
        body["type"] = "Opaque"
        body["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in docs.items()}
    else:
        body["data"] = dict(docs)
    return body


def owner_reference(flow: FlowSpec) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "FlowSecretSync",
        "name": flow.name,
        "uid": flow.uid,
        "controller": True,
        "blockOwnerDeletion": False,
    }


class Ownership(StrEnum):
    OURS = "ours"
    OTHER_FLOW = "other-flow"
    FOREIGN = "foreign"


def ownership(obj: Mapping[str, Any], flow_uid: str) -> Ownership:
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    if labels.get(MANAGED_BY_LABEL) != MANAGED_BY:
        return Ownership.FOREIGN
    controllers = [
        r
        for r in meta.get("ownerReferences") or []
        if r.get("controller") and r.get("kind") == "FlowSecretSync"
    ]
    if any(r.get("uid") == flow_uid for r in controllers):
        return Ownership.OURS
    return Ownership.OTHER_FLOW if controllers else Ownership.FOREIGN


class Claimant(NamedTuple):
    """A FlowSecretSync naming a target, as far as deciding who keeps the target goes."""

    created: str  # creationTimestamp: RFC 3339 UTC, so it sorts as text
    name: str
    uid: str


def controlling_flow(obj: Mapping[str, Any]) -> tuple[str, str] | None:
    """(uid, name) of the FlowSecretSync that controls a target of ours; None for a target
    spacesecrets does not manage or no FlowSecretSync controls."""
    meta = obj.get("metadata") or {}
    if (meta.get("labels") or {}).get(MANAGED_BY_LABEL) != MANAGED_BY:
        return None
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == "FlowSecretSync":
            return str(ref.get("uid", "")), str(ref.get("name", ""))
    return None


def keeper(
    target: Mapping[str, Any] | None, claimants: Sequence[Claimant]
) -> tuple[str, str] | None:
    """(uid, name) of the FlowSecretSync that keeps a target several of them name; the others
    report a conflict. None when nobody may write it (it exists and is not ours).

    The target's controller reference decides while the target is ours: it is stored in the API,
    so the choice is the same in every process and survives restarts whatever order the flows are
    seen in, and a flow that holds its target is never displaced by one created before it. Only
    while no target exists does the earliest created flow (then the first by name) get it."""
    if target is not None:
        return controlling_flow(target)
    first = min(claimants, default=None)
    return (first.uid, first.name) if first else None


def decoded_documents(obj: Mapping[str, Any]) -> dict[str, str]:
    """The documents an existing target holds (Secret data decoded)."""
    data: Mapping[str, str] = obj.get("data") or {}
    if obj.get("kind", "Secret") == "Secret":
        return {k: base64.b64decode(v).decode(errors="replace") for k, v in data.items()}
    return dict(data)


def _parsed(text: str) -> Any:
    """A document parsed; ValueError for one that is not JSON or is nested too deeply for the
    parser (e.g. a hundred thousand `[` someone wrote into a target)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def unreadable_documents(obj: Mapping[str, Any]) -> list[str]:
    """The documents of an existing target that do not parse (names only, never content)."""
    out = []
    for name, text in sorted(decoded_documents(obj).items()):
        if name in (SECRETS, SECRETS_METADATA):
            try:
                _parsed(text)
            except ValueError:
                out.append(name)
    return out


def _without_issued(docs: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in docs.items():
        try:
            out[k] = _parsed(v)
        except ValueError:
            out[k] = v  # not what we would write: the target is simply not up to date
    meta = out.get(SECRETS_METADATA)
    if isinstance(meta, dict):
        meta.pop("issuedAt", None)
    return out


def up_to_date(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """True when the existing target already holds what `desired` would write.

    issuedAt is ignored: it is only news when the content is.
    """
    meta = existing.get("metadata") or {}
    want = desired["metadata"]
    labels_ok = all((meta.get("labels") or {}).get(k) == v for k, v in want["labels"].items())
    version_ok = (meta.get("annotations") or {}).get(VERSION_ANNOTATION) == want["annotations"][
        VERSION_ANNOTATION
    ]
    refs_ok = _same_refs(meta.get("ownerReferences") or [], want["ownerReferences"])
    data_ok = _without_issued(decoded_documents(existing)) == _without_issued(
        decoded_documents(desired)
    )
    return labels_ok and version_ok and refs_ok and data_ok


def holds_issued(
    existing: Mapping[str, Any], namespace: str, flow: FlowSpec, version: int, values: Plain
) -> bool:
    """True when an existing target holds exactly what was issued to `flow` at `version`, whose
    plaintext is `values` (read back from the history). Each key's metadata and the issue time
    are taken from the target; the key set and every value are checked."""
    try:
        meta = _parsed(decoded_documents(existing)[SECRETS_METADATA])
        keys, issued_at = meta["keys"], str(meta["issuedAt"])
        wanted = set(values) if flow.keys is None else set(flow.keys) & set(values)
        if set(keys) != wanted:
            return False
        view = SpaceView.of(
            namespace,
            version=version,
            created_at=str(meta["createdAt"]),
            updated_at=str(meta["updatedAt"]),
            keys=keys,
            values={k: values[k] for k in wanted},
        )
    except (KeyError, TypeError, ValueError):
        return False  # not a document we wrote
    docs = documents(view, flow, issued_at)
    return up_to_date(existing, desired_target(namespace, flow, docs, version, issued_at))


def _same_refs(have: Sequence[Mapping[str, Any]], want: Sequence[Mapping[str, Any]]) -> bool:
    keys = ("apiVersion", "kind", "name", "uid", "controller")
    return [{k: r.get(k) for k in keys} for r in have] == [
        {k: r.get(k) for k in keys} for r in want
    ]


def issued_at_of(obj: Mapping[str, Any]) -> str | None:
    value = ((obj.get("metadata") or {}).get("annotations") or {}).get(ISSUED_ANNOTATION)
    return str(value) if value else None


def fingerprint(obj: Mapping[str, Any]) -> str:
    """A digest of what a target holds that matters (data, our labels and version annotation):
    our own writes are told from someone else's by it."""
    meta = obj.get("metadata") or {}
    relevant = {
        "data": obj.get("data") or {},
        "labels": meta.get("labels") or {},
        "version": (meta.get("annotations") or {}).get(VERSION_ANNOTATION),
        "owners": [r.get("uid") for r in meta.get("ownerReferences") or []],
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


def template_hash(workload: Mapping[str, Any]) -> str:
    """A digest of a Deployment's or StatefulSet's pod template: a change of it is a save."""
    template = (workload.get("spec") or {}).get("template") or {}
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()
