"""Reading an operator's /metrics text: one sample, and the reconcile counts."""

from __future__ import annotations

import re


def sample(text: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    """The value of one sample in Prometheus text format (None when absent)."""
    want = labels or {}
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        match = re.match(r"^([a-zA-Z_:][\w:]*)(\{(.*)\})?\s+(\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(3) or ""))
        if all(found.get(k) == v for k, v in want.items()):
            return float(match.group(4))
    return None


def reconciles(metrics: str, kind: str) -> float:
    """How many reconciles of `kind` (SpaceSecrets, FlowSecretSync) an operator's /metrics
    text counts."""
    return sample(metrics, "spacesecrets_reconcile_duration_seconds_count", {"kind": kind}) or 0.0
