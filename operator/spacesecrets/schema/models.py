"""The API of spacesecrets as pydantic models: the single source of truth for the CRDs.

Pure core: imports neither kopf nor kubernetes. `crdgen` turns these models into the CRD YAML in
`crds/`, so every description, enum, default and CEL rule here is what `kubectl explain` shows and
what the API server enforces at admission.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.config import JsonDict

from spacesecrets.names import AUTOSYNC_SECONDS, DEFAULT_AUTOSYNC

KEY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
KEY_MAX_LENGTH = 128
SEALED_PREFIX = "hpke1:"
# A sealed value is at most MAX_VALUE_BYTES of plaintext, base64-encoded with HPKE overhead.
SEALED_MAX_LENGTH = 90_000
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
KeyName = Annotated[str, StringConstraints(pattern=KEY_PATTERN, max_length=KEY_MAX_LENGTH)]


def _lit(text: str) -> str:
    """A CEL single-quoted string literal (backslashes escaped)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _cel(rule: str, message: str, field_path: str | None = None) -> JsonDict:
    entry: JsonDict = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, use_enum_values=True)


class _Status(BaseModel):
    # Status is written by the operator; tolerate fields from newer operator versions on read.
    model_config = ConfigDict(extra="ignore", populate_by_name=True, use_enum_values=True)


class Format(StrEnum):
    """How a value is handed to flows: a string, or a parsed JSON document."""

    TEXT = "text"
    JSON = "json"


class OwnerKind(StrEnum):
    USER = "User"
    GROUP = "Group"
    SERVICE_ACCOUNT = "ServiceAccount"


# The autosync choices of a space's Secret Manager node, from names.AUTOSYNC_SECONDS.
Autosync = StrEnum("Autosync", {choice: choice for choice in AUTOSYNC_SECONDS})  # type: ignore[misc]


class TargetKind(StrEnum):
    SECRET = "Secret"
    CONFIG_MAP = "ConfigMap"


class FlowKind(StrEnum):
    DEPLOYMENT = "Deployment"
    STATEFUL_SET = "StatefulSet"


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


# ---------------------------------------------------------------------------------------------
# SpaceSecrets
# ---------------------------------------------------------------------------------------------


class Owner(_Model):
    """A subject holding the space's Owner role."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self.kind != 'ServiceAccount' || self.name.matches("
                    + _lit(DNS_SUBDOMAIN)
                    + ")",
                    "a ServiceAccount owner is named by its name in this namespace, "
                    "e.g. 'gitops', not 'system:serviceaccount:...'",
                    ".name",
                )
            ]
        }
    )

    kind: OwnerKind = Field(
        description="User, Group, or ServiceAccount (a ServiceAccount of this namespace)."
    )
    name: str = Field(
        min_length=1,
        max_length=253,
        description="The user name, group name, or ServiceAccount name as the API server "
        "authenticates it.",
    )


class SealedEntry(_Model):
    """One secret: its format and its value sealed to the operator's public key."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self.sealed.startsWith(" + _lit(SEALED_PREFIX) + ")",
                    "sealed must be an HPKE-sealed value 'hpke1:<kid>:<base64>' made by "
                    "'spacesecrets seal' or 'spacesecrets set'; plaintext is never accepted",
                    ".sealed",
                ),
            ]
        }
    )

    format: Format = Field(
        default=Format.TEXT,
        description="text: the value is handed to flows as a string. json: the value must be a "
        "JSON document and is handed to flows parsed.",
    )
    # No OpenAPI `pattern` here: the API server quotes the refused value in a pattern error (and
    # the audit log keeps it), and someone may paste a plaintext value. The CEL rule's message is
    # constant; the operator checks the full format and reports MalformedSealedValue.
    sealed: str = Field(
        max_length=SEALED_MAX_LENGTH,
        description="The value sealed with HPKE (RFC 9180) to the operator's public key, bound "
        "to this namespace, KEY and format: 'hpke1:<kid>:<base64 of enc and ciphertext>'.",
    )


class SpaceSecretsSpec(_Model):
    """The space's owners and its sealed secrets."""

    owners: list[Owner] = Field(
        min_length=1,
        max_length=64,
        description="The space's Owner role: only these subjects may change the space's secrets "
        "or decide which flows get them. At least one.",
    )
    data: dict[str, SealedEntry] = Field(
        default_factory=dict,
        max_length=256,
        description="KEY -> sealed entry. A KEY is a variable name (^[A-Za-z_][A-Za-z0-9_]*$), "
        "e.g. PRODUCT_A_API_HOST; flows read the value under that name.",
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self.all(k, k.matches(" + _lit(KEY_PATTERN) + "))",
                    "every KEY in spec.data must be a variable name matching "
                    + KEY_PATTERN
                    + " (letters, digits and underscores, not starting with a digit)",
                ),
                _cel(
                    f"self.all(k, size(k) <= {KEY_MAX_LENGTH})",
                    f"every KEY in spec.data must be at most {KEY_MAX_LENGTH} characters",
                ),
            ]
        },
    )
    historyLimit: int = Field(
        default=20,
        ge=1,
        le=100,
        description="How many versions are kept for rollback and audit.",
    )


class KeyStatus(_Status):
    """Metadata of one KEY, never its value."""

    name: str = Field(description="The KEY.")
    format: Format = Field(description="text or json.")
    version: int = Field(description="The space version in which this KEY last changed.")
    updatedAt: str = Field(description="When this KEY last changed (RFC 3339 UTC).")


class HistoryEntry(_Status):
    """What one version changed, by key name only."""

    version: int = Field(description="The space version this entry created.")
    at: str = Field(description="When the version was created (RFC 3339 UTC).")
    added: list[str] = Field(default_factory=list, description="Keys added.")
    changed: list[str] = Field(
        default_factory=list, description="Keys whose value or format changed."
    )
    removed: list[str] = Field(default_factory=list, description="Keys removed.")
    rollbackOf: int | None = Field(
        default=None, description="Set when this version restored an earlier one."
    )


class Condition(_Status):
    """A standard Kubernetes condition."""

    type: str = Field(description="The condition type, e.g. Ready or Synced.")
    status: ConditionStatus = Field(description="True, False, or Unknown.")
    reason: str = Field(description="A CamelCase reason, constant for each cause.")
    message: str = Field(default="", description="A human-readable message; never a value.")
    lastTransitionTime: str = Field(description="When status last changed (RFC 3339 UTC).")
    observedGeneration: int | None = Field(
        default=None, description="The generation this condition was computed for."
    )


class SpaceSecretsStatus(_Status):
    """What the operator has made of the spec: version, key metadata, history, conditions."""

    version: int | None = Field(
        default=None,
        description="1 at creation, +1 on every effective change of the secrets; never reused.",
    )
    createdAt: str | None = Field(default=None, description="When version 1 was created.")
    updatedAt: str | None = Field(default=None, description="When the current version was created.")
    keyCount: int | None = Field(default=None, description="How many keys the current version has.")
    keys: list[KeyStatus] = Field(
        default_factory=list, description="Per-key metadata of the current version (no values)."
    )
    history: list[HistoryEntry] = Field(
        default_factory=list, description="Recent versions, newest first, by key name only."
    )
    sealingKeys: list[str] = Field(
        default_factory=list, description="The operator key ids (kid) the spec is sealed to."
    )
    observedGeneration: int | None = Field(
        default=None, description="The metadata.generation last reconciled."
    )
    conditions: list[Condition] = Field(
        default_factory=list, description="Ready tells whether the spec was accepted."
    )


class SpaceSecrets(BaseModel):
    """A space's store of secrets: one per namespace, managed by the space's owners."""

    spec: SpaceSecretsSpec
    status: SpaceSecretsStatus | None = None


# ---------------------------------------------------------------------------------------------
# FlowSecretSync
# ---------------------------------------------------------------------------------------------


class Target(_Model):
    """The object in this namespace that receives SECRETS and SECRETS_METADATA."""

    kind: TargetKind = Field(
        default=TargetKind.SECRET,
        description="Secret (default) or ConfigMap. A ConfigMap exposes values to everyone who "
        "may read ConfigMaps and must be allowed by the operator's configuration.",
    )
    name: str = Field(
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
        description="The name of the Secret or ConfigMap, in this namespace.",
    )


class FlowRef(_Model):
    """The workload running the flow; a change of its pod template counts as a save."""

    kind: FlowKind = Field(description="Deployment or StatefulSet.")
    name: str = Field(
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
        description="Its name, in this namespace.",
    )


class FlowSecretSyncSpec(_Model):
    """Where a flow gets its space's secrets, and how often."""

    target: Target = Field(description="The object the operator writes the documents into.")
    autosync: Autosync = Field(
        default=Autosync(DEFAULT_AUTOSYNC),
        description="How often the target is brought to the space's current version: 1m, 30m, "
        "60m, 12h or 24h. Between ticks the flow keeps the version it was issued.",
    )
    syncOnSave: bool = Field(
        default=True,
        description="Sync at once when the flow is saved: this object changes, or the pod "
        "template of flowRef changes.",
    )
    flowRef: FlowRef | None = Field(
        default=None, description="The flow's workload, watched for saves when syncOnSave."
    )
    keys: list[KeyName] | None = Field(
        default=None,
        max_length=256,
        description="Only these KEYs are handed to the flow; default all. Each is a variable "
        "name (^[A-Za-z_][A-Za-z0-9_]*$).",
    )


class SyncNow(_Status):
    """The last Sync now request the operator handled (an owner set or changed the annotation
    spacesecrets.io/sync-now). A request is pending while the annotation differs from requested."""

    requested: str = Field(
        description="The annotation's value when the request was handled (the CLI and the UI "
        "write the time of the request, RFC 3339 UTC with milliseconds)."
    )
    at: str = Field(description="When the operator handled the request (RFC 3339 UTC).")
    version: int | None = Field(
        default=None,
        description="The space version the flow held once the request was handled; absent if "
        "it holds none. Behind the space's version when the flow may not be synced: the Synced "
        "condition says why.",
    )


class FlowSecretSyncStatus(_Status):
    """What the flow was last issued."""

    syncedVersion: int | None = Field(
        default=None, description="The space version the target holds."
    )
    issuedAt: str | None = Field(
        default=None, description="When the flow was handed that version (RFC 3339 UTC)."
    )
    observedGeneration: int | None = Field(
        default=None, description="The metadata.generation last reconciled."
    )
    syncNow: SyncNow | None = Field(
        default=None, description="The last Sync now request handled, when, and its outcome."
    )
    conditions: list[Condition] = Field(
        default_factory=list, description="Synced tells whether the target holds the issued data."
    )


class FlowSecretSync(BaseModel):
    """One flow's subscription to its space's secrets (the Secret Manager node)."""

    spec: FlowSecretSyncSpec
    status: FlowSecretSyncStatus | None = None
