"""What keeps the local web app the user's own: the login token, the session cookie, the CSRF
token, the Host check and the headers every response carries.

Edge (cli.ui), standard library only and no I/O: the server asks, this module answers. A page of
another site open in the same browser must not be able to read or change a space through the app:
it cannot learn the token (printed only to the user's terminal), cannot send the cookie
(SameSite=Strict), cannot reach the app under a name it controls (DNS rebinding: the Host is
checked), cannot add the CSRF header to a cross-site request without a CORS preflight we never
answer, and cannot frame the page.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie

COOKIE = "spacesecrets-ui"  # + the port: browsers do not keep cookies apart by port
CSRF_HEADER = "X-CSRF-Token"

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
NO_STORE = "no-store"  # API answers and the page (it carries the CSRF token) are never cached


def _same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


@dataclass
class Guard:
    """The secrets of one `spacesecrets ui` process, made at its start and never written down."""

    port: int
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    session: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    @property
    def hosts(self) -> frozenset[str]:
        return frozenset((f"127.0.0.1:{self.port}", f"localhost:{self.port}"))

    @property
    def origins(self) -> frozenset[str]:
        return frozenset(f"http://{host}" for host in self.hosts)

    def login_url(self) -> str:
        """What the user opens: the token is exchanged for the cookie and leaves the address bar."""
        return f"http://127.0.0.1:{self.port}/login?token={self.token}"

    def host_allowed(self, host: str | None) -> bool:
        """Only our own loopback names: a rebinding attacker's name resolving to 127.0.0.1 is
        refused, so its page cannot read the app's answers."""
        return host is not None and host.lower() in self.hosts

    def token_valid(self, token: str | None) -> bool:
        return _same(token, self.token)

    @property
    def cookie_name(self) -> str:
        return f"{COOKIE}-{self.port}"

    def set_cookie(self) -> str:
        return f"{self.cookie_name}={self.session}; HttpOnly; SameSite=Strict; Path=/"

    def signed_in(self, cookie_header: str | None) -> bool:
        if not cookie_header:
            return False
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(cookie_header)
        except CookieError:
            return False
        morsel = jar.get(self.cookie_name)
        return morsel is not None and _same(morsel.value, self.session)

    def write_allowed(self, headers: Mapping[str, str]) -> str | None:
        """Why a write must be refused (None when it may go on): the CSRF token, a JSON body, and
        when the browser names an origin, ours. Header names in any case."""
        headers = {name.lower(): value for name, value in headers.items()}
        if not _same(headers.get(CSRF_HEADER.lower()), self.csrf):
            return "missing or wrong CSRF token: reload the page"
        origin = headers.get("origin")
        if origin is not None and origin not in self.origins:
            return "cross-origin write refused"
        content_type = (headers.get("content-type") or "").split(";")[0].strip().lower()
        if content_type != "application/json":
            return "a write must be a JSON body"
        return None
