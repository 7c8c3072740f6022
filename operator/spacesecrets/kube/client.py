"""The client of the objects spacesecrets reads and writes (besides kopf's own watching).

Kube layer. Plain dicts over a `transport.Transport`; API errors become the `errors` tree
(`Temporary`: 409 conflicts, 429, 5xx, timeouts, retry later; `Permanent`: a retry cannot fix
it). Events go out through the bounded queue of `events`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import secrets as pysecrets
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from spacesecrets import GROUP, MANAGED_BY, VERSION
from spacesecrets.core.conditions import now_rfc3339
from spacesecrets.kube.errors import (
    NamespaceTerminating,
    NotFound,
    Permanent,
    Temporary,
    error_for,
)
from spacesecrets.kube.events import EventQueue
from spacesecrets.kube.transport import JSON, MERGE_PATCH, Transport, Unreachable

log = logging.getLogger("spacesecrets")
CONNECTIONS = 32  # the operator's pool: one connection per reconcile worker
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
METADATA = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
LIST_PAGE = 250  # objects a page: a LIST of thousands is parsed one page at a time
_CORE = {"Secret": "secrets", "ConfigMap": "configmaps"}
_APPS = {"Deployment": "deployments", "StatefulSet": "statefulsets"}


class Kube:
    """Typed-enough access to the objects spacesecrets reads and writes."""

    def __init__(self, transport: Transport) -> None:
        """`transport`: `transport.Rest` in the operator; `factory.ClientTransport` elsewhere."""
        self.http = transport
        self.events_dropped = 0
        self._events: EventQueue | None = None

    def _request(  # noqa: PLR0913 -- one HTTP request's parts; the last three are keywords
        self,
        what: str,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: Mapping[str, str] | None = None,
        content_type: str = JSON,
        accept: str = JSON,
        answer: bool = True,
    ) -> dict[str, Any]:
        """The parsed answer; {} unless `answer` (a write whose answer nobody reads: the object
        written, a space's some 20 KB with its managedFields, is not parsed for nothing, and is
        asked for as its metadata only, which the API server sends instead of the object)."""
        if not answer and accept == JSON:
            accept = METADATA
        try:
            response = self.http.request(
                method, path, body, query=query, content_type=content_type, accept=accept
            )
        except Unreachable as exc:
            raise Temporary(f"{what}: {exc}") from None
        if not 200 <= response.status < 300:
            raise error_for(what, response.status, response.data)
        out = json.loads(response.data) if response.data and answer else {}
        return out if isinstance(out, dict) else {}

    def _items(
        self,
        what: str,
        path: str,
        query: Mapping[str, str] | None = None,
        accept: str = "application/json",
    ) -> Iterator[dict[str, Any]]:
        """Every item of a LIST, read a page at a time (`limit` and `continue`), so only one page
        is ever parsed in memory. If the continue token expires mid-way (410), the listing starts
        over once: an item may then be seen twice, which the callers (indexes) don't mind."""
        token, restarted = "", False
        while True:
            page = {**(query or {}), "limit": str(LIST_PAGE)}
            if token:
                page["continue"] = token
            try:
                res = self._request(what, "GET", path, query=page, accept=accept)
            except Permanent as exc:
                if exc.status != 410 or not token or restarted:
                    raise
                token, restarted = "", True
                continue
            yield from res.get("items") or []
            token = str((res.get("metadata") or {}).get("continue") or "")
            if not token:
                return

    def post_events_in_background(self, capacity: int = 1000, threads: int = 2) -> None:
        """Post Events from background threads, so a reconcile never waits for one. Like
        client-go's recorder, a full queue drops an Event (and counts it) rather than block;
        Warnings have a queue of their own, so a burst of Normal Events never crowds one out."""
        self._events = EventQueue(capacity)
        for n in range(threads):
            threading.Thread(target=self._post_events, name=f"events-{n}", daemon=True).start()

    def hold_normal_events(self, held: bool) -> None:
        """While reconciles run, Normal Events wait (see EventQueue); Warnings never do."""
        if self._events is not None:
            self._events.hold(held)

    def _post_events(self) -> None:
        assert self._events is not None
        while True:
            namespace, body = self._events.get()
            try:
                self._post_event(namespace, body)
            except (NotFound, NamespaceTerminating):
                pass  # the namespace is gone or going: nobody will read the Event
            except Exception:  # an Event is never worth the thread that posts them
                log.exception("posting an Event failed")

    # -- core objects ---------------------------------------------------------------------------

    @staticmethod
    def _core(kind: str, namespace: str, name: str = "") -> str:
        return f"/api/v1/namespaces/{namespace}/{_CORE[kind]}" + (f"/{name}" if name else "")

    def namespace_uid(self, name: str) -> str:
        """The UID of a namespace (a namespace deleted and created again has a new one)."""
        ns = self._request(f"get namespace {name}", "GET", f"/api/v1/namespaces/{name}")
        return str(ns["metadata"]["uid"])

    def list_namespace_uids(self) -> tuple[dict[str, str], int]:
        """Every namespace's UID by name (metadata only, a page at a time), and the revision
        of the listing (every page of a paginated LIST is served at the first one's)."""
        uids: dict[str, str] = {}
        token, at = "", 0
        while True:
            query = {"limit": str(LIST_PAGE), **({"continue": token} if token else {})}
            res = self._request(
                "list namespaces", "GET", "/api/v1/namespaces", query=query, accept=METADATA_LIST
            )
            for item in res.get("items") or []:
                uids[str(item["metadata"]["name"])] = str(item["metadata"]["uid"])
            meta = res.get("metadata") or {}
            at = at or revision(meta)
            token = str(meta.get("continue") or "")
            if not token:
                return uids, at

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        out = self._request(
            f"get {kind} {namespace}/{name}", "GET", self._core(kind, namespace, name)
        )
        out.setdefault("kind", kind)
        return out

    def create(
        self, kind: str, namespace: str, body: Mapping[str, Any], *, answer: bool = True
    ) -> dict[str, Any]:
        """The object created ({} unless `answer`)."""
        name = body["metadata"]["name"]
        return self._request(
            f"create {kind} {namespace}/{name}",
            "POST",
            self._core(kind, namespace),
            dict(body),
            answer=answer,
        )

    def replace(
        self, kind: str, namespace: str, body: Mapping[str, Any], *, answer: bool = True
    ) -> dict[str, Any]:
        """Replace with the resourceVersion in `body` (a conflict raises Temporary); the object
        written ({} unless `answer`)."""
        name = body["metadata"]["name"]
        return self._request(
            f"replace {kind} {namespace}/{name}",
            "PUT",
            self._core(kind, namespace, name),
            dict(body),
            answer=answer,
        )

    def delete(self, kind: str, namespace: str, name: str) -> None:
        self._request(
            f"delete {kind} {namespace}/{name}", "DELETE", self._core(kind, namespace, name)
        )

    def list_secrets(self, namespace: str, selector: str) -> Iterator[dict[str, Any]]:
        """The labelled Secrets of a namespace, read a page at a time."""
        return self._items(
            f"list Secrets {namespace}",
            self._core("Secret", namespace),
            query={"labelSelector": selector},
        )

    # -- custom resources -----------------------------------------------------------------------

    @staticmethod
    def _custom(plural: str, namespace: str | None, name: str = "") -> str:
        scope = f"/namespaces/{namespace}" if namespace else ""
        return f"/apis/{GROUP}/{VERSION}{scope}/{plural}" + (f"/{name}" if name else "")

    def get_custom(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        return self._request(
            f"get {plural} {namespace}/{name}", "GET", self._custom(plural, namespace, name)
        )

    def list_custom(self, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        res = self._request(f"list {plural}", "GET", self._custom(plural, namespace))
        return list(res.get("items") or [])

    def iter_custom(self, plural: str) -> Iterator[dict[str, Any]]:
        """Every object of a kind in every namespace, read a page at a time."""
        return self._items(f"list {plural}", self._custom(plural, None))

    def list_custom_metadata(
        self, plural: str, namespace: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """The metadata of every object (names, uids, timestamps), read a page at a time. The
        API server leaves out spec and status, but not managedFields: a space's metadata is
        still about 9 KB parsed, so thousands of them are not read at once."""
        items = self._items(
            f"list {plural} metadata", self._custom(plural, namespace), accept=METADATA_LIST
        )
        return (item["metadata"] for item in items)

    def get_peering(self, name: str) -> dict[str, Any]:
        """kopf's ClusterKopfPeering object: which replicas are alive, with their priorities."""
        return self._request(
            f"get clusterkopfpeering {name}",
            "GET",
            f"/apis/kopf.dev/v1/clusterkopfpeerings/{name}",
        )

    # -- the shards' Leases (coordination.k8s.io/v1), in the operator's namespace ---------------

    @staticmethod
    def _leases(namespace: str, name: str = "") -> str:
        base = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        return base + (f"/{name}" if name else "")

    def list_leases(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        res = self._request(
            f"list Leases {namespace}",
            "GET",
            self._leases(namespace),
            query={"labelSelector": selector},
        )
        return list(res.get("items") or [])

    def get_lease(self, namespace: str, name: str) -> dict[str, Any]:
        return self._request(f"get Lease {namespace}/{name}", "GET", self._leases(namespace, name))

    def create_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        return self._request(
            f"create Lease {namespace}/{name}", "POST", self._leases(namespace), dict(body)
        )

    def replace_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Replace with the resourceVersion in `body` (a conflict raises Temporary)."""
        name = body["metadata"]["name"]
        return self._request(
            f"replace Lease {namespace}/{name}", "PUT", self._leases(namespace, name), dict(body)
        )

    def delete_lease(self, namespace: str, name: str, resource_version: str = "") -> None:
        """Delete, only if still at `resource_version` when one is given."""
        body = {"preconditions": {"resourceVersion": resource_version}} if resource_version else {}
        self._request(
            f"delete Lease {namespace}/{name}",
            "DELETE",
            self._leases(namespace, name),
            body or None,
        )

    def patch_status(
        self,
        plural: str,
        namespace: str,
        name: str,
        status: Mapping[str, Any],
        *,
        answer: bool = False,
    ) -> dict[str, Any]:
        """The object as stored when `answer` (else {}: a space's is some 20 KB)."""
        return self._request(
            f"patch {plural} {namespace}/{name} status",
            "PATCH",
            self._custom(plural, namespace, name) + "/status",
            {"status": dict(status)},
            content_type=MERGE_PATCH,
            answer=answer,
        )

    def patch_custom(
        self, plural: str, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        return self._request(
            f"patch {plural} {namespace}/{name}",
            "PATCH",
            self._custom(plural, namespace, name),
            dict(patch),
            content_type=MERGE_PATCH,
        )

    # -- RBAC -----------------------------------------------------------------------------------

    @staticmethod
    def _bindings(namespace: str, name: str = "") -> str:
        path = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings"
        return path + (f"/{name}" if name else "")

    def get_role_binding(self, namespace: str, name: str) -> dict[str, Any]:
        return self._request(
            f"get RoleBinding {namespace}/{name}", "GET", self._bindings(namespace, name)
        )

    def create_role_binding(self, namespace: str, body: Mapping[str, Any]) -> None:
        self._request(
            f"create RoleBinding {namespace}",
            "POST",
            self._bindings(namespace),
            dict(body),
            answer=False,
        )

    def replace_role_binding(self, namespace: str, body: Mapping[str, Any]) -> None:
        name = body["metadata"]["name"]
        self._request(
            f"replace RoleBinding {namespace}/{name}",
            "PUT",
            self._bindings(namespace, name),
            dict(body),
            answer=False,
        )

    # -- workloads ------------------------------------------------------------------------------

    def get_workload(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        return self._request(
            f"get {kind} {namespace}/{name}",
            "GET",
            f"/apis/apps/v1/namespaces/{namespace}/{_APPS[kind]}/{name}",
        )

    # -- pods -----------------------------------------------------------------------------------

    def list_running_pods(self, namespace: str) -> Iterator[dict[str, Any]]:
        """The Running pods of a namespace, read a page at a time."""
        return self._items(
            f"list Pods {namespace}",
            f"/api/v1/namespaces/{namespace}/pods",
            query={"fieldSelector": "status.phase=Running"},
        )

    def patch_pod(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        self._request(
            f"patch Pod {namespace}/{name}",
            "PATCH",
            f"/api/v1/namespaces/{namespace}/pods/{name}",
            dict(patch),
            content_type=MERGE_PATCH,
        )

    # -- who the caller is, what it may do (the owners' tools ask before they offer a write) -----

    def may(self, verb: str, plural: str, namespace: str, name: str = "") -> tuple[bool, str]:
        """A SelfSubjectAccessReview: whether RBAC lets the caller `verb` our `plural` there,
        and the authorizer's reason. Admission policies are not asked: only a real write is."""
        attributes = {"group": GROUP, "resource": plural, "verb": verb, "namespace": namespace}
        if name:
            attributes["name"] = name
        review = self._request(
            f"review {verb} {plural} {namespace}/{name}",
            "POST",
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": attributes},
            },
        )
        status = review.get("status") or {}
        return bool(status.get("allowed")), str(status.get("reason") or "")

    def whoami(self) -> tuple[str, tuple[str, ...]]:
        """A SelfSubjectReview: the caller's user name and groups, as the API server sees them."""
        review = self._request(
            "review who I am",
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        )
        info = (review.get("status") or {}).get("userInfo") or {}
        return str(info.get("username") or ""), tuple(str(g) for g in info.get("groups") or [])

    # -- events ---------------------------------------------------------------------------------

    def event(self, involved: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """Post an Event about `involved`. Best effort: an Event is never worth failing for."""
        meta = involved.get("metadata") or {}
        namespace = meta.get("namespace") or "default"
        now = now_rfc3339()
        micro = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body = {
            "metadata": {
                "name": f"{meta.get('name', 'spacesecrets')}.{pysecrets.token_hex(8)}",
                "namespace": namespace,
            },
            "involvedObject": {
                "apiVersion": involved.get("apiVersion"),
                "kind": involved.get("kind"),
                "name": meta.get("name"),
                "namespace": namespace,
                "uid": meta.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": MANAGED_BY},
            "reportingComponent": MANAGED_BY,
            "reportingInstance": MANAGED_BY,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "eventTime": micro,
            "action": reason,
            "count": 1,
        }
        if self._events is None:
            self._post_event(namespace, body)
            return
        if not self._events.put(type_ == "Warning", (namespace, body)):
            self.events_dropped += 1
            log.debug("event queue full: dropped %s %s", type_, reason)

    def _post_event(self, namespace: str, body: dict[str, Any]) -> None:
        with contextlib.suppress(Temporary, Permanent):
            path = f"/api/v1/namespaces/{namespace}/events"
            self._request("post Event", "POST", path, body, answer=False)


def revision(meta: Mapping[str, Any]) -> int:
    """An object's resourceVersion as a number: etcd's revision, which orders every write of
    the cluster (0 when it is not one)."""
    try:
        return int(str(meta.get("resourceVersion", "")))
    except ValueError:
        return 0
