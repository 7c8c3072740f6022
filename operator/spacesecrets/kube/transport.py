"""How spacesecrets reaches the API server: one `request` method, two ways to make it.

Edge. The operator uses `Rest`: libcurl's kept-alive handles for requests (`curl`) and the
standard library's `http.client` for the watches' streams (`connections`), with in-cluster or
kubeconfig credentials (a token or a client certificate), JSON in and out. The official client
builds a generated model for every object it reads and costs 58 MiB of resident memory just to
import, more than the state of thousands of spaces; the operator's handful of calls need neither.
The CLI and the tests wrap the official client instead (`factory.ClientTransport`), which knows
every kind of kubeconfig authentication people use at their desks (exec plugins, auth providers).
"""

from __future__ import annotations

import abc
import base64
import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlencode

import yaml

from spacesecrets.kube import curl
from spacesecrets.kube.connections import ERRORS as STREAM_ERRORS
from spacesecrets.kube.connections import Connections
from spacesecrets.kube.curl import Tls

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_REREAD_SECONDS = 60.0
CONNECT_TIMEOUT = 10.0


class Response(NamedTuple):
    status: int
    data: bytes


class Unreachable(Exception):
    """No answer: the connection failed or timed out."""


class ConfigError(Exception):
    """The credentials cannot be loaded."""


class Transport(abc.ABC):
    @abc.abstractmethod
    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: Mapping[str, str] | None = None,
        content_type: str = JSON,
        accept: str = JSON,
    ) -> Response: ...


class Rest(Transport):
    """A pooled HTTPS client for one API server."""

    def __init__(
        self,
        server: str,
        tls: Tls | None = None,
        *,
        token: str | None = None,
        token_file: Path | None = None,
        connections: int = 32,
        timeout: float = 30.0,
    ) -> None:
        self.server = server.rstrip("/")
        self.user_agent = "spacesecrets"  # a shard adds its member id: the audit log tells them
        self._token, self._token_file, self._token_read = token, token_file, 0.0
        self._lock = threading.Lock()
        self._streams = Connections(
            self.server, (tls or Tls()).context(), connect_timeout=CONNECT_TIMEOUT
        )
        self._handles = curl.Handles(
            tls, size=connections, connect_timeout=CONNECT_TIMEOUT, timeout=timeout
        )

    @classmethod
    def from_environment(cls, kubeconfig: str | None = None, connections: int = 32) -> Rest:
        """The ServiceAccount inside a pod; else the kubeconfig (given, $KUBECONFIG, or
        ~/.kube/config), as the official client would choose."""
        in_pod = os.environ.get("KUBERNETES_SERVICE_HOST") and (SERVICE_ACCOUNT / "token").exists()
        if kubeconfig is None and in_pod:
            return cls.in_cluster(connections)
        path = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
        return cls.from_kubeconfig(Path(path or Path.home() / ".kube" / "config"), connections)

    @classmethod
    def in_cluster(cls, connections: int = 32) -> Rest:
        host = os.environ["KUBERNETES_SERVICE_HOST"]
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        host = f"[{host}]" if ":" in host else host
        return cls(
            f"https://{host}:{port}",
            Tls(ca_file=str(SERVICE_ACCOUNT / "ca.crt")),
            token_file=SERVICE_ACCOUNT / "token",  # projected and rotated: read again hourly
            connections=connections,
        )

    @classmethod
    def from_kubeconfig(cls, path: Path, connections: int = 32) -> Rest:
        try:
            doc = yaml.safe_load(path.read_text()) or {}
            context = _named(doc, "contexts", str(doc["current-context"]))
            cluster = _named(doc, "clusters", str(context["cluster"]))
            user = _named(doc, "users", str(context["user"]))
        except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
            raise ConfigError(f"cannot read the kubeconfig {path}: {exc!s:.200}") from None
        if "exec" in user or "auth-provider" in user:
            raise ConfigError(
                "the operator authenticates with a token or a client certificate; "
                f"{path} uses an exec plugin or auth provider"
            )
        base = path.parent
        token_file = user.get("tokenFile")
        try:
            return cls(
                str(cluster["server"]),
                _tls(cluster, user, base),
                token=user.get("token"),
                token_file=base / token_file if token_file else None,
                connections=connections,
            )
        except ValueError as exc:
            raise ConfigError(f"cannot use the kubeconfig {path}: {exc}") from None

    def _bearer(self) -> str | None:
        if self._token_file is None:
            return self._token
        with self._lock:
            if time.monotonic() - self._token_read > TOKEN_REREAD_SECONDS:
                self._token = self._token_file.read_text().strip()
                self._token_read = time.monotonic()
            return self._token

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: Mapping[str, str] | None = None,
        content_type: str = JSON,
        accept: str = JSON,
    ) -> Response:
        url = self.server + path + (f"?{urlencode(query)}" if query else "")
        headers = [f"{k}: {v}" for k, v in self._headers(accept).items()]
        payload = None
        if body is not None:
            headers.append(f"Content-Type: {content_type}")
            payload = json.dumps(body).encode()
        try:
            status, data = self._handles.request(method, url, headers, payload)
        except curl.ERRORS as exc:
            raise Unreachable(_curl_error(exc)) from None
        return Response(status, data)

    def _headers(self, accept: str) -> dict[str, str]:
        headers = {"Accept": accept, "User-Agent": self.user_agent}
        token = self._bearer()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    @contextlib.contextmanager
    def stream(
        self, path: str, query: Mapping[str, str], *, read_timeout: float
    ) -> Iterator[tuple[int, Iterator[bytes]]]:
        """A streaming GET (a watch) on a connection of its own: its status and its lines as
        they come. The connection is closed at the end, never reused."""
        url = f"{self._streams.prefix}{path}?{urlencode(query)}"
        try:
            conn = self._streams.open(read_timeout)
        except STREAM_ERRORS as exc:
            raise Unreachable(type(exc).__name__) from None
        try:
            conn.request("GET", url, headers=self._headers(JSON))
            response = conn.getresponse()
        except STREAM_ERRORS as exc:
            conn.close()
            raise Unreachable(type(exc).__name__) from None

        def lines() -> Iterator[bytes]:
            try:
                while line := response.readline():
                    yield line
            except STREAM_ERRORS as exc:
                raise Unreachable(type(exc).__name__) from None

        try:
            yield response.status, lines()
        finally:
            conn.close()


def _named(doc: Mapping[str, Any], section: str, name: str) -> dict[str, Any]:
    for item in doc.get(section) or []:
        if item.get("name") == name:
            inner: dict[str, Any] = item[section[:-1]]  # "clusters" -> "cluster"
            return inner
    raise KeyError(f"{section[:-1]} {name!r}")


def _tls(cluster: Mapping[str, Any], user: Mapping[str, Any], base: Path) -> Tls:
    ca, ca_file = None, None
    if cluster.get("certificate-authority-data"):
        ca = base64.b64decode(cluster["certificate-authority-data"])
    elif cluster.get("certificate-authority"):
        ca_file = str(base / cluster["certificate-authority"])
    return Tls(
        ca=ca,
        ca_file=ca_file,
        cert=_pem(user, "client-certificate", base),
        key=_pem(user, "client-key", base),
        verify=not cluster.get("insecure-skip-tls-verify"),
    )


_CURL_ERRORS = {
    6: "cannot resolve the server's name",
    7: "cannot connect to the server",
    28: "timed out",
    35: "TLS handshake failed",
    52: "the server closed the connection without an answer",
    55: "sending failed",
    56: "receiving failed",
    58: "the client certificate or its key cannot be used",
    60: "the server's certificate is not trusted",
}


def _curl_error(exc: BaseException) -> str:
    """What failed, in words and libcurl's code, without the address libcurl's own message
    quotes: "cannot connect to the server (libcurl error 7)"."""
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
    return f"{_CURL_ERRORS.get(code, 'no answer')} (libcurl error {code})"


def _pem(user: Mapping[str, Any], field: str, base: Path) -> bytes | None:
    if user.get(f"{field}-data"):
        return base64.b64decode(user[f"{field}-data"])
    if user.get(field):
        return (base / str(user[field])).read_bytes()
    return None
