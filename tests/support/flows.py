"""Creating a FlowSecretSync right after its space, as a GitOps apply does."""

from __future__ import annotations

from typing import Any

import kubernetes
from tests.support.docs import GROUP, VERSION

from spacesecrets.devtools.dev import wait_for


def create_flow(custom: kubernetes.client.CustomObjectsApi, ns: str, body: dict[str, Any]) -> None:
    """Create a FlowSecretSync right after its space. The owners policy takes the space as its
    parameter and refuses ("no params found") until its informer has seen the space: retry."""

    def attempt() -> bool:
        try:
            custom.create_namespaced_custom_object(GROUP, VERSION, ns, "flowsecretsyncs", body)
        except kubernetes.client.ApiException as exc:
            if "no params found" in str(exc.body):
                return False
            raise
        return True

    wait_for(
        f"FlowSecretSync {body['metadata']['name']} admitted", attempt, timeout=30, interval=0.1
    )
