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

A session ends when its tab signs out -- the page does so after `idle_seconds` without the user's
input, so a tab left open on an unattended desk stops acting as the user -- or when no request has
named it for `idle_seconds` and a grace (a closed tab, a sleeping machine): the page polls while
it is open, and the grace is longer than its poll, so an open tab's own timer always comes first.
"""

from __future__ import annotations

import enum
import hmac
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
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
IDLE_SECONDS = 15 * 60.0  # the default: what a locked-down desktop's screen lock is often set to
# the server's backstop waits this much longer than a tab's own idle timer, which a poll (every
# 10 s) never resets: an open tab always signs itself out first, and says why
SESSION_GRACE_SECONDS = 30.0


class Access(enum.Enum):
    GRANTED = "granted"
    NONE = "none"  # no bearer, or none of ours
    ENDED = "ended"  # a session of ours that has ended: signed out, or unused too long


def _same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def _secret() -> str:
    return secrets.token_urlsafe(32)


@dataclass
class Guard:
    """The secrets of one `spacesecrets ui` process, made while it runs and never written down:
    at most one login token not yet used, and the sessions handed out so far (one per browser tab
    signed in), each with when a request last named it. They end with the process, when their
    tab signs out, or after `idle_seconds` (and the grace) unused."""

    port: int
    idle_seconds: float = IDLE_SECONDS
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)
    token: str | None = field(default_factory=_secret, repr=False)
    sessions: dict[str, float] = field(default_factory=dict, repr=False)
    ended: set[str] = field(default_factory=set, repr=False)
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
            self.sessions[session] = self.clock()
            return session

    def access(self, authorization: str | None) -> Access:
        """Whether `Authorization: Bearer <session>` names a live session of ours, which it
        then keeps alive. Every session is compared, in constant time, whichever matches."""
        with self._lock:
            now = self.clock()
            for session, seen in list(self.sessions.items()):
                if now - seen > self.idle_seconds + SESSION_GRACE_SECONDS:
                    self._end(session)
            found = self._find(authorization, self.sessions)
            if found is not None:
                self.sessions[found] = now
                return Access.GRANTED
            return Access.ENDED if self._find(authorization, self.ended) else Access.NONE

    def authorized(self, authorization: str | None) -> bool:
        return self.access(authorization) is Access.GRANTED

    def sign_out(self, authorization: str | None) -> bool:
        """End the session named (its tab signs out); False when none of ours is named."""
        with self._lock:
            found = self._find(authorization, self.sessions)
            if found is not None:
                self._end(found)
            return found is not None

    def _end(self, session: str) -> None:
        del self.sessions[session]
        self.ended.add(session)  # to tell its tab why, not to sign anyone in

    @staticmethod
    def _find(authorization: str | None, sessions: Iterable[str]) -> str | None:
        scheme, _, credential = (authorization or "").strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            return None
        found = None
        for session in sessions:
            if _same(credential, session):
                found = session
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
