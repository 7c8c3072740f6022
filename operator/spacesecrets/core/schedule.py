"""Autosync tick times, derived -- never stored.

Pure core. Each FlowSecretSync ticks at `phase + k * period`, with the phase a hash of its uid.
Nothing is written per tick, ticks survive restarts unchanged, and objects spread over the period
instead of all firing at once after the operator starts.
"""

from __future__ import annotations

import hashlib
import math

from spacesecrets.names import AUTOSYNC_SECONDS, DEFAULT_AUTOSYNC

__all__ = ["AUTOSYNC_SECONDS", "last_tick", "next_tick", "period_seconds", "phase"]


def period_seconds(autosync: str, scale: float = 1.0) -> float:
    seconds = AUTOSYNC_SECONDS.get(autosync, AUTOSYNC_SECONDS[DEFAULT_AUTOSYNC])
    return seconds * scale


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
