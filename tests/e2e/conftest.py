"""The e2e tier's real node: kubelet + containerd + runc on the shared control plane, one per
session, where the machine allows it (`can_run_node()`); elsewhere its tests skip, saying why."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.support.node import node_binaries_or_skip

from spacesecrets.devtools.dev import LocalCluster
from spacesecrets.devtools.node import Node, can_run_node

# The kubelet's default resync (1m), as users run it: a target update reaches running pods at once
# through the operator's nudge (engine.pods), not through a short resync.
SYNC_FREQUENCY = "1m"


def pytest_report_header(config: pytest.Config) -> list[str]:
    reason = can_run_node()
    return [f"node: {'not available: ' + reason if reason else 'kubelet + containerd + runc'}"]


@pytest.fixture(scope="session")
def node(cluster: LocalCluster) -> Iterator[Node]:
    bin_dir = node_binaries_or_skip()
    n = Node(cluster.cp, bin_dir, sync_frequency=SYNC_FREQUENCY)
    with n.running():
        yield n
