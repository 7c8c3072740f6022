"""The operator's HTTP client (`kube.transport.Rest`: libcurl's handles for requests, `http.client`
for watches) against a real HTTP server on loopback: keep-alive connections are reused, one the
server closed while it was idle is not, a watch has a connection of its own, every method sends
its body, no proxy in the environment is used, and no server is `Unreachable`. TLS is in
`test_tls.py`."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from spacesecrets.kube.transport import Rest, Unreachable


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.peers: list[int] = []  # the client port of each request
        self.seen: list[tuple[str, str, bytes, dict[str, str]]] = []  # method, path, body, headers
        self.sockets: list[socket.socket] = []
        self.release = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    server: Server

    def setup(self) -> None:
        super().setup()
        self.server.sockets.append(self.connection)

    def do_GET(self) -> None:
        self.server.peers.append(self.client_address[1])
        self.server.seen.append((self.command, self.path, self._body(), dict(self.headers)))
        if self.path.startswith("/watch"):
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for line in (b'{"type":"ADDED"}\n', b'{"type":"MODIFIED"}\n'):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                self.wfile.flush()
                self.server.release.wait(5)  # the second line only once the first was read
            self.wfile.write(b"0\r\n\r\n")
            return
        body = b'{"path":"%s"}' % self.path.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_requests_reuse_one_kept_alive_connection(server: Server) -> None:
    rest = Rest(server.url, None, token="t")
    answers = [rest.request("GET", f"/api/{n}") for n in range(5)]
    assert [a.status for a in answers] == [200] * 5
    assert answers[4].data == b'{"path":"/api/4"}'
    assert len(set(server.peers)) == 1, server.peers


def test_a_connection_the_server_closed_while_idle_is_not_reused(server: Server) -> None:
    rest = Rest(server.url, None)
    assert rest.request("GET", "/api/first").status == 200
    for sock in server.sockets:
        sock.shutdown(socket.SHUT_RDWR)  # the server's end goes, as an idle timeout does
    answer = rest.request("GET", "/api/second")
    assert answer.status == 200 and answer.data == b'{"path":"/api/second"}'
    assert len(set(server.peers)) == 2


def test_a_watch_streams_its_lines_on_a_connection_of_its_own(server: Server) -> None:
    rest = Rest(server.url, None)
    assert rest.request("GET", "/api/before").status == 200
    with rest.stream("/watch", {"watch": "1"}, read_timeout=5) as (status, lines):
        assert status == 200
        assert next(lines) == b'{"type":"ADDED"}\n'  # before the server wrote the rest
        server.release.set()
        assert list(lines) == [b'{"type":"MODIFIED"}\n']
    assert rest.request("GET", "/api/after").status == 200
    before, watch, after = server.peers
    assert watch != before and after == before


def test_no_server_is_unreachable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: the connection is refused
        rest = Rest(f"http://127.0.0.1:{port}", None)
        with pytest.raises(Unreachable) as refused:
            rest.request("GET", "/api/secret-path")
        assert str(refused.value) == "cannot connect to the server (libcurl error 7)"
        with pytest.raises(Unreachable), rest.stream("/watch", {}, read_timeout=1):
            pass


def test_a_server_address_that_is_not_http_is_refused() -> None:
    with pytest.raises(ValueError, match="not an http"):
        Rest("ftp://example.com", None)


def test_each_method_is_sent_as_itself_with_its_body_and_headers(server: Server) -> None:
    rest = Rest(server.url, None, token="sesame")
    rest.request("GET", "/api/get", query={"limit": "1"})
    rest.request("POST", "/api/post", {"a": 1})
    rest.request("PUT", "/api/put", {"b": "é"})
    rest.request("PATCH", "/api/patch", {"c": None}, content_type="application/merge-patch+json")
    rest.request("DELETE", "/api/delete")
    rest.request("DELETE", "/api/delete-with-options", {"propagationPolicy": "Background"})
    rest.request("GET", "/api/after-a-delete")  # a reused handle forgets the last method
    sent = [(method, path, body) for method, path, body, _ in server.seen]
    assert sent == [
        ("GET", "/api/get?limit=1", b""),
        ("POST", "/api/post", b'{"a": 1}'),
        ("PUT", "/api/put", b'{"b": "\\u00e9"}'),
        ("PATCH", "/api/patch", b'{"c": null}'),
        ("DELETE", "/api/delete", b""),
        ("DELETE", "/api/delete-with-options", b'{"propagationPolicy": "Background"}'),
        ("GET", "/api/after-a-delete", b""),
    ]
    headers = [h for *_, h in server.seen]
    assert {h["Authorization"] for h in headers} == {"Bearer sesame"}
    assert headers[3]["Content-Type"] == "application/merge-patch+json"
    assert headers[1]["Content-Type"] == "application/json" and "Expect" not in headers[1]
    assert "Content-Type" not in headers[0]
    assert len(set(server.peers)) == 1, server.peers


def test_a_proxy_in_the_environment_is_not_used(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An egress proxy set for the pod must not carry the operator's calls to its API server
    (none listens at this address: a request sent there would fail)."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    answer = Rest(server.url, None).request("GET", "/api/direct")
    assert answer.status == 200 and answer.data == b'{"path":"/api/direct"}'
