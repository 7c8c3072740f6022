"""The e2e tier's real node: kubelet + containerd + runc on the shared control plane, one per
session, where the machine allows it (`can_run_node()`); elsewhere its tests skip, saying why."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from spacesecrets.devtools.dev import LocalCluster
from spacesecrets.devtools.node import Node, can_run_node, find_node_binaries

# The kubelet resyncs pod volumes this often; the default 1m would make a Secret update test slow.
SYNC_FREQUENCY = "1s"


def _node_unavailable() -> str | None:
    return can_run_node()


def pytest_report_header(config: pytest.Config) -> list[str]:
    reason = _node_unavailable()
    return [f"node: {'not available: ' + reason if reason else 'kubelet + containerd + runc'}"]


@pytest.fixture(scope="session")
def node(cluster: LocalCluster) -> Iterator[Node]:
    reason = _node_unavailable()
    if reason:
        pytest.skip(f"no real node on this machine: {reason}")
    bin_dir = find_node_binaries()
    assert bin_dir is not None
    reason = can_run_node(bin_dir)
    if reason:
        pytest.skip(f"no real node on this machine: {reason}")
    n = Node(cluster.cp, bin_dir, sync_frequency=SYNC_FREQUENCY)
    with n.running():
        yield n
