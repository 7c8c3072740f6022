"""The operator's key ring in its Secret: created on first start, rotated on its period, and its
public keys published in a ConfigMap every authenticated user may read.

Engine layer: API calls through `kube.client.Kube`, crypto in `core.crypto`. Two replicas racing
end with one ring: every write is conditional (create, or replace at the resourceVersion read).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from spacesecrets.core import crypto
from spacesecrets.core.settings import Settings
from spacesecrets.kube import AlreadyExists, NotFound, Temporary
from spacesecrets.kube.client import Kube
from spacesecrets.names import MANAGED_BY_LABEL

log = logging.getLogger("spacesecrets")
RING_KEY = "keyring.json"


class KeyRingStore:
    def __init__(self, settings: Settings, kube: Kube, clock: Callable[[], dt.datetime]) -> None:
        self.settings, self.kube, self.clock = settings, kube, clock
        self.ring: crypto.KeyRing | None = None
        self._rv = ""

    def _body(self, ring: crypto.KeyRing) -> dict[str, Any]:
        return {
            "metadata": {
                "name": self.settings.keyring_secret,
                "namespace": self.settings.namespace,
                "labels": {MANAGED_BY_LABEL: "spacesecrets"},
            },
            "type": "Opaque",
            "data": {RING_KEY: base64.b64encode(ring.to_json().encode()).decode()},
        }

    def load(self) -> crypto.KeyRing:
        """Read the key ring, creating it on first start."""
        ns, name = self.settings.namespace, self.settings.keyring_secret
        try:
            secret = self.kube.get("Secret", ns, name)
        except NotFound:
            ring = crypto.KeyRing.create(self.clock())
            try:
                secret = self.kube.create("Secret", ns, self._body(ring))
                log.info("created the key ring with sealing key %s", ring.current.kid)
            except AlreadyExists:
                secret = self.kube.get("Secret", ns, name)  # the other replica won the race
        ring = self._adopt(secret)
        self.publish_public_keys()
        return ring

    def _adopt(self, secret: Mapping[str, Any]) -> crypto.KeyRing:
        data = (secret.get("data") or {}).get(RING_KEY, "")
        self.ring = crypto.KeyRing.from_json(base64.b64decode(data).decode())
        self._rv = str((secret.get("metadata") or {}).get("resourceVersion", ""))
        return self.ring

    def require(self) -> crypto.KeyRing:
        return self.ring if self.ring is not None else self.load()

    def age(self) -> float:
        return self.ring.age(self.clock()) if self.ring else 0.0

    def rotate_if_due(self) -> bool:
        ring = self.require()
        now = self.clock()
        if not ring.needs_rotation(now, self.settings.rotation_period):
            return False
        new = ring.rotated(now)
        body = self._body(new)
        body["metadata"]["resourceVersion"] = self._rv
        try:
            secret = self.kube.replace("Secret", self.settings.namespace, body)
        except Temporary:
            self.load()  # somebody else rotated; take theirs
            return False
        self._adopt(secret)
        self.publish_public_keys()
        log.info("rotated the key ring: sealing key %s is now current", new.current.kid)
        return True

    def refresh_if_due(self) -> bool:
        """On a replica that does not rotate (a shard that does not lead): once its copy of the
        ring is due for rotation, read the ring again each time, so that it seals and opens
        with the keys the leading replica rotated in. Whether the current key changed."""
        ring = self.require()
        if not ring.needs_rotation(self.clock(), self.settings.rotation_period):
            return False
        secret = self.kube.get("Secret", self.settings.namespace, self.settings.keyring_secret)
        return self._adopt(secret).current.kid != ring.current.kid

    def publish_public_keys(self) -> None:
        ring = self.require()
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
                "labels": {MANAGED_BY_LABEL: "spacesecrets"},
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
