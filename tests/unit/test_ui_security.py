"""The local web app's guards, against the running server with no cluster: the Host header (DNS
rebinding), the login token and its cookie, the CSRF token on every write, the headers every
answer carries, assets only from the package, and a log that holds no token and no value.

The server's client is the real `Kube` and `SpaceApi` over a transport that answers like an
API server and records what reached it, so "refused before anything was sent" is checked there.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import logging
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any

import pytest
from tests.support.fake_api import NS, FakeApiServer

from spacesecrets.cli.ui.api import SpaceApi
from spacesecrets.cli.ui.security import CSRF_HEADER, Guard
from spacesecrets.cli.ui.server import UiServer
from spacesecrets.core import crypto
from spacesecrets.kube.client import Kube

VALUE = "value-that-never-comes-back-5c1e"


@dataclass
class Running:
    server: UiServer
    fake: FakeApiServer

    @property
    def guard(self) -> Guard:
        return self.server.guard

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.guard.port}"

    def request(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> tuple[http.client.HTTPResponse, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.guard.port, timeout=10)
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        merged = {"Host": self.host, **(headers or {})}
        if body is not None:
            merged["Content-Length"] = str(len(body))
        for name, value in merged.items():
            conn.putheader(name, value)
        conn.endheaders(body)
        response = conn.getresponse()
        data = response.read()
        conn.close()
        return response, data

    def cookie(self) -> str:
        return f"{self.guard.cookie_name}={self.guard.session}"

    def write(
        self, method: str, path: str, doc: Any, headers: Mapping[str, str] | None = None
    ) -> tuple[http.client.HTTPResponse, bytes]:
        base = {
            "Cookie": self.cookie(),
            "Content-Type": "application/json",
            CSRF_HEADER: self.guard.csrf,
            "Origin": f"http://{self.host}",
        }
        return self.request(method, path, {**base, **(headers or {})}, json.dumps(doc).encode())


@pytest.fixture(scope="module")
def pem() -> str:
    return crypto.public_key_pem(crypto.KeyRing.create(dt.datetime.now(dt.UTC)).current.public)


@pytest.fixture
def running(pem: str) -> Iterator[Running]:
    fake = FakeApiServer(pem)
    server = UiServer(SpaceApi(Kube(fake), NS, "spacesecrets-system"))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield Running(server, fake)
    server.shutdown()
    server.server_close()


def test_it_listens_on_loopback_only(running: Running) -> None:
    assert running.server.server_address[0] == "127.0.0.1"


@pytest.mark.parametrize(
    "host",
    ["evil.example:{port}", "127.0.0.1:1", "127.0.0.1", "localhost", "0.0.0.0:{port}", ""],
)
def test_a_foreign_host_is_refused_even_signed_in(running: Running, host: str) -> None:
    """DNS rebinding: a name the attacker controls, resolving to 127.0.0.1, is not ours."""
    headers = {"Host": host.format(port=running.guard.port), "Cookie": running.cookie()}
    for path in ("/", "/api/spaces", f"/login?token={running.guard.token}"):
        response, _ = running.request("GET", path, headers)
        assert response.status == 403, (host, path)
        assert response.getheader("Set-Cookie") is None


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST:{port}"])
def test_our_own_names_are_served(running: Running, host: str) -> None:
    headers = {"Host": host.format(port=running.guard.port), "Cookie": running.cookie()}
    assert running.request("GET", "/api/spaces", headers)[0].status == 200


def test_the_token_is_exchanged_for_a_strict_httponly_cookie(running: Running) -> None:
    response, _ = running.request("GET", f"/login?token={running.guard.token}")
    assert response.status == 303
    assert response.getheader("Location") == "/"
    cookie = response.getheader("Set-Cookie") or ""
    assert cookie.startswith(f"spacesecrets-ui-{running.guard.port}={running.guard.session};")
    assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= {p.strip() for p in cookie.split(";")}
    assert running.guard.token not in cookie


@pytest.mark.parametrize("token", ["", "wrong", "{token}x", "{session}"])
def test_a_wrong_token_gets_no_cookie(running: Running, token: str) -> None:
    value = token.format(token=running.guard.token, session=running.guard.session)
    response, _ = running.request("GET", f"/login?token={value}")
    assert response.status == 403
    assert response.getheader("Set-Cookie") is None


@pytest.mark.parametrize(
    "cookie",
    [
        None,
        "{name}=wrong",
        "other=1",
        "{name}={token}",
        "spacesecrets-ui={session}",  # another port's name
        "spacesecrets-ui-1={session}",
        "%%%;;=",
    ],
)
def test_nothing_is_served_without_the_session_cookie(running: Running, cookie: str | None) -> None:
    guard = running.guard
    value = cookie and cookie.format(
        name=guard.cookie_name, token=guard.token, session=guard.session
    )
    headers = {"Cookie": value} if value else {}
    for path in ("/", "/static/app.js", "/api/spaces", f"/api/spaces/{NS}"):
        assert running.request("GET", path, headers)[0].status == 401, path
    assert running.fake.requests == [
        r for r in running.fake.requests if r[1].endswith("selfsubjectreviews")
    ]


def test_every_answer_carries_the_security_headers(running: Running) -> None:
    signed_in = {"Cookie": running.cookie()}
    for path, headers in (
        ("/", signed_in),
        ("/static/app.js", signed_in),
        ("/api/spaces", signed_in),
        ("/api/spaces", {}),  # a refusal too
        (f"/login?token={running.guard.token}", {}),
    ):
        response, _ = running.request("GET", path, headers)
        csp = response.getheader("Content-Security-Policy") or ""
        directives = {d.strip().split()[0]: d.strip() for d in csp.split(";")}
        assert directives["default-src"] == "default-src 'self'", path
        assert directives["script-src"] == "script-src 'self'", path
        assert directives["frame-ancestors"] == "frame-ancestors 'none'", path
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert response.getheader("X-Frame-Options") == "DENY"
        assert response.getheader("Referrer-Policy") == "no-referrer"
        assert response.getheader("X-Content-Type-Options") == "nosniff"


def test_api_answers_and_the_page_are_never_cached(running: Running) -> None:
    signed_in = {"Cookie": running.cookie()}
    for path in ("/", "/api/spaces", f"/api/spaces/{NS}", "/api/nothing"):
        response, _ = running.request("GET", path, signed_in)
        assert response.getheader("Cache-Control") == "no-store", path
    assert running.write("POST", f"/api/spaces/{NS}/sync", {})[0].getheader("Cache-Control") == (
        "no-store"
    )


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.inline: list[str] = []
        self.external: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        if tag == "script":
            self.scripts.append(named)
            self._in_script = True
        for name, value in attrs:
            if name.startswith("on") or name == "style":
                self.inline.append(f"{tag} {name}")
            if name in ("src", "href") and value and re.match(r"(https?:)?//", value):
                self.external.append(value)

    def handle_endtag(self, tag: str) -> None:
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append("script body")


def test_the_page_has_no_inline_script_or_style_and_no_outside_asset(running: Running) -> None:
    response, data = running.request("GET", "/", {"Cookie": running.cookie()})
    assert response.status == 200
    page = _Page()
    page.feed(data.decode())
    assert page.scripts and all(s.get("src", "").startswith("/static/") for s in page.scripts)
    assert page.inline == []
    assert page.external == []
    assert f'content="{running.guard.csrf}"' in data.decode()  # the page's CSRF token
    for name in ("app.js", "app.css"):
        asset = running.request("GET", f"/static/{name}", {"Cookie": running.cookie()})[1]
        assert b"http://" not in asset and b"https://" not in asset, name
        assert b"innerHTML" not in asset and b"eval(" not in asset, name


@pytest.mark.parametrize(
    "path",
    [
        "/static/../api.py",
        "/static/%2e%2e/api.py",
        "/static/..%2fserver.py",
        "/static/__init__.py",
        "/static/App.js",
        "/api.py",
        "/static/",
    ],
)
def test_only_the_packaged_assets_are_served(running: Running, path: str) -> None:
    assert running.request("GET", path, {"Cookie": running.cookie()})[0].status == 404


def _write_cases(run: Running) -> list[tuple[str, dict[str, str]]]:
    return [
        ("no CSRF token", {CSRF_HEADER: ""}),
        ("a wrong CSRF token", {CSRF_HEADER: run.guard.csrf[:-1] + "x"}),
        ("the session as CSRF token", {CSRF_HEADER: run.guard.session}),
        ("a form post", {"Content-Type": "application/x-www-form-urlencoded"}),
        ("text/plain", {"Content-Type": "text/plain"}),
        ("another origin", {"Origin": "http://evil.example"}),
        ("another port", {"Origin": "http://127.0.0.1:1"}),
        ("no cookie", {"Cookie": ""}),
    ]


@pytest.mark.parametrize("case", range(8))
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", f"/api/spaces/{NS}/keys"),
        ("PUT", f"/api/spaces/{NS}/keys/API_HOST"),
        ("DELETE", f"/api/spaces/{NS}/keys/API_HOST"),
        ("POST", f"/api/spaces/{NS}/sync"),
        ("POST", f"/api/spaces/{NS}/rollback"),
    ],
)
def test_a_write_without_csrf_same_origin_and_json_reaches_no_api_server(
    running: Running, case: int, method: str, path: str
) -> None:
    what, headers = _write_cases(running)[case]
    body = {"key": "NEW_KEY", "format": "text", "value": VALUE, "version": 1}
    response, data = running.write(method, path, body, headers)
    assert response.status in (401, 403), what
    assert VALUE.encode() not in data
    assert running.fake.writes() == [], what


def test_a_write_with_the_token_is_sealed_and_patched(running: Running) -> None:
    response, data = running.write(
        "POST", f"/api/spaces/{NS}/keys", {"key": "NEW_KEY", "format": "text", "value": VALUE}
    )
    assert response.status == 200, data
    assert VALUE.encode() not in data
    ((_, path, patch),) = running.fake.writes()
    assert path.endswith(f"/namespaces/{NS}/spacesecrets/secrets")
    entry = patch["spec"]["data"]["NEW_KEY"]
    assert entry["format"] == "text" and entry["sealed"].startswith("hpke1:")
    assert VALUE not in json.dumps(patch)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"key": "1BAD", "format": "text", "value": VALUE}, "not a valid KEY"),
        ({"key": "A" * 129, "format": "text", "value": VALUE}, "not a valid KEY"),
        ({"key": "BAD-KEY", "format": "text", "value": VALUE}, "not a valid KEY"),
        ({"key": "GOOD", "format": "json", "value": VALUE}, "syntax error"),
        ({"key": "GOOD", "format": "json", "value": "[" * 40 + "]" * 40}, "nests"),
        ({"key": "GOOD", "format": "json", "value": '{"a": NaN}'}, "NaN"),
        ({"key": "GOOD", "format": "yaml", "value": VALUE}, "format"),
        ({"key": "GOOD", "format": "text", "value": ""}, "enter a VALUE"),
        ({"key": "API_HOST", "format": "text", "value": VALUE}, "exists already"),
    ],
)
def test_the_server_checks_again_and_never_quotes_the_value(
    running: Running, doc: dict[str, str], message: str
) -> None:
    response, data = running.write("POST", f"/api/spaces/{NS}/keys", doc)
    assert response.status in (400, 409)
    assert message in json.loads(data)["error"]
    assert VALUE.encode() not in data
    assert running.fake.writes() == []


def test_the_log_holds_no_token_no_query_and_no_value(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="spacesecrets.ui"):
        running.request("GET", f"/login?token={running.guard.token}")
        running.request("GET", f"/login?token=wrong-{VALUE}")
        running.write(
            "POST", f"/api/spaces/{NS}/keys", {"key": "NEW_KEY", "format": "text", "value": VALUE}
        )
        running.write(
            "POST", f"/api/spaces/{NS}/keys", {"key": "K", "format": "json", "value": VALUE}
        )
        running.request("GET", f"/?token={running.guard.token}", {"Cookie": running.cookie()})
    text = caplog.text
    assert "GET /login 303" in text and "POST /api/spaces/team-a/keys 200" in text
    for secret in (running.guard.token, running.guard.session, running.guard.csrf, VALUE, "?"):
        assert secret not in text


def test_a_malformed_request_line_logs_nothing_of_it(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    import socket

    with (
        caplog.at_level(logging.INFO, logger="spacesecrets.ui"),
        socket.create_connection(("127.0.0.1", running.guard.port), timeout=5) as sock,
    ):
        sock.sendall(f"BROKEN /login?token={running.guard.token}\r\n\r\n".encode())
        sock.recv(4096)
    assert running.guard.token not in caplog.text
