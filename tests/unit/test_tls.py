"""The operator's HTTP client over TLS, against a real HTTPS server on loopback with a CA of the
test's own: the server is trusted from a kubeconfig's PEM data or from a CA file (a
ServiceAccount's), not from the system's trust; a client certificate is presented when the server
asks for one; insecure-skip-tls-verify skips the check. Requests (libcurl) and watches
(`http.client`) are held to the same trust."""

from __future__ import annotations

import base64
import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

from spacesecrets.devtools.controlplane import CertificateAuthority
from spacesecrets.kube.curl import Tls
from spacesecrets.kube.transport import Rest, Unreachable


@dataclass(frozen=True)
class Pki:
    ca: bytes  # the CA's certificate, PEM
    server_cert: bytes
    server_key: bytes
    client_cert: bytes  # the operator's
    client_key: bytes


@pytest.fixture(scope="module")
def pki() -> Pki:
    ca = CertificateAuthority()
    server = ca.issue("server", server_ips=["127.0.0.1"])
    client = ca.issue("operator")
    return Pki(ca.cert_pem, server.cert_pem, server.key_pem, client.cert_pem, client.key_pem)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        assert isinstance(self.connection, ssl.SSLSocket)
        der = self.connection.getpeercert(binary_form=True)
        who = "nobody"
        if der:
            names = x509.load_der_x509_certificate(der).subject
            who = str(names.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
        body = who.encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    accepted = 0  # connections, each a TLS handshake

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server_address[1]}"

    def get_request(self) -> tuple[socket.socket, Any]:
        got = super().get_request()
        self.accepted += 1
        return got

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a refused handshake is what some tests are about


@contextlib.contextmanager
def _serve(pki: Pki, tmp: Path, *, client_certs: bool) -> Iterator[Server]:
    (tmp / "server.crt").write_bytes(pki.server_cert)
    (tmp / "server.key").write_bytes(pki.server_key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(tmp / "server.crt"), str(tmp / "server.key"))
    if client_certs:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata=pki.ca.decode())
    srv = Server(("127.0.0.1", 0), Handler)
    srv.socket = context.wrap_socket(srv.socket, server_side=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def server(pki: Pki, tmp_path: Path) -> Iterator[str]:
    with _serve(pki, tmp_path, client_certs=False) as srv:
        yield srv.url


@pytest.fixture
def strict_server(pki: Pki, tmp_path: Path) -> Iterator[str]:
    """One that asks every client for a certificate issued by the CA."""
    with _serve(pki, tmp_path, client_certs=True) as srv:
        yield srv.url


def _both(rest: Rest) -> tuple[bytes, bytes]:
    """What a request and a watch each read."""
    answer = rest.request("GET", "/api")
    with rest.stream("/watch", {}, read_timeout=5) as (status, lines):
        assert status == 200
        streamed = b"".join(lines)
    return answer.data, streamed


def test_the_server_is_trusted_from_pem_data_and_from_a_ca_file(
    pki: Pki, server: str, tmp_path: Path
) -> None:
    assert _both(Rest(server, Tls(ca=pki.ca))) == (b"nobody\n", b"nobody\n")
    (tmp_path / "ca.crt").write_bytes(pki.ca)
    assert _both(Rest(server, Tls(ca_file=str(tmp_path / "ca.crt"))))[0] == b"nobody\n"


def test_a_server_the_trust_does_not_cover_is_unreachable(pki: Pki, server: str) -> None:
    other = CertificateAuthority()
    for tls in (Tls(), Tls(ca=other.cert_pem)):  # the system's trust, another CA
        rest = Rest(server, tls)
        with pytest.raises(Unreachable, match="certificate is not trusted"):
            rest.request("GET", "/api")
        with pytest.raises(Unreachable), rest.stream("/watch", {}, read_timeout=5):
            pass


def test_insecure_skip_tls_verify_skips_the_check(server: str) -> None:
    assert _both(Rest(server, Tls(verify=False)))[0] == b"nobody\n"


def test_a_client_certificate_is_presented_when_asked(pki: Pki, strict_server: str) -> None:
    mine = Tls(ca=pki.ca, cert=pki.client_cert, key=pki.client_key)
    assert _both(Rest(strict_server, mine)) == (b"operator\n", b"operator\n")
    with pytest.raises(Unreachable):
        Rest(strict_server, Tls(ca=pki.ca)).request("GET", "/api")


def test_a_kubeconfig_s_certificate_data_and_client_pair_are_used(
    pki: Pki, strict_server: str, tmp_path: Path
) -> None:
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    config = {
        "current-context": "here",
        "contexts": [{"name": "here", "context": {"cluster": "c", "user": "u"}}],
        "clusters": [
            {
                "name": "c",
                "cluster": {
                    "server": strict_server,
                    "certificate-authority-data": b64(pki.ca),
                },
            }
        ],
        "users": [
            {
                "name": "u",
                "user": {
                    "client-certificate-data": b64(pki.client_cert),
                    "client-key-data": b64(pki.client_key),
                },
            }
        ],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    assert Rest.from_kubeconfig(path).request("GET", "/api").data == b"operator\n"


def test_requests_over_tls_keep_one_connection(pki: Pki, tmp_path: Path) -> None:
    """One handshake for many requests: the API server's CPU for a handshake is many writes'."""
    with _serve(pki, tmp_path, client_certs=True) as srv:
        rest = Rest(srv.url, Tls(ca=pki.ca, cert=pki.client_cert, key=pki.client_key))
        answers = [rest.request("GET", f"/api/{n}").data for n in range(10)]
        assert answers == [b"operator\n"] * 10
        assert srv.accepted == 1
