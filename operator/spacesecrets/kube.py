"""The only module that talks to the Kubernetes API (besides kopf's own watching).

Edge. Wraps the official client; maps API errors to `Temporary` (409 conflicts, 429, 5xx, timeouts:
retry later) and `Permanent` (anything a retry cannot fix). Objects go in and out as plain dicts.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import logging
import queue
import secrets as pysecrets
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import kubernetes
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from spacesecrets import GROUP, MANAGED_BY, VERSION
from spacesecrets.conditions import now_rfc3339

T = TypeVar("T")
log = logging.getLogger("spacesecrets")
SPACES = "spacesecrets"
CONNECTIONS = 32
FLOWS = "flowsecretsyncs"


class Temporary(Exception):
    """Retry later: a conflict, throttling, or the API server not being there right now."""

    def __init__(self, message: str, delay: float = 2.0) -> None:
        super().__init__(message)
        self.delay = delay


class Permanent(Exception):
    """A retry will not help (forbidden, invalid)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class NotFound(Exception):
    pass


class AlreadyExists(Exception):
    pass


class NamespaceTerminating(Exception):
    """The namespace is being deleted: nothing there needs writing any more."""


def _call(what: str, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except ApiException as exc:
        status = int(exc.status or 0)
        if status == 404:
            raise NotFound(what) from None
        if status == 409 and "AlreadyExists" in str(exc.body or ""):
            raise AlreadyExists(what) from None
        if status == 403 and "being terminated" in str(exc.body or ""):
            raise NamespaceTerminating(what) from None
        if status in (409, 429) or status >= 500 or status == 0:
            raise Temporary(f"{what}: HTTP {status} {exc.reason}") from None
        raise Permanent(f"{what}: {_server_message(exc)}", status) from None
    except (HTTPError, OSError) as exc:
        raise Temporary(f"{what}: {type(exc).__name__}") from None


def _server_message(exc: ApiException) -> str:
    """The API server's own explanation (an admission denial says who may do what)."""
    try:
        message = json.loads(exc.body or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or f"HTTP {exc.status} {exc.reason}")


def make_client(kubeconfig: str | None = None) -> kubernetes.client.ApiClient:
    config = kubernetes.client.Configuration()
    if kubeconfig:
        kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=config)
    else:
        try:
            kubernetes.config.load_incluster_config(client_configuration=config)
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config(client_configuration=config)
    # one connection per worker thread, so handlers never queue for a socket
    config.connection_pool_maxsize = CONNECTIONS
    return kubernetes.client.ApiClient(config)


def b64decode_map(data: Mapping[str, str] | None) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in (data or {}).items()}


def b64encode_map(data: Mapping[str, str]) -> dict[str, str]:
    return {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}


class Kube:
    """Typed-enough access to the objects spacesecrets reads and writes."""

    def __init__(self, client: kubernetes.client.ApiClient) -> None:
        self.client = client
        self.core = kubernetes.client.CoreV1Api(client)
        self.custom = kubernetes.client.CustomObjectsApi(client)
        self.rbac = kubernetes.client.RbacAuthorizationV1Api(client)
        self.apps = kubernetes.client.AppsV1Api(client)
        self.writes = 0  # write requests made, for metrics and benchmarks
        self.events_dropped = 0
        self._events: queue.Queue[tuple[str, dict[str, Any]]] | None = None

    def post_events_in_background(self, capacity: int = 1000) -> None:
        """Post Events from one background thread, so a reconcile never waits for one. Like
        client-go's recorder, a full queue drops the Event (and counts it) rather than block."""
        self._events = queue.Queue(capacity)
        threading.Thread(target=self._post_events, name="events", daemon=True).start()

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

    def _sanitize(self, obj: Any) -> dict[str, Any]:
        return dict(self.client.sanitize_for_serialization(obj))

    # -- core objects as dicts ------------------------------------------------------------------

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        read = {
            "Secret": self.core.read_namespaced_secret,
            "ConfigMap": self.core.read_namespaced_config_map,
        }[kind]
        obj = _call(f"get {kind} {namespace}/{name}", lambda: read(name, namespace))
        out = self._sanitize(obj)
        out.setdefault("kind", kind)
        return out

    def create(self, kind: str, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        create = {
            "Secret": self.core.create_namespaced_secret,
            "ConfigMap": self.core.create_namespaced_config_map,
        }[kind]
        self.writes += 1
        name = body["metadata"]["name"]
        return self._sanitize(
            _call(f"create {kind} {namespace}/{name}", lambda: create(namespace, body))
        )

    def replace(self, kind: str, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Replace with the resourceVersion in `body` (a conflict raises Temporary)."""
        replace = {
            "Secret": self.core.replace_namespaced_secret,
            "ConfigMap": self.core.replace_namespaced_config_map,
        }[kind]
        self.writes += 1
        name = body["metadata"]["name"]
        return self._sanitize(
            _call(f"replace {kind} {namespace}/{name}", lambda: replace(name, namespace, body))
        )

    def delete(self, kind: str, namespace: str, name: str) -> None:
        delete = {
            "Secret": self.core.delete_namespaced_secret,
            "ConfigMap": self.core.delete_namespaced_config_map,
        }[kind]
        self.writes += 1
        _call(f"delete {kind} {namespace}/{name}", lambda: delete(name, namespace))

    def list_secrets(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        res = _call(
            f"list Secrets {namespace}",
            lambda: self.core.list_namespaced_secret(namespace, label_selector=selector),
        )
        return [self._sanitize(s) for s in res.items]

    # -- custom resources -----------------------------------------------------------------------

    def get_custom(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        return dict(
            _call(
                f"get {plural} {namespace}/{name}",
                lambda: self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, plural, name
                ),
            )
        )

    def list_custom(self, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        if namespace:
            res = _call(
                f"list {plural}",
                lambda: self.custom.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, plural
                ),
            )
        else:
            res = _call(
                f"list {plural}",
                lambda: self.custom.list_cluster_custom_object(GROUP, VERSION, plural),
            )
        return list(res.get("items", []))

    def list_custom_metadata(
        self, plural: str, namespace: str | None = None
    ) -> list[dict[str, Any]]:
        """The metadata of every object (names, uids, timestamps): a small fraction of a full
        LIST, as the API server leaves out spec and status."""
        scope = f"/namespaces/{namespace}" if namespace else ""
        path = f"/apis/{GROUP}/{VERSION}{scope}/{plural}"
        accept = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
        response = _call(
            f"list {plural} metadata",
            lambda: self.client.call_api(
                path,
                "GET",
                header_params={"Accept": accept},
                auth_settings=["BearerToken"],
                _preload_content=False,
                _return_http_data_only=True,
            ),
        )
        return [item["metadata"] for item in json.loads(response.data).get("items") or []]

    def get_peering(self, name: str) -> dict[str, Any]:
        """kopf's ClusterKopfPeering object: which replicas are alive, with their priorities."""
        return dict(
            _call(
                f"get clusterkopfpeering {name}",
                lambda: self.custom.get_cluster_custom_object(
                    "kopf.dev", "v1", "clusterkopfpeerings", name
                ),
            )
        )

    def patch_status(
        self, plural: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None:
        self.writes += 1
        _call(
            f"patch {plural} {namespace}/{name} status",
            lambda: self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, plural, name, {"status": dict(status)}
            ),
        )

    def patch_custom(
        self, plural: str, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        self.writes += 1
        return dict(
            _call(
                f"patch {plural} {namespace}/{name}",
                lambda: self.custom.patch_namespaced_custom_object(
                    GROUP, VERSION, namespace, plural, name, dict(patch)
                ),
            )
        )

    def replace_custom(
        self, plural: str, namespace: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        self.writes += 1
        name = body["metadata"]["name"]
        return dict(
            _call(
                f"replace {plural} {namespace}/{name}",
                lambda: self.custom.replace_namespaced_custom_object(
                    GROUP, VERSION, namespace, plural, name, dict(body)
                ),
            )
        )

    def create_custom(self, plural: str, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        self.writes += 1
        return dict(
            _call(
                f"create {plural} {namespace}",
                lambda: self.custom.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, plural, dict(body)
                ),
            )
        )

    # -- RBAC -----------------------------------------------------------------------------------

    def get_role_binding(self, namespace: str, name: str) -> dict[str, Any]:
        return self._sanitize(
            _call(
                f"get RoleBinding {namespace}/{name}",
                lambda: self.rbac.read_namespaced_role_binding(name, namespace),
            )
        )

    def create_role_binding(self, namespace: str, body: Mapping[str, Any]) -> None:
        self.writes += 1
        _call(
            f"create RoleBinding {namespace}",
            lambda: self.rbac.create_namespaced_role_binding(namespace, body),
        )

    def replace_role_binding(self, namespace: str, body: Mapping[str, Any]) -> None:
        self.writes += 1
        name = body["metadata"]["name"]
        _call(
            f"replace RoleBinding {namespace}/{name}",
            lambda: self.rbac.replace_namespaced_role_binding(name, namespace, body),
        )

    def delete_role_binding(self, namespace: str, name: str) -> None:
        self.writes += 1
        _call(
            f"delete RoleBinding {namespace}/{name}",
            lambda: self.rbac.delete_namespaced_role_binding(name, namespace),
        )

    # -- workloads ------------------------------------------------------------------------------

    def get_workload(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        read = {
            "Deployment": self.apps.read_namespaced_deployment,
            "StatefulSet": self.apps.read_namespaced_stateful_set,
        }[kind]
        return self._sanitize(
            _call(f"get {kind} {namespace}/{name}", lambda: read(name, namespace))
        )

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
        try:
            self._events.put_nowait((namespace, body))
        except queue.Full:
            self.events_dropped += 1
            log.debug("event queue full: dropped %s %s", type_, reason)

    def _post_event(self, namespace: str, body: dict[str, Any]) -> None:
        self.writes += 1
        with contextlib.suppress(Temporary, Permanent):
            _call("post Event", lambda: self.core.create_namespaced_event(namespace, body))
