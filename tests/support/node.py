"""The local node's binaries for a fixture, or a skip that says why this machine cannot run it."""

from __future__ import annotations

from pathlib import Path

import pytest

from spacesecrets.devtools.node import can_run_node, find_node_binaries


def node_binaries_or_skip() -> Path:
    """The built node binaries; the test is skipped, with the reason, only where the machine
    cannot run a node (not root, no namespaces, no cgroups or overlayfs)."""
    reason = can_run_node()
    if reason:
        pytest.skip(f"no real node on this machine: {reason}")
    bin_dir = find_node_binaries()
    assert bin_dir is not None
    reason = can_run_node(bin_dir)
    if reason:
        pytest.skip(f"no real node on this machine: {reason}")
    return bin_dir
