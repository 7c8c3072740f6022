"""Autosync tick times, derived -- never stored.

Pure core. Each FlowSecretSync ticks at `phase + k * period`, with the phase a hash of its uid.
Nothing is written per tick, ticks survive restarts unchanged, and objects spread over the period
instead of all firing at once after the operator starts.
"""

from __future__ import annotations

import hashlib
import math

# the choices of models.Autosync (not imported: the operator does not load pydantic)
AUTOSYNC_SECONDS: dict[str, int] = {
    "1m": 60,
    "30m": 1_800,
    "60m": 3_600,
    "12h": 43_200,
    "24h": 86_400,
}


def period_seconds(autosync: str, scale: float = 1.0) -> float:
    return AUTOSYNC_SECONDS.get(autosync, 60) * scale


def phase(uid: str, period: float) -> float:
    """A fixed offset in [0, period) for this object."""
    h = int.from_bytes(hashlib.sha256(uid.encode()).digest()[:8], "big")
    return (h / 2**64) * period


def last_tick(uid: str, period: float, now: float) -> float:
    """The most recent tick at or before `now` (epoch seconds)."""
    p = phase(uid, period)
    return p + math.floor((now - p) / period) * period


def next_tick(uid: str, period: float, now: float) -> float:
    """The first tick strictly after `now`."""
    return last_tick(uid, period, now) + period
