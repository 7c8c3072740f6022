"""One tree of API errors: `ApiError`, with `Temporary` (retry later, with a delay) and `Permanent`
(a retry cannot help) below it, and the few kinds callers handle on their own below those.

Edge (kube layer). `error_for` turns an API server's answer into one of them: payloads that are not
a Status are dropped, and the message kept is the API server's own (an admission denial says who
may do what).
"""

from __future__ import annotations

import json


class ApiError(Exception):
    """Any request the API server did not carry out. Callers that need not tell the kinds apart
    catch this one; the others catch a subclass."""


class Temporary(ApiError):
    """Retry later: a conflict, throttling, or the API server not being there right now."""

    def __init__(self, message: str, delay: float = 2.0) -> None:
        super().__init__(message)
        self.delay = delay


class Permanent(ApiError):
    """A retry will not help (forbidden, invalid)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status

    @property
    def reason(self) -> str:
        """A constant reason for a condition or an Event reporting the refusal."""
        return _REFUSALS.get(self.status, "Refused")


# the API server's own Status reasons for these codes
_REFUSALS = {400: "BadRequest", 403: "Forbidden", 413: "RequestEntityTooLarge", 422: "Invalid"}


class NotFound(Permanent):
    """The object (or its namespace) does not exist."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 404)


class AlreadyExists(Temporary):
    """A create found the object there already: read it and go on (or retry)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, delay=1.0)


class NamespaceTerminating(Permanent):
    """The namespace is being deleted: nothing there needs writing any more."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 403)


def error_for(what: str, status: int, data: bytes) -> Exception:
    try:
        body = json.loads(data or b"{}")
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    reason, message = str(body.get("reason") or ""), str(body.get("message") or "")
    if status == 404:
        return NotFound(what)
    if status == 409 and reason == "AlreadyExists":
        return AlreadyExists(what)
    if status == 403 and "being terminated" in message:
        return NamespaceTerminating(what)
    if status in (409, 429) or status >= 500 or status == 0:
        return Temporary(f"{what}: HTTP {status} {reason}".rstrip())
    # the API server's own explanation (an admission denial says who may do what)
    return Permanent(f"{what}: {message or f'HTTP {status} {reason}'.rstrip()}", status)
