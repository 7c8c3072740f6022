"""Reading the operator's log: the lines where the API server refused it."""

from __future__ import annotations

import re

_DENIED = re.compile(r"forbidden|\b403\b", re.IGNORECASE)
# the message of an admission policy a test installs to make a write fail on purpose: its
# denials are the test's doing, not a gap in the operator's RBAC
DENIED_BY_A_TEST = "refused on purpose by a test's admission policy"


def denials(log: str) -> list[str]:
    """The log lines where the API server refused the operator: a whole-word 403 or "forbidden",
    not a 403 inside a random name such as t-403d1fa3, nor a test's own refusal."""
    return [
        line for line in log.splitlines() if _DENIED.search(line) and DENIED_BY_A_TEST not in line
    ]
