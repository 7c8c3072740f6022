"""The metrics bind address: read from SPACESECRETS_METRICS_ADDRESS, and the HTTP server listens on
it and nowhere else.

127.0.0.1 and 127.0.0.2 are both local addresses on Linux (all of 127.0.0.0/8 is routed to `lo`),
so a server bound to 127.0.0.1 only must refuse 127.0.0.2, while one bound to 0.0.0.0 answers on
both; the machine's own non-loopback address, when it has one, is checked the same way.
"""

from __future__ import annotations

import socket
import urllib.request

import pytest

from spacesecrets.core.settings import Settings, SettingsError
from spacesecrets.engine.metrics import Metrics

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy


def _answers(host: str, port: int) -> bool:
    try:
        with _DIRECT.open(f"http://{host}:{port}/metrics", timeout=5) as response:
            return b"spacesecrets_key_ring_age_seconds" in response.read()
    except OSError:
        return False


def _refuses(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        return sock.connect_ex((host, port)) != 0


def _other_local_address() -> str | None:
    """A non-loopback IPv4 address of this machine (a UDP connect sends nothing), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.1", 9))  # TEST-NET-1: only picks the outgoing interface
        except OSError:
            return None
        address = str(sock.getsockname()[0])
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def test_the_address_is_a_setting() -> None:
    assert Settings.from_env({}).metrics_address == "0.0.0.0"
    assert Settings().metrics_address == "0.0.0.0"
    env = {"SPACESECRETS_METRICS_ADDRESS": "127.0.0.1"}
    assert Settings.from_env(env).metrics_address == "127.0.0.1"
    assert Settings.from_env({"SPACESECRETS_METRICS_ADDRESS": "0:0::1"}).metrics_address == "::1"
    for bad in ("localhost", "127.0.0.300", "0.0.0.0:8080", "*"):
        with pytest.raises(SettingsError, match="SPACESECRETS_METRICS_ADDRESS"):
            Settings.from_env({"SPACESECRETS_METRICS_ADDRESS": bad})


def test_metrics_bound_to_loopback_are_not_reachable_on_another_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `serve(port)` without an address, as the operator's startup calls it: the setting decides
    monkeypatch.setenv("SPACESECRETS_METRICS_ADDRESS", "127.0.0.1")
    host, port = Metrics().serve(0)
    assert host == "127.0.0.1"
    assert _answers("127.0.0.1", port)
    assert _refuses("127.0.0.2", port)
    other = _other_local_address()
    if other is not None:
        assert _refuses(other, port)


def test_metrics_bound_to_every_address_answer_on_another_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the control for the test above: what it refuses is refused because of the bind address
    monkeypatch.delenv("SPACESECRETS_METRICS_ADDRESS", raising=False)
    host, port = Metrics().serve(0)
    assert host == "0.0.0.0"
    assert _answers("127.0.0.1", port)
    assert _answers("127.0.0.2", port)
    other = _other_local_address()
    if other is not None:
        assert _answers(other, port)
