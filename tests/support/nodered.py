"""Run a real Node-RED, with the spacesecrets node loaded, for end-to-end tests.

Node-RED comes from the devDependencies of ``clients/node-red`` (``npm ci`` is run there when
its ``node_modules`` is missing). The node is loaded straight from the repository checkout via
the ``nodesDir`` setting, so nothing is installed into the Node-RED user directory.

Layer: test support; standard library only, no Kubernetes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "NODE_RED_PACKAGE",
    "NodeRedError",
    "deploy_flows",
    "ensure_node_red_installed",
    "run_node_red",
    "secret_manager_node",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
NODE_RED_PACKAGE = REPO_ROOT / "clients" / "node-red"
RED_JS = NODE_RED_PACKAGE / "node_modules" / "node-red" / "red.js"

_NPM_CI_TIMEOUT = 600.0
_STARTUP_TIMEOUT = 90.0
_STOP_TIMEOUT = 15.0
_PORT_ATTEMPTS = 3


class NodeRedError(RuntimeError):
    """Node-RED could not be installed, started or talked to."""


def ensure_node_red_installed() -> Path:
    """Return the path of ``red.js``, running ``npm ci`` in ``clients/node-red`` if needed."""
    if not RED_JS.is_file():
        npm = shutil.which("npm")
        if npm is None:
            raise NodeRedError("npm is not on PATH; it is needed to install Node-RED")
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=NODE_RED_PACKAGE,
            capture_output=True,
            text=True,
            timeout=_NPM_CI_TIMEOUT,
            check=False,
        )
        if result.returncode != 0 or not RED_JS.is_file():
            raise NodeRedError(f"npm ci in {NODE_RED_PACKAGE} failed:\n{result.stderr[-4000:]}")
    return RED_JS


@contextlib.contextmanager
def run_node_red(
    user_dir: Path,
    flows: list[dict[str, Any]],
    env: Mapping[str, str] | None = None,
    *,
    startup_timeout: float = _STARTUP_TIMEOUT,
) -> Iterator[str]:
    """Start Node-RED with ``flows`` and yield its base URL (``http://127.0.0.1:PORT``).

    ``user_dir`` receives the settings file, the flow file and ``node-red.log``. ``env`` is added
    to this process's environment. Editor and Admin API have no authentication; projects, telemetry
    and palette installs are off. The process and its process group are always stopped on exit.
    """
    red_js = ensure_node_red_installed()
    node = shutil.which("node")
    if node is None:
        raise NodeRedError("node is not on PATH")
    user_dir.mkdir(parents=True, exist_ok=True)
    flow_file = user_dir / "flows.json"
    flow_file.write_text(json.dumps(flows, indent=2))
    log_path = user_dir / "node-red.log"
    process_env = {**os.environ, **(env or {})}

    last_error: NodeRedError | None = None
    for _ in range(_PORT_ATTEMPTS):
        port = _free_loopback_port()
        settings = _write_settings(user_dir, port, flow_file)
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [node, str(red_js), "--settings", str(settings), "--userDir", str(user_dir)],
                cwd=user_dir,
                env=process_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so nothing it spawns outlives it
            )
        base_url = f"http://127.0.0.1:{port}"
        try:
            _wait_until_ready(process, base_url, log_path, startup_timeout)
        except _PortTakenError as exc:
            _stop(process)
            last_error = exc
            continue
        except BaseException:
            _stop(process)
            raise
        try:
            yield base_url
        finally:
            _stop(process)
        return
    raise last_error or NodeRedError("Node-RED did not start")


def deploy_flows(base_url: str, flows: list[dict[str, Any]], *, timeout: float = 30.0) -> str:
    """Deploy ``flows`` with a full deploy (every node restarted); return the new revision."""
    request = urllib.request.Request(
        f"{base_url}/flows",
        data=json.dumps({"flows": flows}).encode(),
        method="POST",
        headers={
            "Content-Type": "application/json",
            # v2 of the Admin API answers with the new revision (v1 answers 204, no body).
            "Node-RED-API-Version": "v2",
            "Node-RED-Deployment-Type": "full",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:2000]
        raise NodeRedError(f"POST /flows answered {exc.code}: {detail}") from None
    revision = json.loads(body or b"{}").get("rev", "")
    return str(revision)


class _PortTakenError(NodeRedError):
    pass


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _write_settings(user_dir: Path, port: int, flow_file: Path) -> Path:
    settings: dict[str, Any] = {
        "uiHost": "127.0.0.1",
        "uiPort": port,
        "userDir": str(user_dir),
        "flowFile": flow_file.name,
        "flowFilePretty": True,
        # The node package is loaded from the checkout: no npm install into the user dir.
        "nodesDir": [str(NODE_RED_PACKAGE)],
        # Flows written by tests hold no credentials; don't generate a key for them.
        "credentialSecret": False,
        "editorTheme": {"projects": {"enabled": False}, "tours": False},
        "externalModules": {"autoInstall": False, "palette": {"allowInstall": False}},
        "telemetry": {"enabled": False, "updateNotification": False},
        "diagnostics": {"enabled": False, "ui": False},
        "logging": {"console": {"level": "info", "metrics": False, "audit": False}},
        "functionExternalModules": False,
    }
    path = user_dir / "settings.js"
    path.write_text(f"module.exports = {json.dumps(settings, indent=2)};\n")
    return path


def _wait_until_ready(
    process: subprocess.Popen[bytes], base_url: str, log_path: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            log = _log_tail(log_path)
            if "EADDRINUSE" in log:
                raise _PortTakenError(f"port of {base_url} was taken:\n{log}")
            raise NodeRedError(f"Node-RED exited with {process.returncode}:\n{log}")
        try:
            with urllib.request.urlopen(f"{base_url}/flows", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise NodeRedError(
                f"Node-RED did not answer GET /flows within {timeout}s:\n{_log_tail(log_path)}"
            )
        time.sleep(0.1)  # polling interval, bounded by the deadline above


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.returncode is not None:
        return  # already reaped: its process group id may no longer be ours to signal
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + _STOP_TIMEOUT
    # Wait for the leader to exit without reaping it: while it is a zombie the group id stays
    # ours, so the SIGKILL below can only reach what Node-RED itself started.
    while time.monotonic() < deadline:
        if os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            break
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _log_tail(log_path: Path, size: int = 4000) -> str:
    try:
        return log_path.read_text(errors="replace")[-size:]
    except OSError:
        return ""


def secret_manager_node(volume: Path, **options: Any) -> dict[str, Any]:
    """The spacesecrets node as a flows file holds it, reading the volume at ``volume``."""
    return {
        **options,
        "id": "secret-manager",
        "type": "spacesecrets",
        "z": "tab1",
        "name": "",
        "path": str(volume),
        "autosync": "1m",
        "syncOnSave": True,
        "x": 120,
        "y": 40,
        "wires": [],
    }
