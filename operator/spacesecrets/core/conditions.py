"""Status conditions keyed by type; lastTransitionTime changes only when the status flips.

Pure core. Writing a condition that did not change yields an identical list, so the caller's
"did anything change?" comparison stays false and no status write is made.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

Condition = dict[str, Any]


RFC3339 = "%Y-%m-%dT%H:%M:%SZ"


def rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime(RFC3339)


def now_rfc3339(now: dt.datetime | None = None) -> str:
    return rfc3339(now or dt.datetime.now(dt.UTC))


def parse_rfc3339(text: str) -> dt.datetime:
    """A time written by `now_rfc3339` (ValueError for anything else)."""
    return dt.datetime.strptime(text, RFC3339).replace(tzinfo=dt.UTC)


def set_condition(  # noqa: PLR0913 -- a condition is these facts; the last two are keywords
    conditions: Sequence[Condition],
    type_: str,
    status: bool,
    reason: str,
    message: str,
    *,
    generation: int | None = None,
    now: str | None = None,
) -> list[Condition]:
    """A new list with the condition of `type_` set; others kept in their order."""
    wanted = "True" if status else "False"
    out: list[Condition] = []
    found = False
    for cond in conditions:
        if cond.get("type") != type_:
            out.append(dict(cond))
            continue
        found = True
        transition = cond.get("lastTransitionTime") if cond.get("status") == wanted else None
        at = transition or now
        out.append(_condition(type_, wanted, reason, message, generation=generation, at=at))
    if not found:
        out.append(_condition(type_, wanted, reason, message, generation=generation, at=now))
    return out


def _condition(
    type_: str, status: str, reason: str, message: str, *, generation: int | None, at: str | None
) -> Condition:
    cond: Condition = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": at or now_rfc3339(),
    }
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond


def get_condition(conditions: Sequence[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.get("type") == type_), None)
