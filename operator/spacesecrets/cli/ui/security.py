"""What keeps the local web app the user's own: the login token, the sessions it is exchanged
for, the Host and Origin checks and the headers every response carries.

Edge (cli.ui), standard library only and no I/O: the server asks, this module answers.

There is no ambient credential. Browsers do not keep cookies apart by port, so any other web
server on 127.0.0.1 the browser visits would be sent a cookie of ours, and could then act as the
user from its own process. Instead the printed address's token is exchanged, once, for a session
that reaches the page only in the redirect's fragment (`/#session=...`: a fragment is sent to no
server and is in no Referer); the page keeps it in `sessionStorage` (per tab and per origin, port
included) and sends it as `Authorization: Bearer` on every API call. So another local server, or a
page of another site in the same browser, gets nothing it could use: the page and its assets hold
no secret, every API route wants the bearer, a cross-origin request cannot carry an Authorization
header without a CORS preflight we never answer, a name it controls resolving to 127.0.0.1 is
refused (the Host is checked), writes from another Origin are refused, and the page cannot be
framed.

The login token signs in once: a copy left in the terminal's scrollback, the browser's history or
a process list signs no one else in later. A user who closed the tab asks the running process for
a new address (Enter in its terminal, `new_login_url`), which also ends the old unused one.
"""

from __future__ import annotations

import hmac
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

LOGIN_PATH = "/login"
SESSION_FRAGMENT = "session"  # /#session=<session>, read and removed by the page's script

# No inline script or style anywhere, every asset from the app itself, no framing, no plugins.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)

HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
NO_STORE = "no-store"  # API answers and the login redirect (it carries a session) are never cached


def _same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def _secret() -> str:
    return secrets.token_urlsafe(32)


@dataclass
class Guard:
    """The secrets of one `spacesecrets ui` process, made while it runs and never written down:
    at most one login token not yet used, and the sessions handed out so far (one per browser tab
    signed in; they end with the process)."""

    port: int
    token: str | None = field(default_factory=_secret)
    sessions: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def hosts(self) -> frozenset[str]:
        return frozenset((f"127.0.0.1:{self.port}", f"localhost:{self.port}"))

    @property
    def origins(self) -> frozenset[str]:
        return frozenset(f"http://{host}" for host in self.hosts)

    def login_url(self) -> str:
        """What the user opens, once: the token is exchanged for a session and leaves the
        address bar. A fresh token when the last one was used."""
        with self._lock:
            if self.token is None:
                self.token = _secret()
            return f"http://127.0.0.1:{self.port}{LOGIN_PATH}?token={self.token}"

    def new_login_url(self) -> str:
        """A new address on the user's demand; the previous one, if unused, no longer signs in."""
        with self._lock:
            self.token = None
        return self.login_url()

    def host_allowed(self, host: str | None) -> bool:
        """Only our own loopback names: a rebinding attacker's name resolving to 127.0.0.1 is
        refused, so its page cannot read the app's answers."""
        return host is not None and host.lower() in self.hosts

    def exchange(self, token: str | None) -> str | None:
        """A new session for the current login token, which is then used up; None for any other
        token. Two requests racing with the same token get one session between them."""
        with self._lock:
            if self.token is None or not _same(token, self.token):
                return None
            self.token = None
            session = _secret()
            self.sessions.append(session)
            return session

    def authorized(self, authorization: str | None) -> bool:
        """`Authorization: Bearer <session>` naming a session of ours; every session is compared,
        in constant time, whichever matches."""
        scheme, _, credential = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            return False
        credential = credential.strip()
        with self._lock:
            sessions = list(self.sessions)
        found = False
        for session in sessions:
            found |= _same(credential, session)
        return found

    def write_allowed(self, headers: Mapping[str, str]) -> str | None:
        """Why a signed-in write must be refused (None when it may go on): a JSON body and, when
        the browser names an origin, ours. Header names in any case."""
        headers = {name.lower(): value for name, value in headers.items()}
        origin = headers.get("origin")
        if origin is not None and origin not in self.origins:
            return "cross-origin write refused"
        content_type = (headers.get("content-type") or "").split(";")[0].strip().lower()
        if content_type != "application/json":
            return "a write must be a JSON body"
        return None
