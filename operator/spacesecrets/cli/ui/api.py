"""The Secrets tab's JSON API over the user's own client: what the page shows of a space (versions,
dates, key names, flows, history, whether the user may change it) and the owner's writes (a key
sealed and merge-patched, removed; Sync now; rollback).

Edge (cli.ui). Every call acts with the user's kubeconfig identity, so RBAC and the admission
policies decide exactly as for kubectl, and a refusal carries the API server's own message. A
value comes in once, is sealed here with the operator's public key and is gone: no answer holds a
value or a sealed value, and no error message quotes one (`_check_key` and `check_json` name the
key and the cause only).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from spacesecrets.cli.app import UserError, published_key
from spacesecrets.cli.space import request_sync
from spacesecrets.cli.values import _check_key
from spacesecrets.core import crypto, versions
from spacesecrets.core.provenance import Identity, describe_owners, is_owner, owners_of
from spacesecrets.core.settings import MAX_VALUE_BYTES
from spacesecrets.kube import NotFound, Permanent, Temporary
from spacesecrets.kube.client import Kube
from spacesecrets.names import FLOWS, ROLLBACK_ANNOTATION, SPACES, SYNC_NOW

FORMATS = ("text", "json")


class UiError(Exception):
    """A request the page made that cannot be carried out: an HTTP status and one line for the
    user (the API server's own message when it refused)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.status = message, status


def _condition(status: Mapping[str, Any], type_: str) -> dict[str, str] | None:
    for cond in status.get("conditions") or []:
        if cond.get("type") == type_:
            return {k: str(cond.get(k) or "") for k in ("status", "reason", "message")}
    return None


def _refused(exc: Exception) -> UiError:
    if isinstance(exc, NotFound):
        return UiError(f"not found: {exc}", 404)
    if isinstance(exc, Permanent):
        return UiError(str(exc), exc.status or 400)
    if isinstance(exc, Temporary):
        return UiError(f"the API server is not answering right now: {exc}", 503)
    return UiError(str(exc), 400)


class SpaceApi:
    """One user's view of the spaces: reads and the owner's writes, as plain JSON-able data."""

    def __init__(self, kube: Kube, namespace: str, controller_namespace: str) -> None:
        """`namespace`: the kubeconfig's (or `-n`), listed when a cluster-wide list is refused."""
        self.kube, self.namespace, self.controller_namespace = kube, namespace, controller_namespace
        self._identity: Identity | None = None
        try:
            user, groups = kube.whoami()
            self._identity = Identity(user, groups) if user else None
        except (Permanent, Temporary):  # an API server without SelfSubjectReview: RBAC decides
            self._identity = None

    @property
    def user(self) -> str:
        return self._identity.user if self._identity else ""

    # -- reads ----------------------------------------------------------------------------------

    def spaces(self) -> dict[str, Any]:
        """The spaces the user can see: cluster-wide when they may list them, else their own
        namespace's."""
        scope, note = "cluster", ""
        try:
            items = self.kube.list_custom(SPACES)
        except Permanent:
            scope = "namespace"
            try:
                items = self.kube.list_custom(SPACES, self.namespace)
            except Permanent as exc:
                items, note = [], str(exc)
        except Temporary as exc:
            raise _refused(exc) from None
        rows = [_summary(obj) for obj in items]
        rows.sort(key=lambda r: (r["namespace"], r["name"]))
        return {
            "user": self.user,
            "scope": scope,
            "namespace": self.namespace,
            "note": note,
            "spaces": rows,
        }

    def _space(self, namespace: str) -> dict[str, Any]:
        try:
            items = self.kube.list_custom(SPACES, namespace)
        except (Permanent, Temporary) as exc:
            raise _refused(exc) from None
        if not items:
            raise UiError(f"namespace {namespace} has no SpaceSecrets", 404)
        # the space of a namespace is its oldest SpaceSecrets, as the operator and the CLI decide
        items.sort(key=lambda i: (i["metadata"]["creationTimestamp"], i["metadata"]["name"]))
        return dict(items[0])

    def space(self, namespace: str) -> dict[str, Any]:
        """Everything the tabs show of one space; never a value, nor a sealed one."""
        obj = self._space(namespace)
        meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
        flows, flows_error = self._flows(namespace, status.get("version"))
        return {
            **_summary(obj),
            "createdAt": status.get("createdAt"),
            "pending": status.get("observedGeneration") != meta.get("generation"),
            "keys": [
                {k: key.get(k) for k in ("name", "format", "version", "updatedAt")}
                for key in status.get("keys") or []
            ],
            "history": [
                {
                    k: h.get(k)
                    for k in ("version", "at", "added", "changed", "removed", "rollbackOf")
                }
                for h in status.get("history") or []
            ],
            "rollback": _condition(status, "Rollback"),
            "rollbackRequested": (meta.get("annotations") or {}).get(ROLLBACK_ANNOTATION),
            "owners": [
                {"kind": o.get("kind"), "name": o.get("name")} for o in spec.get("owners") or []
            ],
            "access": self._access(namespace, obj),
            "flows": flows,
            "flowsError": flows_error,
        }

    def _access(self, namespace: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Whether the page offers writes, and if not, why. The API server still decides each
        write: this only spares the user a form that would be refused."""
        name = obj["metadata"]["name"]
        try:
            allowed, _ = self.kube.may("update", SPACES, namespace, name)
        except (Permanent, Temporary):
            allowed = True  # cannot ask: offer the form, the API server will say
        if not allowed:
            return {
                "canEdit": False,
                "user": self.user,
                "reason": (
                    f"Read-only: your Kubernetes permissions do not let "
                    f"{self.user or 'you'} change SpaceSecrets in {namespace}."
                ),
            }
        owners = owners_of((obj.get("spec") or {}).get("owners") or [])
        if self._identity is not None and not is_owner(self._identity, namespace, owners):
            return {
                "canEdit": False,
                "user": self.user,
                "reason": (
                    f"Read-only: {self.user} is not an owner of space {namespace} "
                    f"(owners: {describe_owners(owners)})."
                ),
            }
        return {"canEdit": True, "user": self.user, "reason": ""}

    def _flows(self, namespace: str, version: Any) -> tuple[list[dict[str, Any]], str]:
        try:
            items = self.kube.list_custom(FLOWS, namespace)
        except (Permanent, Temporary) as exc:
            return [], _refused(exc).message
        return [_flow(f, version) for f in sorted(items, key=lambda f: f["metadata"]["name"])], ""

    # -- writes ---------------------------------------------------------------------------------

    def put_key(self, namespace: str, body: Mapping[str, Any], *, new: bool) -> dict[str, Any]:
        """Add (`new`) or edit one key: checked, sealed here, and merge-patched alone, as
        `spacesecrets set` does, so a concurrent change of another key is kept."""
        key, fmt, value = body.get("key"), body.get("format"), body.get("value")
        if not isinstance(key, str) or not isinstance(value, str) or fmt not in FORMATS:
            raise UiError("a key needs a KEY, a VALUE and a format (text or json)")
        try:
            key = _check_key(key)
            if fmt == "json":
                versions.check_json(key, value)
        except ValueError as exc:
            raise UiError(str(exc)) from None
        data = value.encode()
        if not data:
            raise UiError(f"{key}: enter a VALUE")
        if len(data) > MAX_VALUE_BYTES:
            raise UiError(
                f"{key} is {len(data)} bytes, over the {MAX_VALUE_BYTES} a value may hold"
            )
        obj = self._space(namespace)
        existing = (obj.get("spec") or {}).get("data") or {}
        if new and key in existing:
            raise UiError(f"{key} exists already: edit it instead", 409)
        if not new and key not in existing:
            raise UiError(f"space {namespace} has no key {key}", 404)
        try:
            pub, _ = published_key(self.kube, self.controller_namespace)
        except (UserError, Permanent, Temporary) as exc:
            raise UiError(f"cannot seal: {getattr(exc, 'message', exc)}", 503) from None
        sealed = crypto.seal(pub, namespace, key, str(fmt), data)
        self._patch(
            SPACES, namespace, obj, {"spec": {"data": {key: {"format": fmt, "sealed": sealed}}}}
        )
        verb = "added" if new else "saved"
        return {"message": f"{key} {verb}; the operator creates the new version"}

    def remove_key(self, namespace: str, key: str) -> dict[str, Any]:
        obj = self._space(namespace)
        if key not in ((obj.get("spec") or {}).get("data") or {}):
            raise UiError(f"space {namespace} has no key {key}", 404)
        self._patch(SPACES, namespace, obj, {"spec": {"data": {key: None}}})
        return {"message": f"{key} removed; the operator creates the new version"}

    def rollback(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        version = body.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise UiError("rollback needs a version number")
        obj = self._space(namespace)
        kept = [h.get("version") for h in (obj.get("status") or {}).get("history") or []]
        if version not in kept:
            raise UiError(f"version {version} is not in the history of {namespace}")
        patch = {"metadata": {"annotations": {ROLLBACK_ANNOTATION: str(version)}}}
        self._patch(SPACES, namespace, obj, patch)
        return {"message": f"rollback to version {version} requested"}

    def sync(self, namespace: str, flow: str | None) -> dict[str, Any]:
        """Sync now: a new stamp in the flow's annotation; the operator brings it to the current
        version at once. `flow` None: every flow of the space."""
        if flow is None:
            names = [f["metadata"]["name"] for f in self._list_flows(namespace)]
            if not names:
                raise UiError(f"space {namespace} has no flows", 404)
        else:
            names = [flow]
        stamps = {}
        for name in names:
            try:
                stamps[name] = request_sync(self.kube, namespace, name)  # as `spacesecrets sync`
            except (Permanent, Temporary) as exc:
                raise _refused(exc) from None
        what = names[0] if flow else f"{len(names)} flow{'s' if len(names) != 1 else ''}"
        return {"message": f"sync of {what} requested", "requested": stamps}

    def _list_flows(self, namespace: str) -> list[dict[str, Any]]:
        try:
            return self.kube.list_custom(FLOWS, namespace)
        except (Permanent, Temporary) as exc:
            raise _refused(exc) from None

    def _patch(
        self, plural: str, namespace: str, obj: Mapping[str, Any], patch: Mapping[str, Any]
    ) -> None:
        try:
            self.kube.patch_custom(plural, namespace, obj["metadata"]["name"], patch)
        except (Permanent, Temporary) as exc:
            raise _refused(exc) from None


def _summary(obj: Mapping[str, Any]) -> dict[str, Any]:
    status = obj.get("status") or {}
    return {
        "namespace": obj["metadata"]["namespace"],
        "name": obj["metadata"]["name"],
        "version": status.get("version"),
        "keyCount": len(status.get("keys") or []),
        "updatedAt": status.get("updatedAt"),
        "ready": _condition(status, "Ready"),
    }


def _flow(obj: Mapping[str, Any], version: Any) -> dict[str, Any]:
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    synced = status.get("syncedVersion")
    behind = int(version) - int(synced) if version is not None and synced is not None else None
    requested = (meta.get("annotations") or {}).get(SYNC_NOW)
    done = status.get("syncNow") or {}
    target = spec.get("target") or {}
    return {
        "name": meta["name"],
        "target": {"kind": target.get("kind") or "Secret", "name": target.get("name")},
        "autosync": spec.get("autosync"),
        "syncOnSave": spec.get("syncOnSave"),
        "syncedVersion": synced,
        "behind": behind,
        "issuedAt": status.get("issuedAt"),
        "synced": _condition(status, "Synced"),
        "syncNow": {k: done.get(k) for k in ("requested", "at", "version")} if done else None,
        "syncPending": bool(requested) and done.get("requested") != requested,
    }
