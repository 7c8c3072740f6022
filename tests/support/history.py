"""The operator's key ring and a space's history, read from their Secrets as a cluster admin."""

from __future__ import annotations

import base64

from spacesecrets.core import crypto, versions
from spacesecrets.devtools.dev import OPERATOR_NAMESPACE
from spacesecrets.kube.client import Kube


def keyring(kube: Kube) -> crypto.KeyRing:
    secret = kube.get("Secret", OPERATOR_NAMESPACE, "spacesecrets-keyring")
    return crypto.KeyRing.from_json(base64.b64decode(secret["data"]["keyring.json"]))


def history_of(kube: Kube, ns: str) -> versions.History:
    secret = kube.get("Secret", OPERATOR_NAMESPACE, f"history-{ns}")
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    return versions.History.from_data(ns, data)
