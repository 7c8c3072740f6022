"""The official Kubernetes client, for the CLI, the local tooling and the tests: it loads every kind
of kubeconfig and runs exec plugins. The only module that imports `kubernetes`; the operator never
does (it talks through `transport.Rest`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import urllib3

from spacesecrets.kube.client import Kube
from spacesecrets.kube.transport import JSON, Response, Transport, Unreachable

CONNECTIONS = 32  # one connection per worker thread, so handlers never queue for a socket


def make_client(kubeconfig: str | None = None) -> Any:
    """The official client, for the CLI and tests: it loads every kind of kubeconfig."""
    import kubernetes

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


def current_namespace(kubeconfig: str | None) -> str:
    """The namespace of the kubeconfig's current context ("default" when it names none)."""
    import kubernetes

    try:
        _, active = kubernetes.config.list_kube_config_contexts(kubeconfig)
        return str(active.get("context", {}).get("namespace") or "default")
    except Exception:
        return "default"


class ClientTransport(Transport):
    """The official client's connection, for callers that load kubeconfigs through it."""

    def __init__(self, api_client: Any) -> None:
        self.api = api_client

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: Mapping[str, str] | None = None,
        content_type: str = JSON,
        accept: str = JSON,
    ) -> Response:
        from kubernetes.client.exceptions import ApiException

        headers = {"Accept": accept}
        if body is not None:
            headers["Content-Type"] = content_type
        try:
            response = self.api.call_api(
                path,
                method,
                query_params=list((query or {}).items()),
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _return_http_data_only=True,
                _request_timeout=30,
            )
        except ApiException as exc:
            data = exc.body if isinstance(exc.body, bytes) else str(exc.body or "").encode()
            return Response(int(exc.status or 0), data)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise Unreachable(type(exc).__name__) from None
        return Response(int(response.status), bytes(response.data))


def kube_for(kubeconfig: str | None = None) -> Kube:
    """A `Kube` over the official client, for a kubeconfig (the CLI's, a test's)."""
    return Kube(ClientTransport(make_client(kubeconfig)))
