"""Shared fixtures. Importing this needs no cluster: the control plane starts only when a test asks
for `cluster` (integration and e2e tiers), from the binaries `hack/controlplane` builds."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from spacesecrets.core import crypto
from spacesecrets.devtools.dev import (
    OPERATOR_NAMESPACE,
    OPERATOR_USER,
    LocalCluster,
    OperatorProcess,
    local_cluster,
    wait_for,
)
from spacesecrets.kube.client import Kube
from spacesecrets.kube.factory import kube_for


def sample(text: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    """The value of one sample in Prometheus text format (None when absent)."""
    want = labels or {}
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        match = re.match(r"^([a-zA-Z_:][\w:]*)(\{(.*)\})?\s+(\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(3) or ""))
        if all(found.get(k) == v for k, v in want.items()):
            return float(match.group(4))
    return None


def reconciles(metrics: str, kind: str) -> float:
    """How many reconciles of `kind` (SpaceSecrets, FlowSecretSync) an operator's /metrics
    text counts."""
    return sample(metrics, "spacesecrets_reconcile_duration_seconds_count", {"kind": kind}) or 0.0


WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")


def audit_mark(cluster: LocalCluster, namespace: str = "default") -> int:
    """The size of the audit log once every request made so far is in it. The batch backend
    flushes within a second: a marker request is made, and the log read until it shows."""
    audit = cluster.cp.audit_log
    marker = f"marker-{time.time_ns()}"
    cluster.cp.kubectl("get", "configmap", marker, "-n", namespace, check=False)
    wait_for("the audit log to flush", lambda: marker in audit.read_text(), timeout=20)
    return audit.stat().st_size


def audit_writes(audit_log: Path, start: int, namespace: str | None = None) -> list[dict[str, Any]]:
    """Writes by the operator's user (Events included) logged from offset `start` on: those
    touching one space (its namespace, or its history) or, with no namespace, all of them.

    Other tests' namespaces are being deleted meanwhile; their clean-up is not this test's."""
    writes = []
    with audit_log.open("rb") as fh:
        fh.seek(start)
        text = fh.read().decode(errors="replace")
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except ValueError:  # a line being written as we read
            continue
        ref = event.get("objectRef") or {}
        ours = namespace is None or (
            ref.get("namespace") == namespace
            or (
                ref.get("namespace") == OPERATOR_NAMESPACE
                and ref.get("name") in (None, f"history-{namespace}")
            )
        )
        if event["user"]["username"] == OPERATOR_USER and event["verb"] in WRITE_VERBS and ours:
            writes.append(event)
    return writes


def described(writes: list[dict[str, Any]]) -> list[tuple[str, str, str, int]]:
    """What an assertion shows of each write: verb, resource, name, response code."""
    return [
        (
            w["verb"],
            (w.get("objectRef") or {}).get("resource", "")
            + ("/" + w["objectRef"]["subresource"] if w["objectRef"].get("subresource") else ""),
            f"{w['objectRef'].get('namespace')}/{w['objectRef'].get('name')}",
            int((w.get("responseStatus") or {}).get("code", 0)),
        )
        for w in writes
    ]


# One autosync "minute" is 3 s for the shared operator; the real 1m schedule has its own test.
FAST_ENV = {"SPACESECRETS_AUTOSYNC_SCALE": "0.05", "SPACESECRETS_ALLOW_CONFIGMAP_TARGETS": "true"}


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


_DENIED = re.compile(r"forbidden|\b403\b", re.IGNORECASE)


def denials(log: str) -> list[str]:
    """The log lines where the API server refused the operator: a whole-word 403 or "forbidden",
    not a 403 inside a random name such as t-403d1fa3."""
    return [line for line in log.splitlines() if _DENIED.search(line)]


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


def public_key(cluster: LocalCluster) -> Any:
    pem = wait_for(
        "the published public key",
        lambda: (
            cluster.cp.kubectl(
                "get",
                "configmap",
                "-n",
                OPERATOR_NAMESPACE,
                "spacesecrets-public-keys",
                "-o",
                "jsonpath={.data.current\\.pem}",
                check=False,
            ).stdout
        ),
    )
    return crypto.load_public_key_pem(pem)


class Space:
    """Helpers to build, apply and observe one space in one namespace, as an owner would."""

    def __init__(
        self,
        cluster: LocalCluster,
        kube: Kube,
        namespace: str,
        owners: list[dict[str, str]] | None = None,
    ) -> None:
        self.cluster, self.kube, self.ns = cluster, kube, namespace
        self.owners = owners or [{"kind": "User", "name": "alice@example.com"}]
        self.name = "secrets"

    @property
    def pub(self) -> Any:
        return public_key(self.cluster)

    def sealed(
        self, key: str, value: str | bytes, fmt: str = "text", namespace: str | None = None
    ) -> dict[str, str]:
        data = value.encode() if isinstance(value, str) else value
        return {
            "format": fmt,
            "sealed": crypto.seal(self.pub, namespace or self.ns, key, fmt, data),
        }

    def manifest(self, values: dict[str, Any], name: str | None = None) -> dict[str, Any]:
        data = {}
        for key, value in values.items():
            if isinstance(value, dict) and "sealed" in value:
                data[key] = value
            elif isinstance(value, str):
                data[key] = self.sealed(key, value)
            else:
                data[key] = self.sealed(key, json.dumps(value), "json")
        return {
            "apiVersion": "spacesecrets.io/v1alpha1",
            "kind": "SpaceSecrets",
            "metadata": {"name": name or self.name, "namespace": self.ns},
            "spec": {"owners": self.owners, "data": data},
        }

    def apply(
        self, values: dict[str, Any], name: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self.kubectl_apply(self.manifest(values, name), check=check)

    def kubectl_apply(
        self, doc: dict[str, Any], check: bool = True, kubeconfig: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self.cluster.cp.kubectl(
            "apply", "-f", "-", input=yaml.safe_dump(doc), check=check, kubeconfig=kubeconfig
        )

    def get(self, name: str | None = None) -> dict[str, Any]:
        return self.kube.get_custom("spacesecrets", self.ns, name or self.name)

    def condition(
        self, type_: str = "Ready", name: str | None = None, plural: str = "spacesecrets"
    ) -> dict[str, Any]:
        obj = self.kube.get_custom(plural, self.ns, name or self.name)
        for cond in (obj.get("status") or {}).get("conditions") or []:
            if cond["type"] == type_:
                return dict(cond)
        return {}

    def wait_version(self, version: int, timeout: float = 30) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            obj = self.get()
            status = obj.get("status") or {}
            ok = (
                status.get("version") == version
                and status.get("observedGeneration") == obj["metadata"]["generation"]
            )
            return obj if ok else None

        return dict(wait_for(f"{self.ns} at version {version}", reached, timeout))

    def wait_condition(
        self,
        type_: str,
        status: str,
        reason: str | None = None,
        name: str | None = None,
        plural: str = "spacesecrets",
        timeout: float = 30,
    ) -> dict[str, Any]:
        def matches() -> dict[str, Any] | None:
            cond = self.condition(type_, name, plural)
            ok = cond.get("status") == status and (reason is None or cond.get("reason") == reason)
            return cond if ok else None

        return dict(
            wait_for(
                f"{plural} {name or self.name} {type_}={status} {reason or ''}", matches, timeout
            )
        )

    def flow(self, name: str, target: str, **spec: Any) -> dict[str, Any]:
        doc = {
            "apiVersion": "spacesecrets.io/v1alpha1",
            "kind": "FlowSecretSync",
            "metadata": {"name": name, "namespace": self.ns},
            "spec": {"target": {"name": target}, **spec},
        }
        return doc

    def target_documents(self, name: str, kind: str = "Secret") -> dict[str, Any]:
        from spacesecrets.core.projection import decoded_documents

        obj = self.kube.get(kind, self.ns, name)
        return {k: json.loads(v) for k, v in decoded_documents(obj).items()}

    def events(self, reason: str | None = None) -> list[dict[str, Any]]:
        out = self.cluster.cp.kubectl("get", "events", "-n", self.ns, "-o", "json").stdout
        items = json.loads(out)["items"]
        return [e for e in items if reason is None or e["reason"] == reason]


@pytest.fixture
def space(cluster: LocalCluster, kube: Kube, operator: OperatorProcess, ns: str) -> Space:
    return Space(cluster, kube, ns)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On failure, attach the tail of the operator's log: the first thing anyone looks at."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.failed and call.when == "call":
        proc = getattr(item, "funcargs", {}).get("operator") or (
            item.funcargs.get("space").cluster.operators[0]
            if "space" in getattr(item, "funcargs", {})
            else None
        )
        if proc is not None:
            report.sections.append(("operator log (tail)", proc.log_text()[-6000:]))


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
