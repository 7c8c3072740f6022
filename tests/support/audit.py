"""The API server's audit log: the operator's writes since a mark, as an assertion shows them."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from spacesecrets.devtools.dev import OPERATOR_NAMESPACE, OPERATOR_USER, LocalCluster, wait_for

WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")


def audit_mark(cluster: LocalCluster, namespace: str = "default") -> int:
    """The size of the audit log once every request made so far is in it. The batch backend
    flushes within a second: a marker request is made, and the log read until it shows."""
    audit = cluster.cp.audit_log
    marker = f"marker-{time.time_ns()}"
    cluster.cp.kubectl("get", "configmap", marker, "-n", namespace, check=False)
    wait_for("the audit log to flush", lambda: marker in audit.read_text(), timeout=20)
    return audit.stat().st_size


def operator_requests(audit_log: Path, start: int) -> list[dict[str, Any]]:
    """Every request by the operator's user logged from offset `start` on."""
    with audit_log.open("rb") as fh:
        fh.seek(start)
        text = fh.read().decode(errors="replace")
    out = []
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except ValueError:  # a line being written as we read
            continue
        if event["user"]["username"] == OPERATOR_USER:
            out.append(event)
    return out


def audit_writes(audit_log: Path, start: int, namespace: str | None = None) -> list[dict[str, Any]]:
    """Writes by the operator's user (Events included) logged from offset `start` on: those
    touching one space (its namespace, or its history) or, with no namespace, all of them.

    Other tests' namespaces are being deleted meanwhile; their clean-up is not this test's."""
    writes = []
    for event in operator_requests(audit_log, start):
        ref = event.get("objectRef") or {}
        ours = namespace is None or (
            ref.get("namespace") == namespace
            or (
                ref.get("namespace") == OPERATOR_NAMESPACE
                and ref.get("name") in (None, f"history-{namespace}")
            )
        )
        if event["verb"] in WRITE_VERBS and ours:
            writes.append(event)
    return writes


def described(writes: list[dict[str, Any]]) -> list[tuple[str, str, str, int]]:
    """What an assertion shows of each write: verb, resource, name, response code."""
    return [
        (
            w["verb"],
            (w.get("objectRef") or {}).get("resource", "")
            + ("/" + w["objectRef"]["subresource"] if w["objectRef"].get("subresource") else ""),
            f"{w['objectRef'].get('namespace')}/{w['objectRef'].get('name')}",
            int((w.get("responseStatus") or {}).get("code", 0)),
        )
        for w in writes
    ]
