"""Operators as shards of one ring: starting them, which namespaces each serves, and what the
audit log says each wrote."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from tests.support.audit import audit_writes
from tests.support.logs import denials

from spacesecrets.devtools.dev import LocalCluster, OperatorProcess

# a dead member's namespaces move within 6 s; one autosync "minute" is 3 s
SHARD_ENV = {
    "SPACESECRETS_AUTOSYNC_SCALE": "0.05",
    "SPACESECRETS_SHARD_LEASE": "6s",
    "SPACESECRETS_SHARD_RENEW": "1s",
}
LEASE_SECONDS = 6.0


def start_shard(
    cluster: LocalCluster, member: str, wait: bool = True, env: dict[str, str] | None = None
) -> OperatorProcess:
    """A member of the ring, with SHARD_ENV's timings unless `env` gives others."""
    settings = {**(env if env is not None else SHARD_ENV), "SPACESECRETS_SHARD_MEMBER": member}
    return cluster.start_operator(env=settings, wait=wait)


def served(proc: OperatorProcess) -> set[str]:
    """The namespaces whose space the process holds (its per-space gauge: state, which a shard
    keeps for the namespaces it serves only)."""
    out = set()
    for line in proc.metrics().splitlines():
        if line.startswith("spacesecrets_space_version{"):
            out.add(line.split('namespace="', 1)[1].split('"', 1)[0])
    return out


def writes_by_shard(audit_log: Path, start: int) -> list[dict[str, Any]]:
    """The operators' writes since `start`, but their Leases' renewals."""
    return [
        w
        for w in audit_writes(audit_log, start)
        if (w.get("objectRef") or {}).get("resource") != "leases"
    ]


def shard_of(write: dict[str, Any]) -> str:
    """The member that made a write (its User-Agent: spacesecrets/<member>)."""
    return str(write.get("userAgent", "")).split("/", 1)[-1]


def target_writes(writes: list[dict[str, Any]], target: str) -> Counter[tuple[str, str]]:
    """(namespace, member) -> successful writes of the flow targets named `target`."""
    return Counter(
        (w["objectRef"]["namespace"], shard_of(w))
        for w in writes
        if w["objectRef"].get("resource") == "secrets"
        and w["objectRef"].get("name") == target
        and w["verb"] in ("create", "update", "patch")
        and 200 <= int((w.get("responseStatus") or {}).get("code", 0)) < 300
    )


def no_denials(procs: list[OperatorProcess]) -> None:
    for proc in procs:
        denied = denials(proc.log_text())
        assert denied == [], f"denied with the chart's RBAC: {denied[:5]}"
