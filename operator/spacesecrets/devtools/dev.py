"""A local spacesecrets installation: the control plane, the manifests and the operator process.

Edge. Used by `spacesecrets dev` (`make run`), `spacesecrets dev --demo` (`make demo`) and the test
fixtures, so the demo and the tests run exactly what a user runs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from spacesecrets.devtools.controlplane import ControlPlane, find_binaries, free_port
from spacesecrets.schema import crdgen, manifests

OPERATOR_NAMESPACE = "spacesecrets-system"
OPERATOR_SERVICE_ACCOUNT = "spacesecrets-operator"
OPERATOR_USER = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SERVICE_ACCOUNT}"


def public_keys_reader(namespace: str) -> list[dict[str, Any]]:
    """Every authenticated user may read the public keys, and list the shards' Leases (which
    shard serves a space), and nothing else there."""
    meta = {"name": "spacesecrets-public-keys-reader", "namespace": namespace}
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta,
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "verbs": ["get"],
                    "resourceNames": ["spacesecrets-public-keys"],
                },
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["list"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta,
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "spacesecrets-public-keys-reader",
            },
            "subjects": [
                {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Group",
                    "name": "system:authenticated",
                }
            ],
        },
    ]


def wait_for(
    what: str, check: Callable[[], Any], timeout: float = 60.0, interval: float = 0.2
) -> Any:
    """Poll `check` until it returns something truthy; raise TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:
            last_error = exc
        time.sleep(interval)
    raise TimeoutError(
        f"timed out after {timeout:.0f}s waiting for {what}"
        + (f" (last error: {last_error})" if last_error else "")
    )


@dataclass
class OperatorProcess:
    """The operator, as a real child process (`python -m spacesecrets operator`)."""

    popen: subprocess.Popen[bytes]
    log_path: Path
    metrics_port: int
    health_port: int
    _log: Any = field(repr=False, default=None)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait_ready(self, timeout: float = 60.0) -> None:
        def healthy() -> bool:
            if not self.alive():
                raise RuntimeError(f"the operator exited:\n{self.log_text()[-3000:]}")
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.health_port}/healthz", timeout=2
                ) as resp:
                    return bool(resp.status == 200)
            except (urllib.error.URLError, OSError):
                return False

        try:
            wait_for("the operator's /healthz", healthy, timeout)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; its log ends:\n{self.log_text()[-3000:]}") from None

    def metrics(self) -> str:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
        ) as resp:
            return str(resp.read().decode())

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        if self.alive():
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout)
        if self._log:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


@dataclass
class LocalCluster:
    """A control plane with spacesecrets' manifests installed."""

    cp: ControlPlane
    operators: list[OperatorProcess] = field(default_factory=list)

    @property
    def kubeconfig(self) -> Path:
        return self.cp.admin_kubeconfig

    def apply(
        self,
        docs: Sequence[Mapping[str, Any]] | str,
        *,
        kubeconfig: Path | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        text = docs if isinstance(docs, str) else yaml.safe_dump_all(list(docs))
        return self.cp.kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            "-",
            input=text,
            kubeconfig=kubeconfig,
            check=check,
        )

    def install(self) -> None:
        shipped = crdgen.all_crds()
        crds = [yaml.safe_load(t) for n, t in shipped.items() if n.startswith("spacesecrets.io_")]
        self.apply(crds)
        self.cp.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            *(f"crd/{c['metadata']['name']}" for c in crds),
        )
        rest = [
            d
            for n, t in shipped.items()
            if not n.startswith("spacesecrets.io_")
            for d in yaml.safe_load_all(t)
        ]
        self.apply(rest)
        self._wait_for_admission()
        self.cp.kubectl("create", "namespace", OPERATOR_NAMESPACE, check=False)
        self.apply(public_keys_reader(OPERATOR_NAMESPACE))
        self.apply(manifests.operator_identity(OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT))

    def _wait_for_admission(self) -> None:
        """The admission policies judge the new kinds only once the API server has resolved
        their schemas (until then a write is refused as 'not found'): wait for a dry run."""
        probe = {
            "apiVersion": "spacesecrets.io/v1alpha1",
            "kind": "SpaceSecrets",
            "metadata": {"name": "admission-probe", "namespace": "default"},
            "spec": {"owners": [{"kind": "User", "name": "probe"}], "data": {}},
        }
        text = yaml.safe_dump(probe)
        wait_for(
            "the admission policies to judge SpaceSecrets",
            lambda: (
                self.cp.kubectl(
                    "create", "--dry-run=server", "-f", "-", input=text, check=False
                ).returncode
                == 0
            ),
        )

    def operator_kubeconfig(self) -> Path:
        """A kubeconfig for the operator's ServiceAccount: exactly the chart's RBAC."""
        token = self.cp.kubectl(
            "create",
            "token",
            OPERATOR_SERVICE_ACCOUNT,
            "-n",
            OPERATOR_NAMESPACE,
            "--duration=24h",
        ).stdout.strip()
        return self.cp.token_kubeconfig(OPERATOR_USER, token)

    def start_operator(
        self,
        env: Mapping[str, str] | None = None,
        kubeconfig: Path | None = None,
        wait: bool = True,
    ) -> OperatorProcess:
        metrics_port, health_port = free_port(), free_port()
        log_path = self.cp.workdir / "logs" / f"operator-{len(self.operators)}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = log_path.open("ab")
        full_env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig or self.operator_kubeconfig()),
            "SPACESECRETS_NAMESPACE": OPERATOR_NAMESPACE,
            "SPACESECRETS_METRICS_PORT": str(metrics_port),
            "SPACESECRETS_HEALTH_PORT": str(health_port),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        popen = subprocess.Popen(
            [sys.executable, "-m", "spacesecrets", "operator"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
        )
        proc = OperatorProcess(popen, log_path, metrics_port, health_port, log)
        self.operators.append(proc)
        if wait:
            proc.wait_ready()
        return proc

    def stop(self) -> None:
        for proc in self.operators:
            proc.stop()
        self.operators.clear()
        self.cp.stop()


@contextlib.contextmanager
def local_cluster(bin_dir: Path | None = None) -> Iterator[LocalCluster]:
    cp = ControlPlane(bin_dir or find_binaries())
    cluster = LocalCluster(cp)
    try:
        cp.start()
        cluster.install()
        yield cluster
    finally:
        cluster.stop()


def run_dev() -> int:
    """`make run`: everything in the foreground until Ctrl-C."""
    with local_cluster() as cluster:
        op = cluster.start_operator()
        print(f"control plane {cluster.cp.version()} at {cluster.cp.server}")
        print(f"operator log: {op.log_path}")
        print(
            f"\n  export KUBECONFIG={cluster.kubeconfig}"
            f"\n  export PATH={cluster.cp.bin_dir}:$PATH   # kubectl and helm of the same version"
            "\n  kubectl get spacesecrets,flowsecretsyncs -A\n\nCtrl-C stops everything."
        )
        with contextlib.suppress(KeyboardInterrupt):
            while op.alive():
                time.sleep(1)
    return 0


def run_demo() -> int:
    """`make demo`: the operator end to end, printed as a user would see it, then torn down.
    Where the machine allows it, a real node runs a pod that mounts the flow's target Secret."""
    from spacesecrets.devtools.demo import demo
    from spacesecrets.devtools.node import Node, can_run_node, find_node_binaries

    why_not = can_run_node()
    node_bin = None if why_not else find_node_binaries()
    with (
        tempfile.TemporaryDirectory(prefix="spacesecrets-demo-") as tmp,
        local_cluster() as cluster,
    ):
        node = None
        if node_bin is not None:
            node = Node(cluster.cp, node_bin)  # the kubelet's default resync, 1m
            node.start()
            print(f"node {node.name} Ready in {node.timings['node start to Ready']:.1f} s")
        else:
            print(f"no real node ({why_not}): a kubelet-like writer fills the flow's volume")
        try:
            code = demo(cluster, Path(tmp), node)
        finally:
            if node is not None:
                node.stop()  # raises when anything of it stayed behind
        pids = [*cluster.cp.pids().values(), *(op.popen.pid for op in cluster.operators)]
        workdir = cluster.cp.workdir
    alive = [pid for pid in pids if _alive(pid)]
    if alive or workdir.exists():
        print(f"left behind: processes {alive}, directory exists: {workdir.exists()}")
        return 1
    print(f"clean: {len(pids)} processes stopped, {workdir} removed")
    return code


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
