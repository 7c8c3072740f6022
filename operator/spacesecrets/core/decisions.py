"""The operator's decisions, as pure functions: which SpaceSecrets is a namespace's store, why a
space is not Ready, why a flow is not Synced, whether a flow yields its target, whether a resumed
flow keeps its issued version, whether an owner's Sync now request is pending, and the status each
object gets.

Pure core: every input is an argument (settings included), so each decision is unit-tested
without a cluster; the engine gathers the inputs and carries the outcome out.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from spacesecrets.core.conditions import parse_rfc3339, set_condition
from spacesecrets.core.versions import EntryError
from spacesecrets.names import SYNC_MESSAGE, Condition, FlowReason, SpaceReason

OPERATOR_NAMESPACE_MESSAGE = (
    "this is the spacesecrets operator's own namespace (its keys and every space's history "
    "live here): spaces and flows are not served in it; use another namespace"
)


class Verdict(NamedTuple):
    """Why not: a constant reason and a message naming keys, never values."""

    reason: str
    message: str


# -- spaces ---------------------------------------------------------------------------------------


def primary_store(live: Mapping[str, tuple[str, str]], history_owner: str | None) -> str | None:
    """The name of a namespace's store among its live SpaceSecrets (uid -> (created, name)): the
    one its history belongs to, else the oldest. Any other is a duplicate."""
    if not live:
        return None
    if history_owner is not None and history_owner in live:
        return live[history_owner][1]
    return min(live.values())[1]


def why_not_ready(errors: Sequence[EntryError], current_version: int) -> Verdict:
    """A spec that does not open: one reason if every entry failed the same way."""
    kinds = {e.reason for e in errors}
    reason = errors[0].reason if len(kinds) == 1 else SpaceReason.INVALID_SECRETS
    keep = f"; version {current_version} stays current" if current_version else ""
    return Verdict(reason, "; ".join(e.message for e in errors) + keep)


def duplicate(namespace: str, primary: str) -> Verdict:
    return Verdict(
        SpaceReason.DUPLICATE_SPACE,
        f"namespace {namespace} already has the SpaceSecrets {primary}; "
        "a space has exactly one store, this one is ignored",
    )


# -- flows ----------------------------------------------------------------------------------------


class FlowFacts(NamedTuple):
    """What decides whether a flow may be handed its space's current version at all."""

    namespace: str
    operator_namespace: str
    has_space: bool
    approval_problem: str | None
    target_kind: str
    configmaps_allowed: bool
    missing_keys: Sequence[str]
    version: int


def why_not_synced(facts: FlowFacts) -> Verdict | None:
    """The first reason, in this order, that a flow gets nothing (None: it may be projected)."""
    if facts.namespace == facts.operator_namespace:
        return Verdict(FlowReason.OPERATOR_NAMESPACE, OPERATOR_NAMESPACE_MESSAGE)
    if not facts.has_space:
        return Verdict(
            FlowReason.SPACE_MISSING,
            f"namespace {facts.namespace} has no SpaceSecrets; the flow keeps its last projection",
        )
    if facts.approval_problem:
        return Verdict(FlowReason.APPROVAL_REQUIRED, facts.approval_problem)
    if facts.target_kind == "ConfigMap" and not facts.configmaps_allowed:
        return Verdict(
            FlowReason.CONFIGMAP_NOT_ALLOWED,
            "ConfigMap targets are disabled: a ConfigMap shows values to "
            "everyone who may read ConfigMaps; use a Secret",
        )
    if facts.missing_keys:
        return Verdict(
            FlowReason.MISSING_KEY,
            f"the space has no key {', '.join(facts.missing_keys)} (version {facts.version})",
        )
    return None


def why_yield(
    keeper: tuple[str, str] | None, uid: str, target_kind: str, target_name: str
) -> Verdict | None:
    """Whether a flow must leave its target alone, given who keeps it (uid, name; None: nobody,
    it is someone else's). None: the flow keeps it."""
    if keeper is None:
        return Verdict(
            FlowReason.TARGET_NOT_OWNED,
            f"{target_kind} {target_name} exists and is not managed by spacesecrets; "
            "it is left untouched",
        )
    if keeper[0] != uid:
        return Verdict(
            FlowReason.CONFLICT,
            f"{target_kind} {target_name} is already the target of FlowSecretSync {keeper[1]}",
        )
    return None


def epoch(rfc3339: str) -> float:
    """Seconds since the epoch of an RFC 3339 time; an unknown time is the distant past, so that
    any tick counts as having passed since it."""
    try:
        return parse_rfc3339(rfc3339).timestamp()
    except ValueError:
        return -math.inf


class Resume(NamedTuple):
    """A flow seen again by a new process, against its space's current version."""

    synced_version: int | None
    synced: bool
    observed_generation: Any
    generation: int
    space_version: int
    space_updated_at: str
    last_tick: float  # the flow's last autosync tick before now
    target_ours: bool


def may_keep_issued_version(resume: Resume) -> bool:
    """After a restart, a flow behind its space keeps the version it was issued until its next
    tick or save, as it would have without the restart -- unless its spec changed meanwhile, a
    tick passed while no operator ran, or its target is not ours. (Whether the target still
    holds exactly that version is checked against the history by the caller.)"""
    version = resume.synced_version
    if version is None or version == resume.space_version or not resume.synced:
        return False
    if resume.observed_generation != resume.generation:
        return False  # its spec changed meanwhile: that syncs at once
    if resume.last_tick >= epoch(resume.space_updated_at):
        return False  # a tick passed since the current version while no operator ran
    return resume.target_ours


# -- Sync now -------------------------------------------------------------------------------------


def sync_now_request(annotation: str | None, status: Mapping[str, Any]) -> str | None:
    """A flow's pending Sync now request: the value of its SYNC_NOW annotation, unless its status
    records that very value as handled (None: nothing pending, nothing to write)."""
    if not annotation:
        return None
    handled = status.get("syncNow")
    if isinstance(handled, Mapping) and handled.get("requested") == annotation:
        return None
    return annotation


def sync_now_handled(status: Mapping[str, Any], requested: str, at: str) -> dict[str, Any]:
    """`status` (the one the sync is about to write) with the request recorded as handled at
    `at`, with the version the flow then holds. A flow that may not be synced (ApprovalRequired,
    TargetNotOwned, ...) has its request handled too: the operator looked at it, the flow holds
    what it held before (no version if it never held one), and its Synced condition says why.
    Otherwise a refused request would stay pending and be tried again after every restart."""
    record: dict[str, Any] = {"requested": requested, "at": at}
    version = status.get("syncedVersion")
    if version is not None:
        record["version"] = version
    return {**status, "syncNow": record}


# -- the status each object gets ------------------------------------------------------------------


def synced_status(
    status: Mapping[str, Any],
    version: int,
    issued_at: str,
    *,
    generation: int,
    now: str,
    configmap: str | None = None,
) -> dict[str, Any]:
    """A flow's status once its target holds `version` (`configmap`: the ConfigMap target's name,
    flagged in a condition of its own)."""
    conditions = set_condition(
        status.get("conditions") or [],
        Condition.SYNCED,
        True,
        FlowReason.SYNCED,
        SYNC_MESSAGE,
        generation=generation,
        now=now,
    )
    if configmap is not None:
        conditions = set_condition(
            conditions,
            Condition.CONFIGMAP_TARGET,
            True,
            "ValuesReadableByConfigMapReaders",
            f"ConfigMap {configmap} shows the values to everyone who may read "
            "ConfigMaps in this namespace",
            generation=generation,
            now=now,
        )
    new = {k: v for k, v in status.items() if k != "behind"}  # derived, never stored
    return {
        **new,
        "syncedVersion": version,
        "issuedAt": issued_at,
        "observedGeneration": generation,
        "conditions": conditions,
    }


def failed_status(
    status: Mapping[str, Any],
    condition: str,
    reason: str,
    message: str,
    *,
    generation: int,
    now: str,
) -> dict[str, Any]:
    """An object's status with `condition` False for `reason`; what it was issued stays."""
    new = {k: v for k, v in status.items() if k != "behind"}
    return {
        **new,
        "observedGeneration": generation,
        "conditions": set_condition(
            status.get("conditions") or [],
            condition,
            False,
            reason,
            message,
            generation=generation,
            now=now,
        ),
    }


def status_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch turning `old` into `new` (top-level fields; removed ones set to null)."""
    patch: dict[str, Any] = {k: v for k, v in new.items() if old.get(k) != v}
    patch.update({k: None for k in old if k not in new})
    return patch


def status_digest(status: Mapping[str, Any] | None) -> str:
    """A space's status in the form the API server stores it (a merge patch's nulls remove
    fields), as a short digest: what its last reconcile left is compared with what the watch
    brings without keeping thousands of statuses."""
    text = json.dumps(status or {}, sort_keys=True, separators=(",", ":"))
    if "null" in text:  # a None somewhere (rare): only then is there anything to strip
        text = json.dumps(_without_nulls(status), sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _without_nulls(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value
