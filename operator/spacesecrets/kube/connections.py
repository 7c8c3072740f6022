"""Connections of their own for the watches: long-lived streams over the standard library's
`http.client`, each read a line at a time and closed at its end.

Kube layer. Every other request goes through `curl.Handles`; a watch holds its connection for
minutes and is read as the server writes, which is what `http.client`'s response object does.
"""

from __future__ import annotations

import http.client
import socket
import ssl
from urllib.parse import urlsplit

# what a failed exchange raises: the connection is then closed, never reused
ERRORS = (http.client.HTTPException, OSError)


class Connections:
    """New connections to one server, on demand."""

    def __init__(
        self, server: str, context: ssl.SSLContext | None, *, connect_timeout: float
    ) -> None:
        url = urlsplit(server)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) server address: {server!r}")
        self.https = url.scheme == "https"
        self.host = url.hostname
        self.port = url.port or (443 if self.https else 80)
        self.prefix = url.path.rstrip("/")  # a server behind a path (a proxy)
        self.context = context
        self.connect_timeout = connect_timeout

    def open(self, read_timeout: float) -> http.client.HTTPConnection:
        """A new connection, connected (within the connect timeout), reading within
        `read_timeout`."""
        conn: http.client.HTTPConnection
        if self.https:
            conn = http.client.HTTPSConnection(
                self.host, self.port, timeout=self.connect_timeout, context=self.context
            )
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.connect_timeout)
        try:
            conn.connect()
        except ERRORS:
            conn.close()  # a TLS handshake refused leaves its socket open otherwise
            raise
        assert conn.sock is not None
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.sock.settimeout(read_timeout)
        return conn
