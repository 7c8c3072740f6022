"""The `spacesecrets` command run as someone (their kubeconfig), as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def cli(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spacesecrets", *args],
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
