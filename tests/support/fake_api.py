"""A transport that answers the handful of calls `spacesecrets ui` makes as an API server would,
and records every request: the ui's unit tests run the real `Kube` and `SpaceApi` over it, with no
cluster."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from spacesecrets.kube.transport import JSON, Response, Transport

NS = "team-a"
SEALED = "hpke1:0011223344556677:c2VhbGVkLWJ5dGVz"


def space_object(namespace: str = NS, owners: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "secrets",
            "namespace": namespace,
            "creationTimestamp": "2026-11-29T12:00:00Z",
            "generation": 2,
            "annotations": {},
        },
        "spec": {
            "owners": owners or [{"kind": "User", "name": "alice"}],
            "data": {"API_HOST": {"format": "text", "sealed": SEALED}},
        },
        "status": {
            "version": 2,
            "createdAt": "2026-11-29T12:00:00Z",
            "updatedAt": "2026-11-29T12:05:00Z",
            "observedGeneration": 2,
            "keys": [
                {
                    "name": "API_HOST",
                    "format": "text",
                    "version": 2,
                    "updatedAt": "2026-11-29T12:05:00Z",
                }
            ],
            "history": [
                {"version": 2, "at": "2026-11-29T12:05:00Z", "changed": ["API_HOST"]},
                {"version": 1, "at": "2026-11-29T12:00:00Z", "added": ["API_HOST"]},
            ],
            "sealingKeys": ["0011223344556677"],
            "conditions": [{"type": "Ready", "status": "True", "reason": "Unsealed"}],
        },
    }


def flow_object(name: str, synced: int | None, annotations: dict[str, str] | None = None) -> Any:
    return {
        "metadata": {"name": name, "namespace": NS, "annotations": annotations or {}},
        "spec": {"target": {"name": f"{name}-secrets"}, "autosync": "1m", "syncOnSave": True},
        "status": {"syncedVersion": synced, "issuedAt": "2026-11-29T12:01:00Z"},
    }


def _status(code: int, reason: str, message: str) -> Response:
    return Response(code, json.dumps({"reason": reason, "message": message}).encode())


@dataclass
class FakeApiServer(Transport):
    pem: str
    user: str = "alice"
    groups: tuple[str, ...] = ("devs",)
    may_update: bool = True
    may_list_all: bool = False
    spaces: list[dict[str, Any]] = field(default_factory=lambda: [space_object()])
    flows: list[dict[str, Any]] = field(default_factory=list)
    refuse_patch: str = ""  # the admission message a PATCH gets, if any
    requests: list[tuple[str, str, Any]] = field(default_factory=list)

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
        self.requests.append((method, path, copy.deepcopy(body)))
        if method == "PATCH":
            if self.refuse_patch:
                return _status(403, "Forbidden", self.refuse_patch)
            return Response(200, json.dumps(self.spaces[0]).encode())
        doc = self._read(method, path)
        if isinstance(doc, Response):
            return doc
        return Response(200, json.dumps(doc).encode())

    def _read(self, method: str, path: str) -> Any:
        if path.endswith("/selfsubjectreviews"):
            return {"status": {"userInfo": {"username": self.user, "groups": list(self.groups)}}}
        if path.endswith("/selfsubjectaccessreviews"):
            return {"status": {"allowed": self.may_update, "reason": "RBAC"}}
        if path.endswith("/spacesecrets-public-keys"):
            return {"data": {"current.pem": self.pem}}
        if path == "/apis/spacesecrets.io/v1alpha1/spacesecrets":
            if not self.may_list_all:
                return _status(403, "Forbidden", f'User "{self.user}" cannot list spacesecrets')
            return {"items": self.spaces}
        if method == "GET" and path.endswith("/spacesecrets"):
            ns = path.split("/namespaces/")[1].split("/", maxsplit=1)[0]
            return {"items": [s for s in self.spaces if s["metadata"]["namespace"] == ns]}
        if method == "GET" and path.endswith("/flowsecretsyncs"):
            return {"items": self.flows}
        return _status(404, "NotFound", "not found")

    def writes(self) -> list[tuple[str, str, Any]]:
        return [r for r in self.requests if r[0] == "PATCH"]
