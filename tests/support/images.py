"""The images `make image` and `make nodered-image` write, for tests that run them on the node."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def build_image(which: str) -> Path:
    """The OCI archive of `operator` or `nodered` (built by hack/image/build.sh, cached by its
    inputs: seconds when nothing changed); skips the test when it cannot be built here."""
    done = subprocess.run(
        ["bash", str(ROOT / "hack/image/build.sh"), which],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    if done.returncode != 0:
        pytest.skip(
            f"hack/image/build.sh {which} failed (root, mmdebstrap, network):\n"
            f"{done.stderr[-2000:]}"
        )
    return Path(done.stdout.strip().splitlines()[-1])
