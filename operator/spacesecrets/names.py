"""Names that the API, the operator, the CLI and the tests share: labels, annotations, plurals.

Standard library only, imported by every layer. A name is written here once.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Final

SPACES: Final = "spacesecrets"
FLOWS: Final = "flowsecretsyncs"

MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
FLOW_LABEL: Final = "spacesecrets.io/flow"  # on a target: the FlowSecretSync it belongs to
SPACE_LABEL: Final = "spacesecrets.io/space"  # on a history: the namespace it belongs to
ARCHIVE_LABEL: Final = "spacesecrets.io/archived-space"  # a deleted space's history set aside

VERSION_ANNOTATION: Final = "spacesecrets.io/version"  # on a target: the version it holds
ISSUED_ANNOTATION: Final = "spacesecrets.io/issued-at"
ROLLBACK_ANNOTATION: Final = "spacesecrets.io/rollback-to"  # set by an owner: restore version N
# set by the operator beside a rollback: which version the new one restores
RESTORED_ANNOTATION: Final = "spacesecrets.io/restored-from"
RESTORE_FROM: Final = "spacesecrets.io/restore-from"  # on a new SpaceSecrets: a deleted one's uid
CREATED_BY: Final = "spacesecrets.io/created-by"  # stamped by the API server on a SpaceSecrets
AUTHORIZED_BY: Final = "spacesecrets.io/authorized-by"  # stamped by the API server on a flow
APPROVE: Final = "spacesecrets.io/approve"  # set or changed by an owner: the flow is approved
# set or changed by an owner (CLI `sync`, the UI, GitOps): bring the flow to the current version now
# on the operator's shard Leases: which ring they belong to, and the members each saw alive
SHARD_LABEL: Final = "spacesecrets.io/shard"
SHARD_VIEW_ANNOTATION: Final = "spacesecrets.io/shard-view"
SYNC_NOW: Final = "spacesecrets.io/sync-now"
# set by the operator on a running pod that mounts a target it just updated: the kubelet syncs a pod
# when the pod changes, so the new documents reach its volume now rather than at its next resync
REFRESH_ANNOTATION: Final = "spacesecrets.io/target-revision"

# The autosync choices (seconds), from the one table the flow reader and the Node-RED node share.
_AUTOSYNC: Final = json.loads((Path(__file__).parent / "flow" / "autosync.json").read_text())
AUTOSYNC_SECONDS: Final[dict[str, int]] = {str(k): int(v) for k, v in _AUTOSYNC["seconds"].items()}
DEFAULT_AUTOSYNC: Final[str] = str(_AUTOSYNC["default"])

HISTORY_PREFIX: Final = "history-"  # + namespace: a space's history in the operator's namespace
ARCHIVE_PREFIX: Final = "archive-"  # + uid: a deleted space's history set aside
PUBLIC_KEYS_CONFIGMAP: Final = "spacesecrets-public-keys"
SYNC_MESSAGE: Final = "🆗 Synced"


class SpaceReason(StrEnum):
    """Reasons of a SpaceSecrets' conditions and Events: constants alerts and tests match on."""

    UNSEALED = "Unsealed"
    DUPLICATE_SPACE = "DuplicateSpace"
    INVALID_SECRETS = "InvalidSecrets"  # more than one kind of bad entry at once
    OPERATOR_NAMESPACE = "OperatorNamespace"
    ROLLBACK_FAILED = "RollbackFailed"
    ROLLED_BACK = "RolledBack"
    VERSION_CREATED = "VersionCreated"
    RESTORE_NOT_ALLOWED = "RestoreNotAllowed"
    RESTORED = "Restored"
    ROLE_BINDING_NOT_OWNED = "RoleBindingNotOwned"
    BOUND = "Bound"


class FlowReason(StrEnum):
    """Reasons of a FlowSecretSync's conditions and Events."""

    SYNCED = "Synced"
    ISSUED = "Issued"
    SPACE_MISSING = "SpaceMissing"
    APPROVAL_REQUIRED = "ApprovalRequired"
    OPERATOR_NAMESPACE = "OperatorNamespace"
    MISSING_KEY = "MissingKey"
    TARGET_NOT_OWNED = "TargetNotOwned"
    CONFLICT = "Conflict"
    CONFIGMAP_NOT_ALLOWED = "ConfigMapNotAllowed"
    CONFIGMAP_TARGET = "ConfigMapTarget"
    TARGET_RESTORED = "TargetRestored"
    TARGET_IMMUTABLE = "TargetImmutable"
    TARGET_UNREADABLE = "TargetUnreadable"
    SYNCED_NOW = "SyncedNow"  # an owner's Sync now request brought the flow to a version


class Condition(StrEnum):
    READY = "Ready"
    SYNCED = "Synced"
    ROLLBACK = "Rollback"
    RESTORE = "Restore"
    OWNERS_BOUND = "OwnersBound"
    CONFIGMAP_TARGET = "ConfigMapTarget"


class QueueReason(StrEnum):
    """Why a key is queued, strongest first: a key queued again keeps the stronger reason.

    A deleted space must be handled as deleted whatever else was queued for it; a drift restore
    says so in an Event; a Sync now request must not be taken for a resume (which may keep the
    issued version) or for "space ready"; "space ready" only syncs a flow that is not synced yet,
    so every other reason wins over it. (A flow's pending Sync now request is honoured whatever
    reason it is queued for: the reason only says why it was queued.)"""

    DELETED = "deleted"
    DRIFT = "drift"
    SYNC_NOW = "sync now"  # an owner set or changed the flow's SYNC_NOW annotation
    SAVE = "save"
    UPDATE = "update"
    CREATE = "create"
    RESUME = "resume"  # a flow issued before this process started
    AUTOSYNC = "autosync"
    OWNERS_CHANGED = "owners changed"  # its space's owners changed: is it still authorized
    SPACE_DELETED = "space deleted"
    CHANGE = "change"  # a space's spec or rollback annotations changed
    OWNERS_DRIFT = "owners binding drift"  # someone else deleted or edited the owners' binding
    STATUS_DRIFT = "status drift"  # a space's status is not the one its last reconcile left
    SPACE_READY = "space ready"


def stronger(old: str | None, new: str) -> str:
    """The reason to keep when a queued key is added again (see QueueReason)."""
    if old is None:
        return new
    order = list(QueueReason)
    rank = {reason.value: i for i, reason in enumerate(order)}
    return new if rank.get(new, len(order)) < rank.get(old, len(order)) else old
