"""The local web app's guards, against the running server with no cluster: no cookie ever, the
login token that signs in once and the session that reaches the page only in a fragment, the
bearer token on every API route, the Host header (DNS rebinding) and the Origin of writes, the
headers every answer carries, assets only from the package, a log that holds no token and no
value, and the attack the scheme is built against: another server on 127.0.0.1, holding whatever
the user's browser would send it, gets nothing it can use.

The server's client is the real `Kube` and `SpaceApi` over a transport that answers like an
API server and records what reached it, so "refused before anything was sent" is checked there.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import logging
import re
import socket
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlsplit

import click
import pytest
from tests.support.fake_api import NS, FakeApiServer

from spacesecrets.cli.ui import Duration, new_addresses
from spacesecrets.cli.ui.api import SpaceApi
from spacesecrets.cli.ui.security import SESSION_GRACE_SECONDS, Guard
from spacesecrets.cli.ui.server import ENDED, UiServer
from spacesecrets.core import crypto
from spacesecrets.kube.client import Kube

VALUE = "value-that-never-comes-back-5c1e"
SECRET_LIKE = re.compile(r"[A-Za-z0-9_-]{40,}")  # what a token or session looks like
WRITES = [
    ("POST", f"/api/spaces/{NS}/keys"),
    ("PUT", f"/api/spaces/{NS}/keys/API_HOST"),
    ("DELETE", f"/api/spaces/{NS}/keys/API_HOST"),
    ("POST", f"/api/spaces/{NS}/sync"),
    ("POST", f"/api/spaces/{NS}/flows/orders/sync"),
    ("POST", f"/api/spaces/{NS}/rollback"),
]
READS = ["/api/spaces", f"/api/spaces/{NS}"]
BODY = {"key": "NEW_KEY", "format": "text", "value": VALUE, "version": 1}

Answer = tuple[http.client.HTTPResponse, bytes]


@dataclass
class Running:
    server: UiServer
    fake: FakeApiServer
    answers: list[http.client.HTTPResponse] = field(default_factory=list)

    @property
    def guard(self) -> Guard:
        return self.server.guard

    @property
    def port(self) -> int:
        return self.guard.port

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def request(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> Answer:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
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
        self.answers.append(response)
        return response, data

    def token(self) -> str:
        return parse_qs(urlsplit(self.guard.login_url()).query)["token"][0]

    def login(self) -> str:
        """What the browser does with the printed address: the session from the redirect."""
        response, _ = self.request("GET", f"/login?token={self.token()}")
        assert response.status == 303
        location = response.getheader("Location") or ""
        found = re.fullmatch(r"/#session=([A-Za-z0-9_-]{43})", location)
        assert found, location
        return found[1]

    def write(
        self,
        method: str,
        path: str,
        doc: Any,
        headers: Mapping[str, str | None] | None = None,
        *,
        session: str | None = None,
    ) -> Answer:
        base: dict[str, str | None] = {
            "Authorization": f"Bearer {session}" if session else None,
            "Content-Type": "application/json",
            "Origin": f"http://{self.host}",
            **(headers or {}),
        }
        sent = {k: v for k, v in base.items() if v is not None}
        return self.request(method, path, sent, json.dumps(doc).encode())

    def reached_api_server(self) -> list[tuple[str, str, Any]]:
        """What the ui asked the API server beyond its start (the SelfSubjectReview)."""
        return [r for r in self.fake.requests if not r[1].endswith("selfsubjectreviews")]


def bearer(session: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {session}"}


@pytest.fixture(scope="module")
def pem() -> str:
    return crypto.public_key_pem(crypto.KeyRing.create(dt.datetime.now(dt.UTC)).current.public)


@pytest.fixture
def running(pem: str) -> Iterator[Running]:
    fake = FakeApiServer(pem)
    server = UiServer(SpaceApi(Kube(fake), NS, "spacesecrets-system"))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    run = Running(server, fake)
    yield run
    server.shutdown()
    server.server_close()
    # whatever a test did, no answer ever set a cookie
    assert [r.getheader("Set-Cookie") for r in run.answers if r.getheader("Set-Cookie")] == []


@pytest.fixture
def session(running: Running) -> str:
    return running.login()


def test_it_listens_on_loopback_only(running: Running) -> None:
    assert running.server.server_address[0] == "127.0.0.1"


# -- the login: a token that signs in once, a session only in the fragment ----------------------


def test_the_token_is_exchanged_for_a_session_in_the_redirects_fragment_only(
    running: Running,
) -> None:
    token = running.token()
    response, body = running.request("GET", f"/login?token={token}")
    assert response.status == 303 and body == b""
    location = response.getheader("Location") or ""
    path, _, fragment = location.partition("#")
    assert path == "/" and token not in location
    (session,) = parse_qs(fragment)["session"]
    assert list(running.guard.sessions) == [session]
    assert response.getheader("Set-Cookie") is None
    assert response.getheader("Cache-Control") == "no-store"
    assert response.getheader("Referrer-Policy") == "no-referrer"
    others = [(n, v) for n, v in response.getheaders() if n.lower() != "location"]
    assert session not in json.dumps(others)
    # what the page's script does with it
    assert running.request("GET", "/api/spaces", bearer(session))[0].status == 200


def test_the_token_signs_in_once(running: Running) -> None:
    token = running.token()
    assert running.request("GET", f"/login?token={token}")[0].status == 303
    response, body = running.request("GET", f"/login?token={token}")
    assert response.status == 403
    assert b"signs in once" in body and b"press Enter" in body
    assert response.getheader("Location") is None
    assert len(running.guard.sessions) == 1


def test_racing_logins_with_one_token_get_one_session(running: Running) -> None:
    token = running.token()
    statuses: list[int] = []

    def login() -> None:
        statuses.append(running.request("GET", f"/login?token={token}")[0].status)

    threads = [threading.Thread(target=login) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [303] + [403] * 7
    assert len(running.guard.sessions) == 1


def test_a_new_address_on_demand_ends_the_unused_one_and_keeps_the_sessions(
    running: Running, session: str
) -> None:
    unused = running.token()
    printed: list[str] = []
    new_addresses(["\n", "\n"], running.guard.new_login_url, printed.append, browser=False)
    first, second = (parse_qs(urlsplit(line.split()[-1]).query)["token"][0] for line in printed)
    assert len({unused, first, second}) == 3
    for gone in (unused, first):
        assert running.request("GET", f"/login?token={gone}")[0].status == 403
    assert running.request("GET", f"/login?token={second}")[0].status == 303
    assert running.request("GET", "/api/spaces", bearer(session))[0].status == 200  # kept


# -- the session's end: signed out by its tab, or unused too long ---------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_unused_longer_than_the_idle_limit_ends(running: Running) -> None:
    clock = Clock()
    running.guard.clock, running.guard.idle_seconds = clock, 60.0
    session = running.login()
    clock.now += 59
    assert running.request("GET", "/api/spaces", bearer(session))[0].status == 200
    clock.now += 59  # each request keeps it alive: 118 s since sign-in, 59 s since the last
    assert running.request("GET", "/api/spaces", bearer(session))[0].status == 200
    clock.now += 60 + SESSION_GRACE_SECONDS  # (the grace: an open tab's own timer comes first)
    assert running.request("GET", "/api/spaces", bearer(session))[0].status == 200
    clock.now += 60 + SESSION_GRACE_SECONDS + 1
    response, body = running.request("GET", "/api/spaces", bearer(session))
    assert response.status == 401
    assert json.loads(body) == {"error": ENDED, "ended": True}
    assert session not in running.guard.sessions
    clock.now = 0  # the clock going back does not bring it back
    assert running.request("GET", "/api/spaces", bearer(session))[0].status == 401


def test_a_tab_signs_itself_out_and_other_tabs_stay_signed_in(running: Running) -> None:
    first, second = running.login(), running.login()
    response, body = running.write("POST", "/api/session/sign-out", {}, session=first)
    assert (response.status, json.loads(body)) == (200, {"signedOut": True})
    response, body = running.request("GET", "/api/spaces", bearer(first))
    assert response.status == 401 and json.loads(body)["ended"] is True
    assert running.write("POST", "/api/session/sign-out", {}, session=first)[0].status == 401
    assert running.request("GET", "/api/spaces", bearer(second))[0].status == 200


def test_a_session_not_ours_is_told_to_sign_in_not_that_it_ended(running: Running) -> None:
    response, body = running.request("GET", "/api/spaces", bearer("x" * 43))
    assert response.status == 401 and json.loads(body)["ended"] is False


def test_the_page_is_told_the_idle_limit(running: Running) -> None:
    running.guard.idle_seconds = 90.0
    session = running.login()
    response, body = running.request("GET", "/api/session", bearer(session))
    assert (response.status, json.loads(body)) == (200, {"idleSeconds": 90.0})
    assert running.request("GET", "/api/session")[0].status == 401


def test_signing_out_is_a_write_and_refused_from_another_origin(running: Running) -> None:
    session = running.login()
    response, _ = running.write(
        "POST", "/api/session/sign-out", {}, {"Origin": "http://evil.example"}, session=session
    )
    assert response.status == 403
    assert running.request("GET", "/api/spaces", bearer(session))[0].status == 200


@pytest.mark.parametrize("given", ["9s", "15", "1d", "-5m", "m", "1000000m"])
def test_the_idle_timeout_option_refuses_what_is_no_duration(given: str) -> None:
    with pytest.raises(click.BadParameter):
        Duration().convert(given, None, None)


def test_the_idle_timeout_option_reads_seconds_minutes_and_hours() -> None:
    assert [Duration().convert(v, None, None) for v in ("90s", "15m", "2h")] == [90, 900, 7200]


@pytest.mark.parametrize("token", ["", "wrong", "{token}x", "{token_}", "{session}"])
def test_a_wrong_token_signs_no_one_in(running: Running, session: str, token: str) -> None:
    good = running.token()
    value = token.format(token=good, token_=good[:-1], session=session)
    response, _ = running.request("GET", f"/login?token={value}")
    assert response.status == 403
    assert response.getheader("Location") is None
    assert list(running.guard.sessions) == [session]
    assert running.request("GET", f"/login?token={good}")[0].status == 303  # not used up


@pytest.mark.parametrize("purpose", [("Sec-Purpose", "prefetch"), ("Purpose", "prefetch")])
def test_a_prefetch_does_not_use_up_the_address(running: Running, purpose: tuple[str, str]) -> None:
    token = running.token()
    headers = {purpose[0]: purpose[1]}
    response, _ = running.request("GET", f"/login?token={token}", headers)
    assert response.status == 503 and response.getheader("Location") is None
    assert running.request("GET", f"/login?token={token}")[0].status == 303


# -- the Host: our own loopback names only ------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    ["evil.example:{port}", "127.0.0.1:1", "127.0.0.1", "localhost", "0.0.0.0:{port}", ""],
)
def test_a_foreign_host_is_refused_even_signed_in(
    running: Running, session: str, host: str
) -> None:
    """DNS rebinding: a name the attacker controls, resolving to 127.0.0.1, is not ours."""
    token = running.token()
    headers = {"Host": host.format(port=running.port), **bearer(session)}
    for path in ("/", "/static/app.js", "/api/spaces", f"/login?token={token}"):
        response, _ = running.request("GET", path, headers)
        assert response.status == 403, (host, path)
        assert response.getheader("Location") is None
    response, _ = running.write("POST", f"/api/spaces/{NS}/sync", {}, {"Host": headers["Host"]})
    assert response.status == 403
    assert running.reached_api_server() == []
    assert running.request("GET", f"/login?token={token}")[0].status == 303  # not used up


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST:{port}"])
def test_our_own_names_are_served(running: Running, session: str, host: str) -> None:
    headers = {"Host": host.format(port=running.port), **bearer(session)}
    assert running.request("GET", "/api/spaces", headers)[0].status == 200


# -- the API: the bearer session or nothing -----------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Bearer wrong",
        "Bearer {session}x",
        "Bearer {session_}",
        "Bearer {token}",  # the login token is not a session
        "Basic {session}",
        "{session}",
        "Bearer {session} {session}",
    ],
)
def test_the_api_without_the_right_bearer_is_refused(
    running: Running, session: str, authorization: str | None
) -> None:
    value = authorization and authorization.format(
        session=session, session_=session[:-1], token=running.token()
    )
    headers = {"Authorization": value} if value is not None else {}
    for path in [*READS, "/api/nothing"]:
        response, data = running.request("GET", path, headers)
        assert response.status == 401, path
        assert "open the address spacesecrets ui printed" in json.loads(data)["error"]
        assert (response.getheader("WWW-Authenticate") or "").startswith("Bearer")
        assert response.getheader("Cache-Control") == "no-store"
    for method, path in WRITES:
        response, data = running.write(method, path, BODY, headers)
        assert response.status == 401, (method, path)
        assert VALUE.encode() not in data
    assert running.reached_api_server() == []


def test_the_scheme_is_named_in_any_case(running: Running, session: str) -> None:
    for scheme in ("bearer", "BEARER"):
        headers = {"Authorization": f"{scheme} {session}"}
        assert running.request("GET", "/api/spaces", headers)[0].status == 200


@pytest.mark.parametrize(
    "cookie",
    [
        "spacesecrets-ui-{port}={session}",  # the old scheme's cookie, with the live session
        "spacesecrets-ui={session}",
        "session={session}",
        "Authorization=Bearer {session}",
    ],
)
def test_a_cookie_alone_grants_nothing(running: Running, session: str, cookie: str) -> None:
    headers = {"Cookie": cookie.format(port=running.port, session=session)}
    for path in READS:
        assert running.request("GET", path, headers)[0].status == 401, path
    for method, path in WRITES:
        assert running.write(method, path, BODY, headers)[0].status == 401, (method, path)
    assert running.reached_api_server() == []


def test_the_page_and_its_assets_need_no_sign_in_and_hold_no_secret(
    running: Running, session: str
) -> None:
    secrets = [running.token(), session]
    for path in ("/", "/static/app.js", "/static/app.css", "/static/icon.svg"):
        anonymous, data = running.request("GET", path)
        assert anonymous.status == 200, path
        _, same = running.request("GET", path, bearer(session))
        assert same == data, path  # the same bytes for everyone
        for secret in secrets:
            assert secret.encode() not in data, path
    page = running.request("GET", "/")[1].decode()
    assert "csrf" not in page.lower()


# -- writes: the bearer, our Origin, a JSON body ------------------------------------------------


def _write_cases(session: str) -> list[tuple[str, dict[str, str | None]]]:
    return [
        ("no bearer", {"Authorization": None}),
        ("a wrong bearer", {"Authorization": f"Bearer {session[:-1]}x"}),
        ("the cookie of the old scheme", {"Authorization": None, "Cookie": f"s={session}"}),
        ("a form post", {"Content-Type": "application/x-www-form-urlencoded"}),
        ("text/plain", {"Content-Type": "text/plain"}),
        ("no content type", {"Content-Type": None}),
        ("another origin", {"Origin": "http://evil.example"}),
        ("another port", {"Origin": "http://127.0.0.1:1"}),
        ("an opaque origin", {"Origin": "null"}),
        ("our origin over https", {"Origin": "https://127.0.0.1"}),
    ]


@pytest.mark.parametrize("case", range(10))
@pytest.mark.parametrize(("method", "path"), WRITES)
def test_a_write_without_the_bearer_our_origin_and_json_reaches_no_api_server(
    running: Running, session: str, case: int, method: str, path: str
) -> None:
    what, headers = _write_cases(session)[case]
    response, data = running.write(method, path, BODY, headers, session=session)
    assert response.status in (401, 403), what
    assert VALUE.encode() not in data
    assert running.fake.writes() == [], what


def test_a_write_with_the_session_is_sealed_and_patched(running: Running, session: str) -> None:
    response, data = running.write(
        "POST",
        f"/api/spaces/{NS}/keys",
        {"key": "NEW_KEY", "format": "text", "value": VALUE},
        session=session,
    )
    assert response.status == 200, data
    assert VALUE.encode() not in data
    ((_, path, patch),) = running.fake.writes()
    assert path.endswith(f"/namespaces/{NS}/spacesecrets/secrets")
    entry = patch["spec"]["data"]["NEW_KEY"]
    assert entry["format"] == "text" and entry["sealed"].startswith("hpke1:")
    assert VALUE not in json.dumps(patch)


def test_a_write_with_no_origin_is_a_local_client_and_is_served(
    running: Running, session: str
) -> None:
    """Browsers name the Origin of every cross-origin write; a local client holding the session
    is the user (or already has all the user has)."""
    response, _ = running.write(
        "POST", f"/api/spaces/{NS}/rollback", {"version": 1}, {"Origin": None}, session=session
    )
    assert response.status == 200


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
    running: Running, session: str, doc: dict[str, str], message: str
) -> None:
    response, data = running.write("POST", f"/api/spaces/{NS}/keys", doc, session=session)
    assert response.status in (400, 409)
    assert message in json.loads(data)["error"]
    assert VALUE.encode() not in data
    assert running.fake.writes() == []


# -- the attack: another web server on 127.0.0.1 -------------------------------------------------


@dataclass
class Browser:
    """The user's browser, as far as 127.0.0.1 goes: it follows the printed address, keeps every
    cookie it is given (browsers keep them per host, whatever the port) and uses the app."""

    run: Running
    cookies: dict[str, str] = field(default_factory=dict)
    seen: list[bytes] = field(default_factory=list)

    def get(self, path: str, headers: Mapping[str, str] | None = None) -> Answer:
        jar = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        response, data = self.run.request(
            "GET", path, {**({"Cookie": jar} if jar else {}), **(headers or {})}
        )
        for name, value in response.getheaders():
            if name.lower() == "set-cookie":
                key, _, rest = value.partition("=")
                self.cookies[key] = rest.split(";")[0]
        self.seen.append(data)
        return response, data

    def use_the_app(self) -> str:
        response, _ = self.get(f"/login?token={self.run.token()}")
        session = (response.getheader("Location") or "").partition("#session=")[2]
        for path in ("/", "/static/app.js", "/static/app.css", "/static/icon.svg"):
            self.get(path)
        for path in READS:
            assert self.get(path, bearer(session))[0].status == 200
        return session


def test_a_foreign_local_server_holding_what_the_browser_gives_it_cannot_use_the_api(
    running: Running,
) -> None:
    """The user's browser signs in and uses the app, then visits a malicious or compromised dev
    server on 127.0.0.1:<another port>. That server is sent every cookie the browser holds for
    127.0.0.1 and, from its own process, may fetch the app's page and assets and try whatever it
    finds in them, in every place a credential could go. It reads nothing and writes nothing."""
    browser = Browser(running)
    session = browser.use_the_app()
    assert browser.cookies == {}  # nothing for the foreign server to be sent
    users_own = list(running.fake.requests)

    attacker = Browser(running)  # its own process: no Origin, any header it likes
    attacker.cookies = dict(browser.cookies)
    for path in ("/", "/static/app.js", "/static/app.css", "/static/icon.svg"):
        assert attacker.get(path)[0].status == 200
    found = {m for data in attacker.seen for m in SECRET_LIKE.findall(data.decode(errors="ignore"))}
    assert session not in found
    jar = "; ".join(f"{k}={v}" for k, v in attacker.cookies.items())
    guesses = [*sorted(found), f"spacesecrets-ui-{running.port}", "session"]
    attempts: list[dict[str, str]] = [{"Cookie": jar}] if jar else [{}]
    for guess in guesses:
        attempts += [
            {"Authorization": f"Bearer {guess}"},
            {"Cookie": f"spacesecrets-ui-{running.port}={guess}"},
            {"X-CSRF-Token": guess, "Cookie": f"spacesecrets-ui-{running.port}={guess}"},
        ]
    for headers in attempts:
        for path in READS:
            response, data = running.request("GET", path, headers)
            assert response.status == 401, (path, headers)
            assert b"keys" not in data and b"API_HOST" not in data
        for method, path in WRITES:
            response, _ = running.write(method, path, BODY, {"Origin": None, **headers})
            assert response.status == 401, (method, path, headers)
    for guess in guesses:
        assert running.request("GET", f"/login?token={guess}")[0].status == 403
    assert running.fake.requests == users_own  # not one request of the attacker's reached it
    assert running.fake.writes() == []
    # and the user's tab goes on working
    assert running.request("GET", READS[1], bearer(session))[0].status == 200


def test_a_page_of_another_origin_cannot_write_even_knowing_the_session(
    running: Running, session: str
) -> None:
    """Should a session leak to a page of another origin, the browser names that Origin on its
    writes and they are refused (and its Authorization header needs a preflight we never answer)."""
    preflight, _ = running.request(
        "OPTIONS",
        f"/api/spaces/{NS}/sync",
        {"Origin": "http://127.0.0.1:3000", "Access-Control-Request-Headers": "authorization"},
    )
    assert preflight.status >= 400
    assert preflight.getheader("Access-Control-Allow-Origin") is None
    for method, path in WRITES:
        response, _ = running.write(
            method, path, BODY, {"Origin": "http://127.0.0.1:3000"}, session=session
        )
        assert response.status == 403
        assert response.getheader("Access-Control-Allow-Origin") is None
    assert running.fake.writes() == []


# -- what every answer carries ------------------------------------------------------------------


def test_every_answer_carries_the_security_headers(running: Running, session: str) -> None:
    for path, headers in (
        ("/", {}),
        ("/static/app.js", {}),
        ("/api/spaces", bearer(session)),
        ("/api/spaces", {}),  # a refusal too
        (f"/login?token={running.token()}", {}),
        ("/login?token=wrong", {}),
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


def test_api_answers_are_never_cached(running: Running, session: str) -> None:
    for path in (*READS, "/api/nothing"):
        response, _ = running.request("GET", path, bearer(session))
        assert response.getheader("Cache-Control") == "no-store", path
    sync = running.write("POST", f"/api/spaces/{NS}/sync", {}, session=session)[0]
    assert sync.getheader("Cache-Control") == "no-store"


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
    response, data = running.request("GET", "/")
    assert response.status == 200
    page = _Page()
    page.feed(data.decode())
    assert page.scripts and all(s.get("src", "").startswith("/static/") for s in page.scripts)
    assert page.inline == []
    assert page.external == []
    for name in ("app.js", "app.css"):
        asset = running.request("GET", f"/static/{name}")[1]
        assert b"http://" not in asset and b"https://" not in asset, name
        assert b"innerHTML" not in asset and b"eval(" not in asset, name
    script = running.request("GET", "/static/app.js")[1].decode()
    assert "document.cookie" not in script and "localStorage" not in script
    assert 'credentials: "omit"' in script and "Authorization: `Bearer" in script


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
        "/login",
    ],
)
def test_only_the_packaged_assets_are_served(running: Running, path: str) -> None:
    method = "HEAD" if path == "/login" else "GET"  # /login is GET only
    assert running.request(method, path)[0].status == 404


# -- the log --------------------------------------------------------------------------------------


def test_the_log_holds_no_token_no_session_no_query_and_no_value(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    token = running.token()
    with caplog.at_level(logging.INFO, logger="spacesecrets.ui"):
        session = running.login()
        running.request("GET", f"/login?token=wrong-{VALUE}")
        running.request("GET", f"/login?token={token}")
        for fmt in ("text", "json"):
            running.write(
                "POST",
                f"/api/spaces/{NS}/keys",
                {"key": "NEW_KEY", "format": fmt, "value": VALUE},
                session=session,
            )
        running.request("GET", f"/?token={token}")
        running.request("GET", "/api/spaces", {"Authorization": f"Bearer {VALUE}"})
    text = caplog.text
    assert "GET /login 303" in text and "POST /api/spaces/team-a/keys 200" in text
    assert "GET /api/spaces 401" in text
    for secret in (token, session, VALUE, "?", "#"):
        assert secret not in text


def test_a_malformed_request_line_logs_nothing_of_it(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    token = running.token()
    with (
        caplog.at_level(logging.INFO, logger="spacesecrets.ui"),
        socket.create_connection(("127.0.0.1", running.port), timeout=5) as sock,
    ):
        sock.sendall(f"BROKEN /login?token={token}\r\n\r\n".encode())
        sock.recv(4096)
    assert token not in caplog.text
