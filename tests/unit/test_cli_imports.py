"""The owner's CLI stays light: `--help` and an offline `seal` load none of the operator's modules
(kopf, the engine, the HTTP client, the official Kubernetes client), checked in a fresh
interpreter."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

from spacesecrets.core import crypto

OPERATOR_MODULES = ("kopf", "kubernetes", "urllib3", "spacesecrets.engine", "spacesecrets.handlers")
PROBE = """
import json, sys
from click.testing import CliRunner
from spacesecrets.cli import main
args = json.loads(sys.argv[1])
result = CliRunner().invoke(main, args, input=sys.argv[2] if len(sys.argv) > 2 else None)
assert result.exit_code == 0, result.output
print(json.dumps(sorted(sys.modules)))
"""


def loaded(*args: str, stdin: str | None = None) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args), *([stdin] if stdin else [])],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    modules: list[str] = json.loads(out.splitlines()[-1])
    return [m for m in modules if any(m == p or m.startswith(f"{p}.") for p in OPERATOR_MODULES)]


def test_help_loads_no_operator_module() -> None:
    assert loaded("--help") == []


def test_an_offline_seal_loads_no_operator_module(tmp_path: Path) -> None:
    ring = crypto.KeyRing.create(dt.datetime.now(dt.UTC))
    pem = tmp_path / "key.pem"
    pem.write_text(ring.public_pems()[ring.current.kid])
    args = ("-n", "team-a", "seal", "--cert", str(pem), "--owner", "User:alice", "-")
    assert loaded(*args, stdin="API_HOST: api.example.com\n") == []
