"""Who created a space or authorized a flow, as the API server saw them, and what they may do.

Pure core. The operator never learns a requester's identity from a field a user writes: a
MutatingAdmissionPolicy stamps it into an annotation (`manifests.provenance_policies`) on every
create -- and, for a flow, on every change of its spec or its approval -- overwriting whatever the
request carried, and a ValidatingAdmissionPolicy refuses any object whose stamp is not the one the
API server computes. The stamp is a small JSON document: the requester's username and groups.
(Admission CEL sees no namespace UID, so the operator reads that from the Namespace itself: a
namespace deleted and created again has a new UID.)

The decisions here are pure functions: whether an identity is an owner, whether a flow's
authorization holds, and whether a new SpaceSecrets may continue the history a deleted one left.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from spacesecrets.names import APPROVE, AUTHORIZED_BY, CREATED_BY, RESTORE_FROM

__all__ = ["APPROVE", "AUTHORIZED_BY", "CREATED_BY", "RESTORE_FROM"]

CLUSTER_ADMINS = "system:masters"

# CEL's strings.quote escapes like a JSON string except for these control characters.
_CEL_ONLY_ESCAPES = {"\\a": "\\u0007", "\\v": "\\u000b"}


@dataclass(frozen=True, slots=True)
class Identity:
    """A requester as the API server authenticated it."""

    user: str
    groups: tuple[str, ...]

    @classmethod
    def parse(cls, stamp: str | None) -> Identity | None:
        """The identity in a stamp, or None when there is none or it is not one of ours."""
        if not stamp:
            return None
        text = stamp
        for cel, json_escape in _CEL_ONLY_ESCAPES.items():
            text = text.replace(cel, json_escape)
        try:
            doc = json.loads(text)
        except ValueError:
            return None
        if not isinstance(doc, dict) or not isinstance(doc.get("user"), str):
            return None
        groups = doc.get("groups") or []
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            return None
        return cls(doc["user"], tuple(groups))

    def describe(self) -> str:
        return self.user


Owner = tuple[str, str]  # (kind, name) as in spec.owners


def owners_of(spec_owners: Sequence[Mapping[str, Any]]) -> tuple[Owner, ...]:
    return tuple((str(o.get("kind", "")), str(o.get("name", ""))) for o in spec_owners)


def describe_owners(owners: Sequence[Owner]) -> str:
    return ", ".join(f"{kind} {name}" for kind, name in owners) or "none"


def is_owner(identity: Identity | None, namespace: str, owners: Sequence[Owner]) -> bool:
    """Whether the identity is one of the owners (as the admission policy decides it), or a
    cluster admin. A missing identity is nobody."""
    if identity is None:
        return False
    if CLUSTER_ADMINS in identity.groups:
        return True
    for kind, name in owners:
        if kind == "User" and name == identity.user:
            return True
        if kind == "Group" and name in identity.groups:
            return True
        if (
            kind == "ServiceAccount"
            and identity.user == f"system:serviceaccount:{namespace}:{name}"
        ):
            return True
    return False


def flow_approval_problem(
    stamp: str | None, flow: str, namespace: str, owners: Sequence[Owner]
) -> str | None:
    """Why a flow must not be handed secrets (None when a current owner authorized it): the
    identity that created it, or last changed its spec, or last approved it, is not an owner."""
    identity = Identity.parse(stamp)
    if is_owner(identity, namespace, owners):
        return None
    who = identity.describe() if identity else "an unknown requester"
    return (
        f"FlowSecretSync {flow} was created or last changed by {who}, who is not an owner of "
        f"space {namespace} ({describe_owners(owners)}); an owner approves it with "
        f"`spacesecrets approve {flow}` or by setting the annotation {APPROVE}"
    )


@dataclass(frozen=True, slots=True)
class FormerSpace:
    """What the history of a deleted SpaceSecrets says about it (no values)."""

    uid: str
    name: str
    namespace_uid: str
    owners: tuple[Owner, ...]
    versions: tuple[int, ...]
    deleted_at: str | None

    @classmethod
    def of(cls, index: Mapping[str, Any]) -> FormerSpace:
        kept = tuple(int(v["version"]) for v in index.get("versions") or [])
        owners = tuple((str(k), str(n)) for k, n in index.get("owners") or [])
        return cls(
            uid=str(index.get("spaceUid") or ""),
            name=str(index.get("spaceName") or ""),
            namespace_uid=str(index.get("namespaceUid") or ""),
            owners=owners,
            versions=kept,
            deleted_at=index.get("deletedAt"),
        )


def restore_refusal(
    former: FormerSpace,
    namespace: str,
    namespace_uid: str,
    creator: Identity | None,
    restore_from: str | None,
) -> str | None:
    """Whether a new SpaceSecrets continues the history a deleted one left in its namespace.

    None: it does (a former owner, or a cluster admin, created it in the same namespace -- same
    namespace UID, `namespace_uid` being the namespace's now -- or asked explicitly for this
    history by its uid). Otherwise the reason it
    starts afresh at version 1, naming who may restore the old history and how (names of owners
    only)."""
    explicit = restore_from == former.uid
    same_namespace = bool(former.namespace_uid) and namespace_uid == former.namespace_uid
    if is_owner(creator, namespace, former.owners) and (same_namespace or explicit):
        return None
    span = (
        f"versions {min(former.versions)}-{max(former.versions)}"
        if former.versions
        else "no versions"
    )
    how = "by creating the SpaceSecrets"
    if not same_namespace:
        how += f" with the annotation {RESTORE_FROM}: {former.uid!r}"
    who = creator.describe() if creator else "an unknown requester"
    return (
        f"namespace {namespace} keeps the history of the deleted SpaceSecrets "
        f"{former.name or '?'} (uid {former.uid}, {span}, deleted {former.deleted_at or '?'}); "
        f"only its former owners ({describe_owners(former.owners)}) may restore it, {how}; "
        f"this SpaceSecrets, created by {who}, starts at version 1"
    )
