"""The operator's work, between the thin kopf handlers and the pure core.

Edge (talks to the API through `kube`, never through kopf). `Operator` holds the in-memory state
the handlers share: the key ring, the current version of every accepted space (with its values,
which only ever leave memory into a flow's target), and the known FlowSecretSyncs with what each was
last issued. Autosync ticks are answered from this state with no API call; an API write happens
only when something actually changes.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
import logging
import math
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

from spacesecrets import projection
from spacesecrets.core import access, crypto, provenance, schedule, versions
from spacesecrets.core.conditions import get_condition, now_rfc3339, parse_rfc3339, set_condition
from spacesecrets.core.settings import Settings
from spacesecrets.kube import SPACES, AlreadyExists, Kube, NotFound, Permanent, Temporary
from spacesecrets.metrics import Metrics, State
from spacesecrets.projection import Claimant, FlowSpec, Ownership, SpaceView

log = logging.getLogger("spacesecrets")

ROLLBACK_ANNOTATION = "spacesecrets.io/rollback-to"
RESTORED_ANNOTATION = "spacesecrets.io/restored-from"
SPACE_LABEL = "spacesecrets.io/space"
ARCHIVE_LABEL = "spacesecrets.io/archived-space"  # the history of a deleted space set aside
HISTORY_PREFIX = "history-"
ARCHIVE_PREFIX = "archive-"  # + the deleted SpaceSecrets' uid

# Condition reasons and event reasons: constants, so alerts and tests can match on them.
UNSEALED = "Unsealed"
DUPLICATE_SPACE = "DuplicateSpace"
ROLLBACK_FAILED = "RollbackFailed"
ROLLED_BACK = "RolledBack"
VERSION_CREATED = "VersionCreated"
SYNCED = "Synced"
SPACE_MISSING = "SpaceMissing"
MISSING_KEY = "MissingKey"
TARGET_NOT_OWNED = "TargetNotOwned"
CONFLICT = "Conflict"
CONFIGMAP_NOT_ALLOWED = "ConfigMapNotAllowed"
CONFIGMAP_TARGET = "ConfigMapTarget"
TARGET_RESTORED = "TargetRestored"
TARGET_IMMUTABLE = "TargetImmutable"
TARGET_UNREADABLE = "TargetUnreadable"
ISSUED = "Issued"
ABSENT = "absent"
# Why a flow is synced. Only a drift restore and a first sync after its space was accepted
# behave differently from the rest.
DRIFT = "drift"
RESUME = "resume"  # a flow issued before this process started
SPACE_READY = "space ready"
SYNC_MESSAGE = "🆗 Synced"
MESSAGE_LIMIT = 512  # of an API server's refusal quoted in a condition
OWNERS_CHANGED = "owners changed"
OWNERS_DRIFT = "owners binding drift"
APPROVAL_REQUIRED = "ApprovalRequired"
OPERATOR_NAMESPACE = "OperatorNamespace"
RESTORE_NOT_ALLOWED = "RestoreNotAllowed"
RESTORED = "Restored"
ROLE_BINDING_NOT_OWNED = "RoleBindingNotOwned"
OWNERS_BOUND = "OwnersBound"

Event = tuple[str, str, str]  # type, reason, message
Refusal = tuple[bool, str]  # whether a new store continues a deleted one's history, and why
_UID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_OPERATOR_NAMESPACE_MESSAGE = (
    "this is the spacesecrets operator's own namespace (its keys and every space's history "
    "live here): spaces and flows are not served in it; use another namespace"
)


class SpaceNotReady(Temporary):
    """A flow's space exists but has no accepted version yet: the flow waits for it."""


@dataclass(slots=True)
class FlowEntry:
    """What the operator knows of one FlowSecretSync between events.

    The operator holds one for every flow as long as it runs: the last written status is kept
    packed as JSON, with the two figures read between syncs beside it.
    """

    namespace: str
    name: str
    uid: str
    created: str
    spec: FlowSpec
    flow_ref: tuple[str, str] | None
    generation: int
    packed_status: bytes = field(default=b"{}", repr=False)
    synced_version: int | None = None
    synced: bool = False
    deleting: bool = False
    target_fingerprint: str | None = None
    template_hash: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    authorized_by: str | None = None  # the API server's stamp (provenance.AUTHORIZED_BY)

    @property
    def status(self) -> dict[str, Any]:
        """The status as last written (a fresh copy)."""
        return cast(dict[str, Any], json.loads(self.packed_status))

    @status.setter
    def status(self, status: Mapping[str, Any]) -> None:
        self.packed_status = json.dumps(status, separators=(",", ":")).encode()
        value = status.get("syncedVersion")
        self.synced_version = int(value) if value is not None else None
        cond = get_condition(status.get("conditions") or [], "Synced")
        self.synced = bool(cond and cond.get("status") == "True")


def _epoch(rfc3339: str) -> float:
    try:
        return parse_rfc3339(rfc3339).timestamp()
    except ValueError:
        return math.inf  # unknown: as if a tick had passed since


def fingerprint(obj: Mapping[str, Any]) -> str:
    """A digest of what a target holds that matters (data, our labels and version annotation)."""
    meta = obj.get("metadata") or {}
    relevant = {
        "data": obj.get("data") or {},
        "labels": meta.get("labels") or {},
        "version": (meta.get("annotations") or {}).get(projection.VERSION_ANNOTATION),
        "owners": [r.get("uid") for r in meta.get("ownerReferences") or []],
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


def template_hash(workload: Mapping[str, Any]) -> str:
    template = (workload.get("spec") or {}).get("template") or {}
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()


class SpaceOwners(NamedTuple):
    """Who owns a space's current store (from its spec, kept with its history)."""

    name: str
    uid: str
    owners: tuple[provenance.Owner, ...]


class Operator:
    def __init__(
        self,
        settings: Settings,
        kube: Kube,
        metrics: Metrics | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.settings = settings
        self.kube = kube
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.ring: crypto.KeyRing | None = None
        self._ring_rv = ""
        self.spaces: dict[str, SpaceView] = {}
        self.flows: dict[tuple[str, str], FlowEntry] = {}
        self._flows_by_ns: dict[str, dict[str, FlowEntry]] = {}  # the same, by namespace
        # read at scrape time, so the age moves between rotations without anyone writing it
        self.metrics.key_ring_age.set_function(
            lambda: self.ring.age(self.clock()) if self.ring else 0.0
        )
        self.metrics.report_state(self.metrics_state)
        self._lock = threading.RLock()
        self._space_locks: dict[str, threading.Lock] = {}
        # caches that only save reads (see prefetch_histories and _primary_space)
        self._histories: dict[str, tuple[dict[str, str], str]] = {}
        self._histories_complete = False
        self._history_exists: set[str] = set()
        self._space_index: dict[str, dict[str, tuple[str, str]]] = {}
        self._owners_written: dict[str, list[tuple[str, str, str]]] = {}
        self.space_owners: dict[str, SpaceOwners] = {}

    def now(self) -> str:
        return now_rfc3339(self.clock())

    def metrics_state(self) -> State:
        """Each space's version and each issued flow's, computed when /metrics is scraped."""
        with self._lock:
            spaces = [(ns, view.version) for ns, view in self.spaces.items()]
            flows = []
            for (ns, name), entry in self.flows.items():
                synced = entry.synced_version
                if synced is None:
                    continue
                space = self.spaces.get(ns)
                behind = max(0, space.version - synced) if space else entry.status.get("behind")
                flows.append((ns, name, synced, int(behind or 0)))
        return State(spaces, flows)

    # =========================================================================================
    # Key ring
    # =========================================================================================

    def load_keyring(self) -> crypto.KeyRing:
        """Read the key ring, creating it on first start. Two replicas racing end with one ring."""
        ns, name = self.settings.namespace, self.settings.keyring_secret
        try:
            secret = self.kube.get("Secret", ns, name)
        except NotFound:
            ring = crypto.KeyRing.create(self.clock())
            body = {
                "metadata": {
                    "name": name,
                    "namespace": ns,
                    "labels": {"app.kubernetes.io/managed-by": "spacesecrets"},
                },
                "type": "Opaque",
                "data": {"keyring.json": _b64(ring.to_json())},
            }
            try:
                secret = self.kube.create("Secret", ns, body)
                log.info("created the key ring with sealing key %s", ring.current.kid)
            except AlreadyExists:
                secret = self.kube.get("Secret", ns, name)  # the other replica won the race
        self._adopt_ring(secret)
        assert self.ring is not None
        self.publish_public_keys()
        return self.ring

    def _adopt_ring(self, secret: Mapping[str, Any]) -> None:
        data = (secret.get("data") or {}).get("keyring.json", "")
        self.ring = crypto.KeyRing.from_json(_unb64(data))
        self._ring_rv = str((secret.get("metadata") or {}).get("resourceVersion", ""))

    def require_ring(self) -> crypto.KeyRing:
        if self.ring is None:
            self.load_keyring()
        assert self.ring is not None
        return self.ring

    def rotate_if_due(self) -> bool:
        ring = self.require_ring()
        now = self.clock()
        if not ring.needs_rotation(now, self.settings.rotation_period):
            return False
        new = ring.rotated(now)
        body = {
            "metadata": {
                "name": self.settings.keyring_secret,
                "namespace": self.settings.namespace,
                "resourceVersion": self._ring_rv,
                "labels": {"app.kubernetes.io/managed-by": "spacesecrets"},
            },
            "type": "Opaque",
            "data": {"keyring.json": _b64(new.to_json())},
        }
        try:
            secret = self.kube.replace("Secret", self.settings.namespace, body)
        except Temporary:
            self.load_keyring()  # somebody else rotated; take theirs
            return False
        self._adopt_ring(secret)
        self.publish_public_keys()
        log.info("rotated the key ring: sealing key %s is now current", new.current.kid)
        return True

    def publish_public_keys(self) -> None:
        ring = self.require_ring()
        pems = ring.public_pems()
        data = {
            "current.kid": ring.current.kid,
            "current.pem": pems[ring.current.kid],
            "keys.json": json.dumps(pems, sort_keys=True),
        }
        ns, name = self.settings.namespace, self.settings.public_keys_configmap
        body: dict[str, Any] = {
            "metadata": {
                "name": name,
                "namespace": ns,
                "labels": {"app.kubernetes.io/managed-by": "spacesecrets"},
            },
            "data": data,
        }
        try:
            existing = self.kube.get("ConfigMap", ns, name)
        except NotFound:
            with contextlib.suppress(AlreadyExists):  # the other replica published it
                self.kube.create("ConfigMap", ns, body)
            return
        if existing.get("data") != data:
            body["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
            self.kube.replace("ConfigMap", ns, body)

    # =========================================================================================
    # History store
    # =========================================================================================

    def history_name(self, namespace: str) -> str:
        return f"{HISTORY_PREFIX}{namespace}"

    def prefetch_histories(self) -> None:
        """Read every space's history in one LIST, so the first reconciles need not GET theirs.

        Each prefetched history is handed out once and then dropped: afterwards a history is read
        when its space changes, which is rare, instead of thousands being held in memory. Every
        write is conditional on the resourceVersion read, so a stale copy costs a retry, never a
        lost version."""
        for secret in self.kube.list_secrets(self.settings.namespace, SPACE_LABEL):
            namespace = (secret["metadata"].get("labels") or {}).get(SPACE_LABEL)
            if namespace:
                entry = self._cache_entry(secret)
                with self._lock:
                    self._histories[namespace] = entry
                    self._history_exists.add(namespace)
        with self._lock:
            self._histories_complete = True

    @staticmethod
    def _cache_entry(secret: Mapping[str, Any]) -> tuple[dict[str, str], str]:
        data = {k: _unb64(v) for k, v in (secret.get("data") or {}).items()}
        return data, str(secret["metadata"].get("resourceVersion", ""))

    def read_history(
        self, namespace: str, keep: bool = False
    ) -> tuple[versions.History | None, str]:
        """The history and its resourceVersion. A prefetched copy is handed out once, unless
        `keep` (a read that writes nothing leaves it for the space's reconcile)."""
        with self._lock:
            cached = (self._histories.get if keep else self._histories.pop)(namespace, None)
            known_absent = (
                cached is None
                and self._histories_complete
                and namespace not in self._history_exists
            )
        if cached is None and not known_absent:
            try:
                secret = self.kube.get(
                    "Secret", self.settings.namespace, self.history_name(namespace)
                )
            except NotFound:
                return None, ""
            cached = self._cache_entry(secret)
        if cached is None:
            return None, ""
        data, rv = cached
        return versions.History.from_data(namespace, data), rv

    def _forget_history(self, namespace: str) -> None:
        """Whatever we hold of this history may be stale: the next read asks the API."""
        with self._lock:
            self._histories.pop(namespace, None)
            self._history_exists.add(namespace)

    def write_history(self, history: versions.History, rv: str) -> None:
        body: dict[str, Any] = {
            "metadata": {
                "name": self.history_name(history.namespace),
                "namespace": self.settings.namespace,
                "labels": {
                    "app.kubernetes.io/managed-by": "spacesecrets",
                    SPACE_LABEL: history.namespace,
                },
            },
            "type": "Opaque",
            "data": {k: _b64(v) for k, v in history.to_data().items()},
        }
        try:
            if rv:
                body["metadata"]["resourceVersion"] = rv
                self.kube.replace("Secret", self.settings.namespace, body)
            else:
                self.kube.create("Secret", self.settings.namespace, body)
        except AlreadyExists:
            self._forget_history(history.namespace)
            raise Temporary("the history was created concurrently", delay=1) from None
        except Temporary:
            self._forget_history(history.namespace)  # e.g. 409: somebody else wrote it
            raise
        with self._lock:
            self._history_exists.add(history.namespace)

    # =========================================================================================
    # SpaceSecrets
    # =========================================================================================

    def _space_lock(self, namespace: str) -> threading.Lock:
        with self._lock:
            return self._space_locks.setdefault(namespace, threading.Lock())

    def reconcile_space(self, body: Mapping[str, Any]) -> None:
        namespace = body["metadata"]["namespace"]
        timer = self.metrics.reconcile_seconds.labels("SpaceSecrets").time()
        with self._space_lock(namespace), timer:
            try:
                self._reconcile_space(body)
            except Permanent as exc:
                # a retry would be refused the same way: report it, and wait for a change
                status = dict(body.get("status") or {})
                self._space_failed(body, status, exc.reason, str(exc)[:MESSAGE_LIMIT])

    def _reconcile_space(self, body: Mapping[str, Any]) -> None:
        meta = body["metadata"]
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        generation = int(meta.get("generation", 0))
        spec = body.get("spec") or {}
        status: dict[str, Any] = dict(body.get("status") or {})
        annotations = meta.get("annotations") or {}
        ring = self.require_ring()

        self.observe_space(body)
        if ns == self.settings.namespace:
            self._space_failed(body, status, OPERATOR_NAMESPACE, _OPERATOR_NAMESPACE_MESSAGE)
            return
        history, rv = self.read_history(ns)
        primary = self._primary_space(ns, history)
        if primary is not None and primary != name:
            self._space_failed(
                body,
                status,
                DUPLICATE_SPACE,
                f"namespace {ns} already has the SpaceSecrets {primary}; "
                "a space has exactly one store, this one is ignored",
            )
            return
        history, rv, refusal = self._take_history(body, history, rv)
        if ROLLBACK_ANNOTATION in annotations:
            self._rollback(body, status, history, annotations[ROLLBACK_ANNOTATION])
            return

        plain, errors = versions.open_spec(ring, ns, spec.get("data") or {})
        if any(e.reason == crypto.UNKNOWN_KID for e in errors):
            self.load_keyring()  # another replica may have rotated; try once with the fresh ring
            ring = self.require_ring()
            plain, errors = versions.open_spec(ring, ns, spec.get("data") or {})
        if errors:
            for e in errors:
                self.metrics.unseal_failures.labels(e.reason).inc()
            reason = errors[0].reason if len({e.reason for e in errors}) == 1 else "InvalidSecrets"
            current = history.version if history else 0
            keep = f"; version {current} stays current" if current else ""
            self._space_failed(body, status, reason, "; ".join(e.message for e in errors) + keep)
            return

        new_history = history is None
        if history is None:
            history = versions.History.new(ring, ns)
        rollback_of = _int_or_none(annotations.get(RESTORED_ANNOTATION))
        if rollback_of is not None and rollback_of in history.kept_versions():
            if versions.serialize_plain(history.values(ring, rollback_of)) != (
                versions.serialize_plain(plain)
            ):
                rollback_of = None
        else:
            rollback_of = None
        if not history.index.get("namespaceUid"):  # a new history: which namespace is it of
            history.index["namespaceUid"] = self.kube.namespace_uid(ns)
        facts_changed = _record_facts(history, body)
        change = versions.record(
            history,
            ring,
            plain,
            self.now(),
            int(spec.get("historyLimit", 20)),
            rollback_of=rollback_of,
        )
        rewrapped = history.rewrapped(ring)
        if change or rewrapped or new_history or facts_changed or history.deleted_at:
            history.index["deletedAt"] = None
            self.write_history(history, rv)

        self._remember_space(history, plain)
        bound = self.ensure_owners(ns, spec.get("owners") or [], name, uid, fresh=not status)

        new_status = {
            **status,
            **versions.status_fields(history, versions.sealing_kids(spec.get("data") or {})),
            "observedGeneration": generation,
        }
        message = f"version {history.version}: {len(plain)} keys"
        new_status["conditions"] = set_condition(
            status.get("conditions") or [],
            "Ready",
            True,
            UNSEALED,
            message,
            generation=generation,
            now=self.now(),
        )
        new_status["conditions"] = self._owners_condition(body, new_status["conditions"], bound)
        if refusal is not None:
            new_status["conditions"] = self._restore_condition(
                body, new_status["conditions"], refusal
            )
        if change and rollback_of is not None:
            new_status["conditions"] = set_condition(
                new_status["conditions"],
                "Rollback",
                True,
                ROLLED_BACK,
                f"version {rollback_of} restored as version {change.version}",
                generation=generation,
                now=self.now(),
            )
        if change:
            text = (
                f"version {change.version}: added {change.added}, changed {change.changed}, "
                f"removed {change.removed}"
            )
            if rollback_of is not None:
                text += f" (restores version {rollback_of})"
            self.kube.event(body, "Normal", VERSION_CREATED, text)
            log.info("space %s: %s", ns, text)  # key names only, like the Event
        self._write_status(SPACES, body, status, new_status)

    def _owners_condition(
        self, body: Mapping[str, Any], conditions: list[dict[str, Any]], problem: str | None
    ) -> list[dict[str, Any]]:
        """`OwnersBound`: whether the owners' RoleBinding is the one the operator keeps."""
        generation = int(body["metadata"].get("generation", 0))
        old = get_condition(conditions, OWNERS_BOUND) or {}
        if problem is None:
            if not old:
                return conditions  # the usual case says nothing: no condition to keep
            return set_condition(
                conditions,
                OWNERS_BOUND,
                True,
                "Bound",
                f"RoleBinding {access.OWNERS_ROLE_BINDING} binds the owners",
                generation=generation,
                now=self.now(),
            )
        if (old.get("reason"), old.get("message")) != (ROLE_BINDING_NOT_OWNED, problem):
            self.kube.event(body, "Warning", ROLE_BINDING_NOT_OWNED, problem)
        return set_condition(
            conditions,
            OWNERS_BOUND,
            False,
            ROLE_BINDING_NOT_OWNED,
            problem,
            generation=generation,
            now=self.now(),
        )

    def _restore_condition(
        self, body: Mapping[str, Any], conditions: list[dict[str, Any]], refusal: Refusal
    ) -> list[dict[str, Any]]:
        """`Restore`: whether the store continues the history a deleted one left (said once)."""
        allowed, message = refusal
        reason = RESTORED if allowed else RESTORE_NOT_ALLOWED
        self.kube.event(body, "Normal" if allowed else "Warning", reason, message)
        return set_condition(
            conditions,
            "Restore",
            allowed,
            reason,
            message,
            generation=int(body["metadata"].get("generation", 0)),
            now=self.now(),
        )

    # -- a new store and the history a deleted one left ----------------------------------------

    def _take_history(
        self, body: Mapping[str, Any], history: versions.History | None, rv: str
    ) -> tuple[versions.History | None, str, Refusal | None]:
        """The history a SpaceSecrets continues. Its own; or, for a new store, the history a
        deleted one left -- only when a former owner (or a cluster admin) created it in the same
        namespace, or asked for it by uid (`restore-from`). Anyone else starts afresh at version
        1: the old history is set aside (kept for the retention period) and the refusal says who
        may restore it. Returns the history (None: start afresh), its resourceVersion and what
        to report, if anything."""
        meta = body["metadata"]
        ns, uid = meta["namespace"], meta["uid"]
        annotations = meta.get("annotations") or {}
        restore_from = str(annotations.get(provenance.RESTORE_FROM) or "")
        if history is not None and history.index.get("spaceUid") in (None, uid):
            return history, rv, None  # its own (or one that never had a store)
        if history is None and not restore_from:
            return None, rv, None
        candidate = history
        if restore_from and (history is None or history.index.get("spaceUid") != restore_from):
            candidate = self._read_archive(ns, restore_from)
        if candidate is None:
            refusal: str | None = (
                f"no history of a deleted SpaceSecrets with uid {restore_from[:40]!r} is kept "
                f"for namespace {ns}; this SpaceSecrets starts at version 1"
            )
        else:
            former = provenance.FormerSpace.of(candidate.index)
            creator = provenance.Identity.parse(annotations.get(provenance.CREATED_BY))
            namespace_uid = self.kube.namespace_uid(ns)
            refusal = provenance.restore_refusal(
                former, ns, namespace_uid, creator, restore_from or None
            )
        if refusal is not None or candidate is None:
            if history is not None:
                self._archive(history)
            return None, rv, (False, str(refusal))
        message = (
            f"continues the history of the deleted SpaceSecrets {former.name} "
            f"(uid {former.uid}, version {candidate.version})"
        )
        candidate.index["namespaceUid"] = namespace_uid  # restored into this namespace now
        if candidate is not history:
            if history is not None:
                self._archive(history)
            self.write_history(candidate, rv)  # the archived history takes the namespace's place
            self._drop_archive(former.uid)
            history, rv = self.read_history(ns)
        return history, rv, (True, message)

    def _archive(self, history: versions.History) -> None:
        """Keep a deleted space's history aside under its uid (idempotent)."""
        if not history.deleted_at:
            history.index["deletedAt"] = self.now()
        space_uid = str(history.index.get("spaceUid") or "unknown")
        body: dict[str, Any] = {
            "metadata": {
                "name": f"{ARCHIVE_PREFIX}{space_uid}",
                "namespace": self.settings.namespace,
                "labels": {
                    "app.kubernetes.io/managed-by": "spacesecrets",
                    ARCHIVE_LABEL: history.namespace,
                },
            },
            "type": "Opaque",
            "data": {k: _b64(v) for k, v in history.to_data().items()},
        }
        with contextlib.suppress(AlreadyExists):
            self.kube.create("Secret", self.settings.namespace, body)
        log.info("space %s: set aside the history of SpaceSecrets %s", history.namespace, space_uid)

    def _read_archive(self, namespace: str, space_uid: str) -> versions.History | None:
        if not _UID.fullmatch(space_uid):
            return None
        try:
            secret = self.kube.get(
                "Secret", self.settings.namespace, f"{ARCHIVE_PREFIX}{space_uid}"
            )
        except NotFound:
            return None
        if (secret["metadata"].get("labels") or {}).get(ARCHIVE_LABEL) != namespace:
            return None  # another namespace's: sealed for its name, never handed across
        data, _ = self._cache_entry(secret)
        return versions.History.from_data(namespace, data)

    def _drop_archive(self, space_uid: str) -> None:
        with contextlib.suppress(NotFound):
            self.kube.delete("Secret", self.settings.namespace, f"{ARCHIVE_PREFIX}{space_uid}")

    def observe_space(self, body: Mapping[str, Any], deleted: bool = False) -> None:
        """Keep the in-memory index of live SpaceSecrets per namespace (from kopf's events)."""
        meta = body["metadata"]
        with self._lock:
            known = self._space_index.setdefault(meta["namespace"], {})
            if deleted or meta.get("deletionTimestamp"):
                known.pop(meta["uid"], None)
            else:
                known[meta["uid"]] = (str(meta.get("creationTimestamp", "")), str(meta["name"]))

    def seed_space_index(self, namespaces: tuple[str, ...] = ()) -> None:
        """Index every live SpaceSecrets before the first event arrives (one metadata-only LIST
        per watched scope), so a flow seen before its space knows the space exists."""
        for ns in namespaces or (None,):
            try:
                items = self.kube.list_custom_metadata(SPACES, ns)
            except NotFound:  # the CRD is not served yet: no spaces, the watch fills the index
                continue
            for meta in items:
                self.observe_space({"metadata": meta})

    def _primary_space(self, namespace: str, history: versions.History | None = None) -> str | None:
        """The namespace's store: the one the history belongs to, else the oldest; any other
        SpaceSecrets there is a duplicate."""
        owner = history.index.get("spaceUid") if history and not history.deleted_at else None
        with self._lock:
            live = dict(self._space_index.get(namespace, {}))
        if owner and owner not in live:
            # the history's owner may simply not be indexed yet (e.g. during the first listing
            # after a restart): ask the API rather than hand its history to another object
            items = self.kube.list_custom(SPACES, namespace)
            live = {
                i["metadata"]["uid"]: (i["metadata"]["creationTimestamp"], i["metadata"]["name"])
                for i in items
                if not i["metadata"].get("deletionTimestamp")
            }
        if not live:
            return None
        if owner in live:
            return live[owner][1]
        return min(live.values())[1]

    def _space_exists(self, namespace: str) -> bool:
        """Whether the namespace has a live SpaceSecrets. The index answers yes at once; a no is
        confirmed with the API, as the index may still be filling after a restart."""
        if self._primary_space(namespace) is not None:
            return True
        items = self.kube.list_custom(SPACES, namespace)
        return any(not i["metadata"].get("deletionTimestamp") for i in items)

    def _space_failed(
        self, body: Mapping[str, Any], status: dict[str, Any], reason: str, message: str
    ) -> None:
        generation = int(body["metadata"].get("generation", 0))
        new_status = {**status, "observedGeneration": generation}
        new_status["conditions"] = set_condition(
            status.get("conditions") or [],
            "Ready",
            False,
            reason,
            message,
            generation=generation,
            now=self.now(),
        )
        old = get_condition(status.get("conditions") or [], "Ready") or {}
        if (old.get("reason"), old.get("message"), old.get("observedGeneration")) != (
            reason,
            message,
            generation,
        ):
            self.kube.event(body, "Warning", reason, message)
        log.warning(
            "space %s/%s not accepted: %s: %s",
            body["metadata"]["namespace"],
            body["metadata"]["name"],
            reason,
            message,
        )
        self._write_status(SPACES, body, status, new_status)

    def _rollback(
        self,
        body: Mapping[str, Any],
        status: dict[str, Any],
        history: versions.History | None,
        raw: str,
    ) -> None:
        meta = body["metadata"]
        ns, name = meta["namespace"], meta["name"]
        ring = self.require_ring()
        target = _int_or_none(raw)
        kept = history.kept_versions() if history else []
        if target is None or target not in kept:
            message = f"cannot roll back to version {raw!s:.20}: kept versions are {kept}"
            self.kube.patch_custom(
                SPACES, ns, name, {"metadata": {"annotations": {ROLLBACK_ANNOTATION: None}}}
            )
            # a refused rollback is its own condition: the space itself stays Ready
            new_status = {
                **status,
                "conditions": set_condition(
                    status.get("conditions") or [],
                    "Rollback",
                    False,
                    ROLLBACK_FAILED,
                    message,
                    generation=int(meta.get("generation", 0)),
                    now=self.now(),
                ),
            }
            self.kube.event(body, "Warning", ROLLBACK_FAILED, message)
            self._write_status(SPACES, body, status, new_status)
            return
        assert history is not None
        plain = history.values(ring, target)
        data: dict[str, Any] = {
            k: {
                "format": v.format,
                "sealed": crypto.seal(ring.current.public, ns, k, v.format, v.data),
            }
            for k, v in plain.items()
        }
        for k in (body.get("spec") or {}).get("data") or {}:
            data.setdefault(k, None)  # merge patch: null removes keys N did not have
        self.kube.patch_custom(
            SPACES,
            ns,
            name,
            {
                "metadata": {
                    "annotations": {ROLLBACK_ANNOTATION: None, RESTORED_ANNOTATION: str(target)}
                },
                "spec": {"data": data},
            },
        )
        self.kube.event(body, "Normal", ROLLED_BACK, f"restoring version {target} as a new version")

    def _write_status(
        self,
        plural: str,
        body: Mapping[str, Any],
        old: Mapping[str, Any],
        new: Mapping[str, Any],
    ) -> None:
        """Patch the status only when it changed: an unchanged object costs no write."""
        if dict(new) != dict(old):
            meta = body["metadata"]
            self.kube.patch_status(plural, meta["namespace"], meta["name"], _status_patch(old, new))

    def _remember_space(self, history: versions.History, plain: versions.Plain) -> None:
        index = history.index
        view = SpaceView.of(
            namespace=history.namespace,
            version=history.version,
            created_at=str(index.get("createdAt")),
            updated_at=str(index.get("updatedAt")),
            keys=index.get("keys", {}),
            values=plain,
        )
        owners = tuple((str(k), str(n)) for k, n in index.get("owners") or [])
        store = SpaceOwners(str(index.get("spaceName") or ""), str(index.get("spaceUid")), owners)
        with self._lock:
            self.spaces[history.namespace] = view
            self.space_owners[history.namespace] = store

    def space_deleted(self, namespace: str, name: str) -> None:
        """The store is gone: keep its history for the retention period; flows keep their data."""
        if self._primary_space(namespace) is not None:
            return  # a duplicate was deleted, the store remains
        with self._lock:
            self.spaces.pop(namespace, None)
            self.space_owners.pop(namespace, None)
            self._owners_written.pop(namespace, None)  # garbage collection removes the binding
        history, rv = self.read_history(namespace)
        if history is not None and not history.deleted_at:
            history.index["deletedAt"] = self.now()
            self.write_history(history, rv)
        for entry in self.flows_in(namespace):
            self.sync_flow(entry.namespace, entry.name, reason="space deleted")

    def ensure_owners(
        self,
        namespace: str,
        owners: Sequence[Mapping[str, Any]],
        name: str,
        uid: str,
        fresh: bool = False,
    ) -> str | None:
        """Write the owners' RoleBinding if it differs. `fresh`: the space was never reconciled,
        so the binding most likely does not exist yet and is created without a read first.
        A RoleBinding of that name that spacesecrets did not create is never overwritten: what
        is wrong is returned, for a condition and a Warning."""
        desired = access.desired_role_binding(namespace, owners, name, uid)
        subjects = access.normalized(desired["subjects"])
        if self._owners_written.get(namespace) == subjects:
            return None  # unchanged since we last wrote or saw it: no read needed
        if fresh:
            try:
                self.kube.create_role_binding(namespace, desired)
            except AlreadyExists:
                fresh = False
        if not fresh:
            try:
                existing = self.kube.get_role_binding(namespace, access.OWNERS_ROLE_BINDING)
            except NotFound:
                self.kube.create_role_binding(namespace, desired)
            else:
                if not access.managed(existing):
                    return access.not_managed_message(namespace)
                if not access.role_binding_current(existing, desired):
                    desired["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
                    self.kube.replace_role_binding(namespace, desired)
        self._owners_written[namespace] = subjects
        return None

    def role_binding_event(self, event_type: str, obj: Mapping[str, Any]) -> str | None:
        """An owners' RoleBinding we manage changed: the namespace whose binding to repair, when
        someone else deleted or edited it (our own writes match what the space wants)."""
        meta = obj.get("metadata") or {}
        namespace = str(meta.get("namespace", ""))
        if meta.get("name") != access.OWNERS_ROLE_BINDING:
            return None
        with self._lock:
            store = self.space_owners.get(namespace)
            live = bool(self._space_index.get(namespace))
        if store is None or not live:
            return None  # no store (any more): garbage collection removes its binding
        owners = [{"kind": k, "name": n} for k, n in store.owners]
        desired = access.desired_role_binding(namespace, owners, store.name, store.uid)
        if event_type != "DELETED" and access.role_binding_current(obj, desired):
            return None
        with self._lock:
            self._owners_written.pop(namespace, None)
        return namespace

    def repair_owners(self, namespace: str) -> None:
        """Bring the owners' RoleBinding back to what the space's owners say."""
        store = self.space_owners.get(namespace)
        if store is None:
            return
        owners = [{"kind": k, "name": n} for k, n in store.owners]
        problem = self.ensure_owners(namespace, owners, store.name, store.uid)
        if problem:
            log.warning("space %s: %s", namespace, problem)
        else:
            log.info("space %s: repaired RoleBinding %s", namespace, access.OWNERS_ROLE_BINDING)

    def load_space(self, namespace: str) -> bool:
        """Load a space's current version from the history (e.g. for a flow before its space's
        first reconcile after a restart). False when there is nothing to load."""
        history, _ = self.read_history(namespace, keep=True)
        if history is None or history.deleted_at or not history.version:
            return False
        self._remember_space(history, history.values(self.require_ring()))
        return True

    def housekeeping(self) -> None:
        """Drop the histories of spaces deleted longer ago than the retention period (those of
        the namespaces and those set aside)."""
        cutoff = self.clock() - dt.timedelta(seconds=self.settings.history_retention)
        for label in (SPACE_LABEL, ARCHIVE_LABEL):
            for secret in self.kube.list_secrets(self.settings.namespace, label):
                data = (secret.get("data") or {}).get("index.json")
                if not data:
                    continue
                deleted = json.loads(_unb64(data)).get("deletedAt")
                if not deleted or parse_rfc3339(deleted) >= cutoff:
                    continue
                self.kube.delete("Secret", self.settings.namespace, secret["metadata"]["name"])
                namespace = (secret["metadata"].get("labels") or {}).get(label)
                if label == SPACE_LABEL:
                    with self._lock:
                        self._history_exists.discard(namespace)
                log.info("dropped a history of %s (deleted %s)", namespace, deleted)

    # =========================================================================================
    # FlowSecretSync
    # =========================================================================================

    def register_flow(self, body: Mapping[str, Any]) -> FlowEntry:
        meta = body["metadata"]
        spec = body.get("spec") or {}
        ref = spec.get("flowRef")
        key = (meta["namespace"], meta["name"])
        with self._lock:
            entry = self.flows.get(key)
            flow = FlowSpec.from_body(meta["name"], meta["uid"], spec)
            flow_ref = (str(ref["kind"]), str(ref["name"])) if ref else None
            if entry is None or entry.uid != meta["uid"]:
                entry = FlowEntry(
                    namespace=meta["namespace"],
                    name=meta["name"],
                    uid=meta["uid"],
                    created=str(meta.get("creationTimestamp", "")),
                    spec=flow,
                    flow_ref=flow_ref,
                    generation=int(meta.get("generation", 0)),
                )
                entry.status = body.get("status") or {}
                self.flows[key] = entry
                self._flows_by_ns.setdefault(key[0], {})[key[1]] = entry
            else:
                if entry.flow_ref != flow_ref:
                    entry.template_hash = None
                entry.spec, entry.flow_ref = flow, flow_ref
                entry.generation = int(meta.get("generation", 0))
            entry.deleting = bool(meta.get("deletionTimestamp"))
            entry.authorized_by = (meta.get("annotations") or {}).get(provenance.AUTHORIZED_BY)
            return entry

    def forget_flow(self, namespace: str, name: str) -> None:
        with self._lock:
            self.flows.pop((namespace, name), None)
            self._flows_by_ns.get(namespace, {}).pop(name, None)

    def flows_in(self, namespace: str) -> list[FlowEntry]:
        with self._lock:
            in_namespace = self._flows_by_ns.get(namespace, {}).values()
            return [e for e in in_namespace if not e.deleting]

    def needs_tick(self, namespace: str, name: str) -> bool:
        """At an autosync tick: is there anything to do? Answered from memory alone."""
        entry = self.flows.get((namespace, name))
        if entry is None or entry.deleting:
            return False
        space = self.spaces.get(namespace)
        if space is None:
            return entry.synced  # a space vanished: report it; otherwise nothing to do
        return entry.synced_version != space.version or not entry.synced

    def sync_flow(
        self,
        namespace: str,
        name: str,
        *,
        reason: str,
    ) -> None:
        entry = self.flows.get((namespace, name))
        if entry is None or entry.deleting:
            return
        with entry.lock, self.metrics.reconcile_seconds.labels("FlowSecretSync").time():
            if reason == SPACE_READY and entry.synced:
                return  # synced already: a new version waits for the flow's tick or save
            self._seed_template_hash(entry)
            try:
                self._sync_flow(entry, reason)
            except Permanent as exc:
                # a retry would be refused the same way: report it, and wait for a change
                self._flow_failed(entry, exc.reason, str(exc)[:MESSAGE_LIMIT])

    def _seed_template_hash(self, entry: FlowEntry) -> None:
        """Remember the flowRef's pod template as it is now, so the next change is a save."""
        if entry.flow_ref is None or entry.template_hash is not None:
            return
        kind, name = entry.flow_ref
        try:
            entry.template_hash = template_hash(self.kube.get_workload(kind, entry.namespace, name))
        except NotFound:
            entry.template_hash = ABSENT  # its creation will count as a save

    def _flow_body(self, entry: FlowEntry) -> dict[str, Any]:
        return {
            "apiVersion": "spacesecrets.io/v1alpha1",
            "kind": "FlowSecretSync",
            "metadata": {"name": entry.name, "namespace": entry.namespace, "uid": entry.uid},
        }

    def approval_problem(self, entry: FlowEntry) -> str | None:
        """Why a flow must get nothing: no current owner created, changed or approved it."""
        store = self.space_owners.get(entry.namespace)
        owners = store.owners if store else ()
        return provenance.flow_approval_problem(
            entry.authorized_by, entry.name, entry.namespace, owners
        )

    def flows_to_recheck(self, namespace: str) -> list[FlowEntry]:
        """After a space's reconcile: flows issued before whose authorization no longer holds
        (an owner removed), so that they stop at once rather than at their next change."""
        return [e for e in self.flows_in(namespace) if e.synced and self.approval_problem(e)]

    def _sync_flow(self, entry: FlowEntry, reason: str) -> None:
        flow, ns = entry.spec, entry.namespace
        if ns == self.settings.namespace:
            self._flow_failed(entry, OPERATOR_NAMESPACE, _OPERATOR_NAMESPACE_MESSAGE)
            return
        space = self.spaces.get(ns)
        if space is None and self._space_exists(ns):
            if not self.load_space(ns):
                raise SpaceNotReady(f"the space of {ns} is not reconciled yet", delay=1)
            space = self.spaces.get(ns)
        if space is None:
            self._flow_failed(
                entry,
                SPACE_MISSING,
                f"namespace {ns} has no SpaceSecrets; the flow keeps its last projection",
            )
            return
        unapproved = self.approval_problem(entry)
        if unapproved:
            self._flow_failed(entry, APPROVAL_REQUIRED, unapproved)
            return
        if flow.target_kind == "ConfigMap" and not self.settings.allow_configmap_targets:
            self._flow_failed(
                entry,
                CONFIGMAP_NOT_ALLOWED,
                "ConfigMap targets are disabled: a ConfigMap shows values to "
                "everyone who may read ConfigMaps; use a Secret",
            )
            return
        missing = projection.missing_keys(space, flow)
        if missing:
            self._flow_failed(
                entry,
                MISSING_KEY,
                f"the space has no key {', '.join(missing)} (version {space.version})",
            )
            return
        rivals = self._rivals(entry)
        unread = self._never_reconciled(entry) and not rivals
        existing = None if unread else self._read_target(entry)
        if self._yields(entry, existing, rivals):
            return
        if (
            reason == RESUME
            and existing is not None
            and self._keeps_issued_version(entry, space, existing)
        ):
            entry.target_fingerprint = fingerprint(existing)
            return
        try:
            self._project(entry, space, existing, reason)
        except AlreadyExists:
            # a target after all: `_yields` keeps its fingerprint, so the next pass reads first
            existing = self._read_target(entry)
            if not self._yields(entry, existing, rivals):
                self._project(entry, space, existing, reason)

    @staticmethod
    def _never_reconciled(entry: FlowEntry) -> bool:
        """A flow never reconciled has most likely no target yet: it is created without a read
        first (if one exists after all, the create fails and it is read). A flow whose status
        shows any Synced condition was reconciled before, by this process or an earlier one,
        and its target is read: after a restart a failing flow must not try a create each time."""
        return (
            entry.synced_version is None
            and entry.target_fingerprint is None
            and get_condition(entry.status.get("conditions") or [], "Synced") is None
        )

    def _yields(
        self, entry: FlowEntry, existing: Mapping[str, Any] | None, rivals: list[Claimant]
    ) -> bool:
        """Whether the target is not this flow's to write (reported): it is someone else's, or
        another FlowSecretSync keeps it."""
        if existing is None and not rivals:
            return False
        if existing is not None:  # seen: when it carries this flow's name, its changes are news
            entry.target_fingerprint = fingerprint(existing)
        flow = entry.spec
        mine = Claimant(entry.created, entry.name, entry.uid)
        keeper = projection.keeper(existing, [mine, *rivals])
        if keeper is None:
            self._flow_failed(
                entry,
                TARGET_NOT_OWNED,
                f"{flow.target_kind} {flow.target_name} exists and is not "
                "managed by spacesecrets; it is left untouched",
            )
            return True
        if keeper[0] != entry.uid:
            self._flow_failed(
                entry,
                CONFLICT,
                f"{flow.target_kind} {flow.target_name} is already the target of "
                f"FlowSecretSync {keeper[1]}",
            )
            return True
        return False

    def _keeps_issued_version(
        self, entry: FlowEntry, space: SpaceView, existing: Mapping[str, Any]
    ) -> bool:
        """After a restart, a flow behind its space keeps the version it was issued until its
        next tick or save, as it would have without the restart, if its target still holds
        exactly that version. Otherwise it is brought to the current one."""
        version = entry.synced_version
        if version is None or version == space.version or not entry.synced:
            return False
        if entry.status.get("observedGeneration") != entry.generation:
            return False  # its spec changed meanwhile: that syncs at once
        period = schedule.period_seconds(entry.spec.autosync, self.settings.autosync_scale)
        last_tick = schedule.last_tick(entry.uid, period, self.clock().timestamp())
        if last_tick >= _epoch(space.updated_at):
            return False  # a tick passed since the current version while no operator ran
        if projection.ownership(existing, entry.uid) is not Ownership.OURS:
            return False
        history, _ = self.read_history(entry.namespace, keep=True)
        if history is None:
            return False
        try:
            values = history.values(self.require_ring(), version)
        except LookupError:
            return False  # no longer kept: the flow moves on to the current version
        return projection.holds_issued(existing, entry.namespace, entry.spec, version, values)

    def _read_target(self, entry: FlowEntry) -> dict[str, Any] | None:
        try:
            return self.kube.get(entry.spec.target_kind, entry.namespace, entry.spec.target_name)
        except NotFound:
            return None

    def _project(
        self,
        entry: FlowEntry,
        space: SpaceView,
        existing: Mapping[str, Any] | None,
        reason: str,
    ) -> None:
        """Write the target if it differs from the space's current version, then the status.
        `existing` is ours or absent (see `_yields`)."""
        flow, ns = entry.spec, entry.namespace
        status = entry.status
        same_version = entry.synced_version == space.version and status.get("issuedAt")
        issued_at = str(status["issuedAt"]) if same_version else self.now()
        docs = projection.documents(space, flow, issued_at)
        desired = projection.desired_target(ns, flow, docs, space.version, issued_at)
        written = False
        if existing is None:
            entry.target_fingerprint = fingerprint(self.kube.create(flow.target_kind, ns, desired))
            written = True
            if reason == DRIFT:
                self._restored(entry)
        elif not projection.up_to_date(existing, desired):
            entry.target_fingerprint = fingerprint(existing)  # its deletion is a drift to restore
            if existing.get("immutable") is True:
                self._flow_failed(
                    entry,
                    TARGET_IMMUTABLE,
                    f"{flow.target_kind} {flow.target_name} was made immutable by someone else "
                    "and cannot be updated; delete it and it is recreated",
                )
                return
            self._replace_target(entry, existing, desired, reason)
            written = True
        else:
            entry.target_fingerprint = fingerprint(existing)
            issued_at = projection.issued_at_of(existing) or issued_at
        if written:
            self.metrics.projection_writes.labels(flow.target_kind).inc()
            if entry.synced_version != space.version:
                self.kube.event(
                    self._flow_body(entry),
                    "Normal",
                    ISSUED,
                    f"version {space.version} issued to {flow.target_kind} {flow.target_name}",
                )

        conditions = set_condition(
            status.get("conditions") or [],
            "Synced",
            True,
            SYNCED,
            SYNC_MESSAGE,
            generation=entry.generation,
            now=self.now(),
        )
        if flow.target_kind == "ConfigMap":
            conditions = set_condition(
                conditions,
                CONFIGMAP_TARGET,
                True,
                "ValuesReadableByConfigMapReaders",
                f"ConfigMap {flow.target_name} shows the values to everyone who may read "
                "ConfigMaps in this namespace",
                generation=entry.generation,
                now=self.now(),
            )
            if written:
                self.kube.event(
                    self._flow_body(entry),
                    "Warning",
                    CONFIGMAP_TARGET,
                    f"values are projected into ConfigMap {flow.target_name}, readable "
                    "by every ConfigMap reader in the namespace",
                )
        new_status = {
            **status,
            "syncedVersion": space.version,
            "issuedAt": issued_at,
            "behind": 0,
            "observedGeneration": entry.generation,
            "conditions": conditions,
        }
        self._write_flow_status(entry, new_status)

    def _replace_target(
        self,
        entry: FlowEntry,
        existing: Mapping[str, Any],
        desired: dict[str, Any],
        reason: str,
    ) -> None:
        """Overwrite a target of ours that differs from what it should hold; say so when someone
        else changed it, as a Warning when they left a document that does not even parse."""
        flow, ns = entry.spec, entry.namespace
        unreadable = projection.unreadable_documents(existing)
        desired["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
        try:
            written = self.kube.replace(flow.target_kind, ns, desired)
        except NotFound:  # deleted since it was read: its deletion event syncs again
            raise Temporary(f"{flow.target_kind} {ns}/{flow.target_name} vanished", 1) from None
        entry.target_fingerprint = fingerprint(written)
        if unreadable:
            self.kube.event(
                self._flow_body(entry),
                "Warning",
                TARGET_UNREADABLE,
                f"{flow.target_kind} {flow.target_name} held {' and '.join(unreadable)} that "
                "does not parse, written by someone else, and is restored",
            )
        elif reason == DRIFT:
            self._restored(entry)

    def _restored(self, entry: FlowEntry) -> None:
        flow = entry.spec
        self.kube.event(
            self._flow_body(entry),
            "Normal",
            TARGET_RESTORED,
            f"{flow.target_kind} {flow.target_name} was changed or deleted "
            "by someone else and is restored",
        )

    def _rivals(self, entry: FlowEntry) -> list[Claimant]:
        """The other FlowSecretSyncs this process knows that name the same target (one no
        current owner approved claims nothing)."""
        with self._lock:
            return [
                Claimant(e.created, e.name, e.uid)
                for e in self._flows_by_ns.get(entry.namespace, {}).values()
                if e.uid != entry.uid
                and not e.deleting
                and (e.spec.target_kind, e.spec.target_name)
                == (entry.spec.target_kind, entry.spec.target_name)
                and not self.approval_problem(e)
            ]

    def _flow_failed(self, entry: FlowEntry, reason: str, message: str) -> None:
        status = entry.status
        old = get_condition(status.get("conditions") or [], "Synced") or {}
        conditions = set_condition(
            status.get("conditions") or [],
            "Synced",
            False,
            reason,
            message,
            generation=entry.generation,
            now=self.now(),
        )
        new_status = {
            **status,
            "observedGeneration": entry.generation,
            "conditions": conditions,
        }
        # the condition written is what says the Warning was posted: a status write refused
        # must not leave an Event posted on every attempt
        self._write_flow_status(entry, new_status)
        if (old.get("reason"), old.get("message")) != (reason, message):
            self.kube.event(self._flow_body(entry), "Warning", reason, message)
            log.warning(
                "flow %s/%s not synced: %s: %s", entry.namespace, entry.name, reason, message
            )

    def _write_flow_status(self, entry: FlowEntry, new_status: dict[str, Any]) -> None:
        space = self.spaces.get(entry.namespace)
        synced = new_status.get("syncedVersion")
        if space is not None and synced is not None:
            new_status["behind"] = max(0, space.version - int(synced))
        old = entry.status
        if new_status != old:
            self.kube.patch_status(
                "flowsecretsyncs", entry.namespace, entry.name, _status_patch(old, new_status)
            )
            entry.status = new_status

    # -- events from outside ------------------------------------------------------------------

    def target_event(self, event_type: str, obj: Mapping[str, Any]) -> tuple[str, str] | None:
        """A managed target changed: the flow to sync when someone else changed or deleted it
        (our own writes match the fingerprint we kept of them)."""
        meta = obj.get("metadata") or {}
        flow_name = (meta.get("labels") or {}).get(projection.FLOW_LABEL)
        entry = self.flows.get((meta.get("namespace", ""), str(flow_name)))
        if entry is None or entry.deleting:
            return None
        if entry.target_fingerprint is None:
            return None  # not seen by this process yet: the flow's own first sync reads it
        if entry.spec.target_name != meta.get("name") or entry.spec.target_kind != obj.get(
            "kind", entry.spec.target_kind
        ):
            return None
        if event_type == "DELETED" or fingerprint(obj) != entry.target_fingerprint:
            return entry.namespace, entry.name
        return None

    def workload_event(self, kind: str, obj: Mapping[str, Any]) -> list[tuple[str, str]]:
        """A Deployment or StatefulSet changed: the flows it saved (pod template changed)."""
        meta = obj.get("metadata") or {}
        ns, name = meta.get("namespace"), meta.get("name")
        digest = template_hash(obj)
        saved = []
        with self._lock:
            entries = [
                e
                for e in self._flows_by_ns.get(str(ns), {}).values()
                if e.flow_ref == (kind, name) and not e.deleting
            ]
        for entry in entries:
            previous, entry.template_hash = entry.template_hash, digest
            if previous is not None and previous != digest and entry.spec.sync_on_save:
                saved.append((entry.namespace, entry.name))
        return saved


def _record_facts(history: versions.History, body: Mapping[str, Any]) -> bool:
    """Keep in the history what a later restore is decided on: which store it belongs to and
    its owners (beside the UID of its namespace). True if any changed."""
    meta = body["metadata"]
    owners = provenance.owners_of((body.get("spec") or {}).get("owners") or [])
    facts = {
        "spaceUid": meta["uid"],
        "spaceName": meta["name"],
        "owners": [list(o) for o in owners],
    }
    changed = any(history.index.get(k) != v for k, v in facts.items())
    history.index.update(facts)
    return changed


def _status_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch turning `old` into `new` (top-level fields; removed ones set to null)."""
    patch: dict[str, Any] = {k: v for k, v in new.items() if old.get(k) != v}
    patch.update({k: None for k in old if k not in new})
    return patch


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(text: str) -> str:
    return base64.b64decode(text).decode()


def _int_or_none(value: Any) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


__all__ = ["Operator", "Permanent", "Temporary"]
