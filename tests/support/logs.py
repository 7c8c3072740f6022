"""Reading the operator's log: the lines where the API server refused it."""

from __future__ import annotations

import re

_DENIED = re.compile(r"forbidden|\b403\b", re.IGNORECASE)


def denials(log: str) -> list[str]:
    """The log lines where the API server refused the operator: a whole-word 403 or "forbidden",
    not a 403 inside a random name such as t-403d1fa3."""
    return [line for line in log.splitlines() if _DENIED.search(line)]
