"""A real Node-RED reads secrets that a real FlowSecretSync projects on the real control plane.

The chain under test: an owner applies a SpaceSecrets; the shared operator projects it into the
FlowSecretSync's target Secret on its autosync tick; a kubelet-like loop copies that Secret into
a volume directory the way kubelet updates a mounted Secret; the spacesecrets node in a real
Node-RED reads the volume into global context when it changes, and on every deploy ("save"); a
function node answers HTTP requests from ``global.get("SECRETS")``.

The shared operator's "1m" autosync is scaled to 3 s (``tests/support/env.py``); the node's tick is
set through its test override ``SPACESECRETS_AUTOSYNC_SECONDS``.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import yaml
from tests.support.nodered import deploy_flows, run_node_red, secret_manager_node
from tests.support.space import Space

from spacesecrets.core.projection import decoded_documents
from spacesecrets.devtools.dev import wait_for
from spacesecrets.devtools.kubelet import write_projection
from spacesecrets.kube import NotFound
from spacesecrets.kube.client import Kube
from spacesecrets.kube.factory import kube_for

T = TypeVar("T")

FLOW = "orders-flow"
TARGET = "orders-flow-secrets"
KUBELET_PERIOD = 0.3  # how often the kubelet-like loop looks at the target Secret
# The operator's tick (3 s), the kubelet loop and the node's 1 s tick, with room for a slow host.
PROPAGATION_TIMEOUT = 20.0
# After a deploy the node reads the volume at once; "promptly" leaves room for the restart.
DEPLOY_TIMEOUT = 5.0


class KubeletLoop:
    """Copies the target Secret into ``volume`` every KUBELET_PERIOD, like kubelet's sync loop.

    ``write_projection`` writes nothing when the payload is unchanged, so a quiet Secret leaves
    the volume alone. Errors other than "not there yet" are kept and re-raised by ``stop``.
    """

    def __init__(self, kube: Kube, namespace: str, name: str, volume: Path) -> None:
        self._kube, self._ns, self._name, self._volume = kube, namespace, name, volume
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kubelet-loop", daemon=True)
        self.error: BaseException | None = None
        self.writes = 0

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync_once()
            except NotFound:
                pass  # the operator has not created the target yet
            except BaseException as exc:  # surfaced by stop(); the loop itself must not die
                self.error = exc
            self._stop.wait(KUBELET_PERIOD)

    def sync_once(self) -> None:
        secret = self._kube.get("Secret", self._ns, self._name)
        files = {k: v.encode() for k, v in decoded_documents(secret).items()}
        write_projection(self._volume, files)
        self.writes += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        assert not self._thread.is_alive(), "the kubelet loop did not stop"
        if self.error is not None:
            raise AssertionError(f"the kubelet loop failed: {self.error!r}") from self.error


@contextmanager
def kubelet_loop(space: Space, volume: Path) -> Iterator[KubeletLoop]:
    # A client of its own: the test thread keeps using the fixture's.
    loop = KubeletLoop(kube_for(str(space.cluster.kubeconfig)), space.ns, TARGET, volume)
    loop.start()
    try:
        yield loop
    finally:
        loop.stop()


_FUNCTION_DEFAULTS = {
    "outputs": 1,
    "timeout": 0,
    "noerr": 0,
    "initialize": "",
    "finalize": "",
    "libs": [],
}


def _http_endpoint(suffix: str, y: int, func: str) -> list[dict[str, Any]]:
    """GET /<suffix> answered by a function node running ``func``."""
    return [
        {
            "id": f"get-{suffix}",
            "type": "http in",
            "z": "tab1",
            "url": f"/{suffix}",
            "method": "get",
            "upload": False,
            "swaggerDoc": "",
            "x": 120,
            "y": y,
            "wires": [[f"read-{suffix}"]],
        },
        {
            "id": f"read-{suffix}",
            "type": "function",
            "z": "tab1",
            "name": "",
            "func": func,
            **_FUNCTION_DEFAULTS,
            "x": 300,
            "y": y,
            "wires": [[f"respond-{suffix}"]],
        },
        {
            "id": f"respond-{suffix}",
            "type": "http response",
            "z": "tab1",
            "statusCode": "",
            "headers": {},
            "x": 480,
            "y": y,
            "wires": [],
        },
    ]


def flows_for(volume: Path, **options: Any) -> list[dict[str, Any]]:
    return [
        {"id": "tab1", "type": "tab", "label": "secrets", "disabled": False, "info": ""},
        secret_manager_node(volume, **options),
        # GET /secret -> SECRETS.KEY; GET /version -> SECRETS_METADATA.version
        *_http_endpoint("secret", 100, 'msg.payload = global.get("SECRETS")["KEY"]; return msg;'),
        *_http_endpoint(
            "version",
            160,
            'msg.payload = String(global.get("SECRETS_METADATA").version); return msg;',
        ),
        # The node's status, as a status node sees it, kept in global context: GET /status
        {
            "id": "watch-status",
            "type": "status",
            "z": "tab1",
            "scope": ["secret-manager"],
            "x": 120,
            "y": 220,
            "wires": [["keep-status"]],
        },
        {
            "id": "keep-status",
            "type": "function",
            "z": "tab1",
            "name": "",
            "func": 'global.set("STATUS_TEXT", msg.status.text); return null;',
            **_FUNCTION_DEFAULTS,
            "x": 300,
            "y": 220,
            "wires": [[]],
        },
        *_http_endpoint(
            "status", 280, 'msg.payload = global.get("STATUS_TEXT") || ""; return msg;'
        ),
    ]


def http_get(url: str) -> str | None:
    """The body of a 200 answer, or None (not served yet, no SECRETS yet, ...)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            body: bytes = response.read()
            return body.decode() if response.status == 200 else None
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def stays(description: str, probe: Callable[[], T | None], expected: T, duration: float) -> None:
    """``probe`` answers ``expected`` throughout ``duration`` seconds."""
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        answer = probe()
        assert answer == expected, f"{description}: got {answer!r}"
        time.sleep(0.1)  # polling interval, bounded by the deadline


def volume_version(volume: Path) -> int | None:
    try:
        return int(json.loads((volume / "SECRETS_METADATA").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def test_node_red_follows_a_flow_secret_sync(space: Space, tmp_path: Path) -> None:
    volume = tmp_path / "etc-spacesecrets"
    flows = flows_for(volume)

    space.apply({"KEY": "value-1", "CONF": {"a": 1}})
    space.wait_version(1)
    space.cluster.cp.kubectl(
        "apply", "-f", "-", input=yaml.safe_dump(space.flow(FLOW, TARGET, autosync="1m"))
    )

    with kubelet_loop(space, volume) as kubelet:
        wait_for(
            "version 1 in the volume", lambda: volume_version(volume) == 1, PROPAGATION_TIMEOUT
        )
        assert space.target_documents(TARGET)["SECRETS"] == {"KEY": "value-1", "CONF": {"a": 1}}

        # Phase 1: the node's tick is an hour away; it follows the volume (its default).
        with run_node_red(
            tmp_path / "node-red-1", flows, {"SPACESECRETS_AUTOSYNC_SECONDS": "3600"}
        ) as base_url:
            secret_url, version_url, status_url = (
                f"{base_url}/secret",
                f"{base_url}/version",
                f"{base_url}/status",
            )
            wait_for(
                "value-1 served", lambda: http_get(secret_url) == "value-1", PROPAGATION_TIMEOUT
            )
            assert http_get(version_url) == "1"

            # An owner changes the secret: operator tick -> Secret -> volume -> node following.
            space.apply({"KEY": "value-2", "CONF": {"a": 1}})
            space.wait_version(2)
            wait_for(
                "value-2 served", lambda: http_get(secret_url) == "value-2", PROPAGATION_TIMEOUT
            )
            assert http_get(version_url) == "2"
            wait_for(
                "status v2", lambda: http_get(status_url) == "🆗 Synced v2", PROPAGATION_TIMEOUT
            )

        # Phase 2: the node's tick is an hour away and it does not follow the volume: only a
        # deploy (a "save") makes it read.
        flows = flows_for(volume, followVolume=False)
        with run_node_red(
            tmp_path / "node-red-2", flows, {"SPACESECRETS_AUTOSYNC_SECONDS": "3600"}
        ) as base_url:
            secret_url, version_url, status_url = (
                f"{base_url}/secret",
                f"{base_url}/version",
                f"{base_url}/status",
            )
            # A fresh runtime reads at start.
            wait_for(
                "value-2 served after restart",
                lambda: http_get(secret_url) == "value-2",
                PROPAGATION_TIMEOUT,
            )
            assert http_get(version_url) == "2"

            space.apply({"KEY": "value-3", "CONF": {"a": 1}})
            space.wait_version(3)
            wait_for(
                "version 3 in the volume", lambda: volume_version(volume) == 3, PROPAGATION_TIMEOUT
            )
            # Between its ticks the node keeps what it read (longer than a 1 s tick would allow).
            stays("value-2 served without a deploy", lambda: http_get(secret_url), "value-2", 1.5)
            assert http_get(version_url) == "2"
            assert http_get(status_url) == "🆗 Synced v2"

            assert deploy_flows(base_url, flows)
            wait_for(
                "value-3 served after a deploy",
                lambda: http_get(secret_url) == "value-3",
                DEPLOY_TIMEOUT,
            )
            assert http_get(version_url) == "3"
            wait_for(
                "status v3", lambda: http_get(status_url) == "🆗 Synced v3", PROPAGATION_TIMEOUT
            )

            # Corrupt files: kubelet stopped, a broken SECRETS published, then a save.
            kubelet.stop()
            good = {
                k: v.encode()
                for k, v in decoded_documents(space.kube.get("Secret", space.ns, TARGET)).items()
            }
            metadata = json.loads(good["SECRETS_METADATA"])
            corrupt = {
                "SECRETS": good["SECRETS"][:7],
                "SECRETS_METADATA": json.dumps({**metadata, "version": 4}).encode(),
            }
            write_projection(volume, corrupt)
            assert deploy_flows(base_url, flows)

            def corrupt_reported() -> str | None:
                text = http_get(status_url)
                reported = text is not None and text.startswith("SECRETS is not valid JSON")
                return text if reported else None

            status = wait_for("the corrupt SECRETS reported", corrupt_reported, DEPLOY_TIMEOUT)
            assert "value" not in status
            # the redeployed node still knows which version it keeps serving
            assert status.endswith("(keeping v3)"), status
            assert http_get(secret_url) == "value-3"
            assert http_get(version_url) == "3"
