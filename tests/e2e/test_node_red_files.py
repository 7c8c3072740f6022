"""A real Node-RED with the spacesecrets node serves secrets from a kubelet-style volume.

No cluster: the volume is written by the kubelet-like writer, the way kubelet updates a mounted
Secret. Node-RED is the real one from ``clients/node-red``'s devDependencies.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.nodered import deploy_flows, run_node_red, secret_manager_node

from spacesecrets.devtools.dev import wait_for
from spacesecrets.devtools.kubelet import write_projection

# Each wait: the node's 1 s tick (or a deploy), with room for a slow host.
TIMEOUT = 30.0


def documents(version: int, value: str) -> dict[str, bytes]:
    at = "2026-11-29T12:00:00Z"
    return {
        "SECRETS": json.dumps({"A_KEY": value, "A_CONFIG": {"retries": version}}).encode(),
        "SECRETS_METADATA": json.dumps(
            {
                "space": "team-a",
                "version": version,
                "createdAt": at,
                "updatedAt": at,
                "issuedAt": at,
                "autosync": "1m",
                "syncOnSave": True,
                "keys": {
                    "A_KEY": {"format": "text", "version": version, "updatedAt": at},
                    "A_CONFIG": {"format": "json", "version": 1, "updatedAt": at},
                },
            }
        ).encode(),
    }


def flows_for(volume: Path) -> list[dict[str, Any]]:
    function_defaults = {
        "outputs": 1,
        "timeout": 0,
        "noerr": 0,
        "initialize": "",
        "finalize": "",
        "libs": [],
    }
    return [
        {"id": "tab1", "type": "tab", "label": "secrets", "disabled": False, "info": ""},
        secret_manager_node(volume),
        # GET /secret -> the value of A_KEY from global SECRETS
        {
            "id": "get-secret",
            "type": "http in",
            "z": "tab1",
            "url": "/secret",
            "method": "get",
            "upload": False,
            "swaggerDoc": "",
            "x": 120,
            "y": 100,
            "wires": [["read-secret"]],
        },
        {
            "id": "read-secret",
            "type": "function",
            "z": "tab1",
            "name": "",
            "func": 'msg.payload = global.get("SECRETS")["A_KEY"]; return msg;',
            **function_defaults,
            "x": 300,
            "y": 100,
            "wires": [["respond-secret"]],
        },
        {
            "id": "respond-secret",
            "type": "http response",
            "z": "tab1",
            "statusCode": "",
            "headers": {},
            "x": 480,
            "y": 100,
            "wires": [],
        },
        # The secret manager's status text, kept in global context and served on GET /status
        {
            "id": "watch-status",
            "type": "status",
            "z": "tab1",
            "scope": ["secret-manager"],
            "x": 120,
            "y": 160,
            "wires": [["keep-status"]],
        },
        {
            "id": "keep-status",
            "type": "function",
            "z": "tab1",
            "name": "",
            "func": 'global.set("STATUS_TEXT", msg.status.text); return null;',
            **function_defaults,
            "x": 300,
            "y": 160,
            "wires": [[]],
        },
        {
            "id": "get-status",
            "type": "http in",
            "z": "tab1",
            "url": "/status",
            "method": "get",
            "upload": False,
            "swaggerDoc": "",
            "x": 120,
            "y": 220,
            "wires": [["read-status"]],
        },
        {
            "id": "read-status",
            "type": "function",
            "z": "tab1",
            "name": "",
            "func": 'msg.payload = global.get("STATUS_TEXT") || ""; return msg;',
            **function_defaults,
            "x": 300,
            "y": 220,
            "wires": [["respond-status"]],
        },
        {
            "id": "respond-status",
            "type": "http response",
            "z": "tab1",
            "statusCode": "",
            "headers": {},
            "x": 480,
            "y": 220,
            "wires": [],
        },
    ]


def http_get(url: str) -> str | None:
    """The body of a 200 answer, or None (not served yet, no SECRETS yet, ...)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            body: bytes = response.read()
            return body.decode() if response.status == 200 else None
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def test_node_red_serves_mounted_secrets_and_follows_swaps(tmp_path: Path) -> None:
    volume = tmp_path / "etc-spacesecrets"
    write_projection(volume, documents(1, "first-value"))
    flows = flows_for(volume)

    with run_node_red(
        tmp_path / "node-red", flows, {"SPACESECRETS_AUTOSYNC_SECONDS": "1"}
    ) as base_url:
        secret_url = f"{base_url}/secret"
        status_url = f"{base_url}/status"

        assert wait_for("version 1", lambda: http_get(secret_url) == "first-value", TIMEOUT)

        # kubelet swaps in version 2; the next autosync tick (1 s override) picks it up.
        write_projection(volume, documents(2, "second-value"))
        wait_for("version 2", lambda: http_get(secret_url) == "second-value", TIMEOUT)
        wait_for("status v2", lambda: http_get(status_url) == "🆗 Synced v2", TIMEOUT)

        # A corrupt SECRETS: the node reports it, the flow keeps answering the last good value.
        corrupt = documents(3, "third-value")
        corrupt["SECRETS"] = corrupt["SECRETS"][:12]
        write_projection(volume, corrupt)

        def corrupt_reported() -> str | None:
            text = http_get(status_url)
            reported = text is not None and text.startswith("SECRETS is not valid JSON")
            return text if reported else None

        status = wait_for("the corrupt SECRETS reported", corrupt_reported, TIMEOUT)
        assert "third" not in status
        assert http_get(secret_url) == "second-value"

        # A good version again, and a full deploy (a "save"): back to green.
        write_projection(volume, documents(4, "fourth-value"))
        assert deploy_flows(base_url, flows)
        wait_for("version 4", lambda: http_get(secret_url) == "fourth-value", TIMEOUT)
