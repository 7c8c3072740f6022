"""Shared fixtures. Importing this needs no cluster: the control plane starts only when a test asks
for `cluster` (integration and e2e tiers), from the binaries `hack/controlplane` builds."""

from __future__ import annotations

import os
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.env import FAST_ENV
from tests.support.logs import denials
from tests.support.space import Space

from spacesecrets.devtools.dev import LocalCluster, OperatorProcess, local_cluster
from spacesecrets.kube.client import Kube
from spacesecrets.kube.factory import kube_for


def _bin_dir() -> Path | None:
    env = os.environ.get("SPACESECRETS_CONTROLPLANE_BIN")
    return Path(env) if env else None


def pytest_report_header(config: pytest.Config) -> list[str]:
    bin_dir = _bin_dir()
    if bin_dir is None or not (bin_dir / "kube-apiserver").exists():
        return ["control plane: not built yet (SPACESECRETS_CONTROLPLANE_BIN unset)"]
    out = subprocess.run(
        [str(bin_dir / "kube-apiserver"), "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    etcd = subprocess.run(
        [str(bin_dir / "etcd"), "--version"], capture_output=True, text=True, check=False
    ).stdout.splitlines()
    return [
        f"control plane: kube-apiserver {out.split()[-1] if out else '?'}, "
        f"{etcd[0] if etcd else 'etcd ?'} ({bin_dir})"
    ]


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    with local_cluster(_bin_dir()) as c:
        yield c


@pytest.fixture(scope="session")
def operator(cluster: LocalCluster) -> Iterator[OperatorProcess]:
    """The shared operator, as its ServiceAccount with exactly the chart's least-privilege RBAC:
    every test it serves also proves the RBAC suffices; its teardown checks the log for 403s."""
    proc = cluster.start_operator(env=FAST_ENV)
    yield proc
    proc.stop()
    denied = denials(proc.log_text())
    assert denied == [], f"the operator was denied with its least-privilege RBAC: {denied[:5]}"


@pytest.fixture
def fresh_cluster() -> Iterator[Callable[[], LocalCluster]]:
    """A factory of extra, private control planes (fault and schedule tests)."""
    started: list[Any] = []

    def make() -> LocalCluster:
        ctx = local_cluster(_bin_dir())
        started.append(ctx)
        return ctx.__enter__()

    yield make
    for ctx in reversed(started):
        ctx.__exit__(None, None, None)


@pytest.fixture(scope="session")
def kube(cluster: LocalCluster) -> Kube:
    return kube_for(str(cluster.kubeconfig))


@pytest.fixture
def ns(cluster: LocalCluster) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    cluster.cp.kubectl("create", "namespace", name)
    yield name
    cluster.cp.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def space(cluster: LocalCluster, kube: Kube, operator: OperatorProcess, ns: str) -> Space:
    return Space(cluster, kube, ns)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On failure, attach the tail of the operator's log: the first thing anyone looks at."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.failed and call.when == "call":
        funcargs = getattr(item, "funcargs", {})
        proc = funcargs.get("operator") or (
            funcargs["space"].cluster.operators[0] if "space" in funcargs else None
        )
        if proc is None:
            proc = funcargs.get("installed")  # the chart's pods on the node (e2e)
        if proc is not None:
            report.sections.append(("operator log (tail)", proc.log_text()[-20000:]))


_WORKDIRS_AT_START: set[str] = set()


def pytest_sessionstart(session: pytest.Session) -> None:
    _WORKDIRS_AT_START.update(str(p) for p in Path(tempfile.gettempdir()).glob("spacesecrets-*"))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Everything a test started is stopped: no child process, no control-plane directory."""
    children = subprocess.run(
        ["ps", "-o", "pid=,comm=", "--ppid", str(os.getpid())],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split("\n")
    left = [c.strip() for c in children if c.strip() and not c.strip().endswith(" ps")]
    dirs = sorted(
        str(p)
        for p in Path(tempfile.gettempdir()).glob("spacesecrets-*")
        if str(p) not in _WORKDIRS_AT_START
    )
    if left or dirs:
        print(f"\nleft behind by the tests: processes {left}, directories {dirs}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
