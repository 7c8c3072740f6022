"""The local web server of `spacesecrets ui`: 127.0.0.1 only, the standard library's threading HTTP
server, the page and its assets from the package, the JSON API behind the checks of `security`.

Edge (cli.ui). The page and its assets hold no secret and are served to anyone who names our
Host; `/login` exchanges the printed token for a session, handed to the page in the redirect's
fragment; every `/api/` route wants that session as a bearer token. No cookie is ever set. The log
says what was asked (method and path, never a query string: the login token travels in one) and
how it ended; never a request body, so never a value.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from spacesecrets.cli.ui.api import SpaceApi, UiError
from spacesecrets.cli.ui.security import (
    HEADERS,
    LOGIN_PATH,
    NO_STORE,
    SESSION_FRAGMENT,
    Access,
    Guard,
)

log = logging.getLogger("spacesecrets.ui")

MAX_BODY = 256 * 1024  # a value may hold 64 KiB; JSON escaping can triple it
STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
SIGN_IN = (
    "not signed in: open the address spacesecrets ui printed in its terminal "
    "(press Enter there for a new one)"
)
USED_OR_WRONG = (
    "this address does not sign in (any more): each one signs in once; press Enter in the "
    "terminal where spacesecrets ui runs for a new one"
)
ENDED = (
    "signed out: this tab signed out, or went unused too long; open a new address from the "
    "terminal where spacesecrets ui runs (press Enter there)"
)
SESSION_PATH = "/api/session"  # GET: how long the session may stay idle; POST .../sign-out
UNAUTHORIZED = {"WWW-Authenticate": 'Bearer realm="spacesecrets-ui"'}
_NS = r"(?P<ns>[a-z0-9]([-a-z0-9]*[a-z0-9])?)"
_NAME = r"(?P<name>[A-Za-z0-9_.-]{1,253})"

Handler = Callable[[SpaceApi, Mapping[str, str], Mapping[str, Any]], Mapping[str, Any]]
Call = Callable[[Mapping[str, str], Mapping[str, Any]], Mapping[str, Any]]

ROUTES: list[tuple[str, re.Pattern[str], Handler]] = [
    ("GET", re.compile(r"/api/spaces"), lambda api, _m, _b: api.spaces()),
    ("GET", re.compile(rf"/api/spaces/{_NS}"), lambda api, m, _b: api.space(m["ns"])),
    (
        "POST",
        re.compile(rf"/api/spaces/{_NS}/keys"),
        lambda api, m, b: api.put_key(m["ns"], b, new=True),
    ),
    (
        "PUT",
        re.compile(rf"/api/spaces/{_NS}/keys/{_NAME}"),
        lambda api, m, b: api.put_key(m["ns"], {**b, "key": m["name"]}, new=False),
    ),
    (
        "DELETE",
        re.compile(rf"/api/spaces/{_NS}/keys/{_NAME}"),
        lambda api, m, _b: api.remove_key(m["ns"], m["name"]),
    ),
    ("POST", re.compile(rf"/api/spaces/{_NS}/sync"), lambda api, m, _b: api.sync(m["ns"], None)),
    (
        "POST",
        re.compile(rf"/api/spaces/{_NS}/flows/{_NAME}/sync"),
        lambda api, m, _b: api.sync(m["ns"], m["name"]),
    ),
    (
        "POST",
        re.compile(rf"/api/spaces/{_NS}/rollback"),
        lambda api, m, b: api.rollback(m["ns"], b),
    ),
]


def static_file(name: str) -> bytes | None:
    """An asset shipped in the package (`static/`), or None: no path outside it can be named."""
    if not re.fullmatch(r"[a-z0-9-]+\.(html|css|js|svg)", name):
        return None
    path = resources.files("spacesecrets.cli.ui").joinpath("static", name)
    return path.read_bytes() if path.is_file() else None


class UiServer(ThreadingHTTPServer):
    daemon_threads = True  # a browser's idle keep-alive connection never holds up Ctrl+C

    def __init__(self, api: SpaceApi, port: int = 0, idle_seconds: float | None = None) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.api = api
        self.guard = Guard(self.server_address[1])
        if idle_seconds is not None:
            self.guard.idle_seconds = idle_seconds


class _Handler(BaseHTTPRequestHandler):
    server: UiServer
    server_version = "spacesecrets-ui"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    # -- logging: method, path and status only --------------------------------------------------

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.info("%s %s %s", self.command, urlsplit(self.path).path, int(code))

    def log_error(self, format: str, *args: Any) -> None:
        pass  # send_error's message may quote the request line, token and all

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- answers --------------------------------------------------------------------------------

    def _send(
        self, status: int, body: bytes, content_type: str, extra: Mapping[str, str] | None = None
    ) -> None:
        self.send_response(status)
        for name, value in {**HEADERS, **(extra or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(
        self, status: int, doc: Mapping[str, Any], extra: Mapping[str, str] | None = None
    ) -> None:
        body = json.dumps(doc).encode()
        self._send(status, body, "application/json", {"Cache-Control": NO_STORE, **(extra or {})})

    def _text(self, status: int, text: str) -> None:
        self._send(status, text.encode(), "text/plain; charset=utf-8", {"Cache-Control": NO_STORE})

    # -- requests -------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        guard = self.server.guard
        if not guard.host_allowed(self.headers.get("Host")):
            self.close_connection = True  # a body, if any, is not read
            self._text(
                HTTPStatus.FORBIDDEN, "unknown Host: open the address spacesecrets ui printed"
            )
            return
        url = urlsplit(self.path)
        if url.path == LOGIN_PATH and self.command == "GET":
            self._login(parse_qs(url.query).get("token", [""])[0])
        elif url.path.startswith("/api/"):
            access = guard.access(self.headers.get("Authorization"))
            if access is Access.GRANTED:
                self._api(url.path)
            else:
                self.close_connection = True  # a body, if any, is not read
                ended = access is Access.ENDED
                doc = {"error": ENDED if ended else SIGN_IN, "ended": ended}
                self._json(HTTPStatus.UNAUTHORIZED, doc, UNAUTHORIZED)
        elif self.command in ("GET", "HEAD"):
            self._asset(url.path)
        else:
            self._text(HTTPStatus.METHOD_NOT_ALLOWED, "method not allowed")

    def _login(self, token: str) -> None:
        purpose = (self.headers.get("Sec-Purpose") or self.headers.get("Purpose") or "").lower()
        if "prefetch" in purpose:
            # a prefetch or prerender must not use up the address the user is about to open
            self._text(HTTPStatus.SERVICE_UNAVAILABLE, "not signed in by a prefetch")
            return
        session = self.server.guard.exchange(token)
        if session is None:
            self._text(HTTPStatus.FORBIDDEN, USED_OR_WRONG)
            return
        # the token leaves the address bar; the session reaches only the page's script, in a
        # fragment: no server is sent it, no Referer holds it, and no cookie is set
        location = f"/#{SESSION_FRAGMENT}={session}"
        extra = {"Location": location, "Cache-Control": NO_STORE}
        self._send(HTTPStatus.SEE_OTHER, b"", "text/plain", extra)

    def _asset(self, path: str) -> None:
        name = "index.html" if path == "/" else path.removeprefix("/static/")
        data = static_file(name) if path == "/" or path.startswith("/static/") else None
        if data is None:
            self._text(HTTPStatus.NOT_FOUND, "not found")
            return
        # the same bytes for everyone: nothing here is a secret
        extra = {"Cache-Control": "no-cache"}
        self._send(HTTPStatus.OK, data, STATIC_TYPES[name[name.rindex(".") :]], extra)

    def _route(self, path: str) -> tuple[Call, Mapping[str, str | None]] | None:
        """The handler of a path, with its path's parts; the session's own routes first (its
        idle limit, for the page's timer; signing out)."""
        guard, authorization = self.server.guard, self.headers.get("Authorization")
        if path == SESSION_PATH and self.command == "GET":
            return (lambda _m, _b: {"idleSeconds": guard.idle_seconds}), {}
        if path == f"{SESSION_PATH}/sign-out" and self.command == "POST":
            return (lambda _m, _b: {"signedOut": guard.sign_out(authorization)}), {}
        for method, pattern, handler in ROUTES:
            if method == self.command and (match := pattern.fullmatch(path)):
                return functools.partial(handler, self.server.api), match.groupdict()
        return None

    def _api(self, path: str) -> None:
        route = self._route(path)
        if route is None:
            self._json(HTTPStatus.NOT_FOUND, {"error": "no such API"})
            return
        call, groups = route
        body: Mapping[str, Any] = {}
        if self.command not in ("GET", "HEAD"):
            refused = self.server.guard.write_allowed(dict(self.headers.items()))
            if refused:
                self.close_connection = True
                self._json(HTTPStatus.FORBIDDEN, {"error": refused})
                return
            try:
                body = self._body()
            except UiError as exc:
                self.close_connection = True
                self._json(exc.status, {"error": exc.message})
                return
        params = {k: unquote(v) for k, v in groups.items() if v is not None}
        try:
            self._json(HTTPStatus.OK, call(params, body))
        except UiError as exc:
            self._json(exc.status, {"error": exc.message})

    def _body(self) -> Mapping[str, Any]:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise UiError("bad Content-Length") from None
        if length > MAX_BODY:
            raise UiError("the request is too large", HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        raw = self.rfile.read(length) if length else b"{}"
        try:
            doc = json.loads(raw)
        except (ValueError, RecursionError):
            raise UiError("the request is not JSON") from None
        if not isinstance(doc, dict):
            raise UiError("the request must be a JSON object")
        return doc


__all__ = ["UiServer", "static_file"]
