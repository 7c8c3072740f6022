"""A local Kubernetes control plane: etcd, kube-apiserver and kube-controller-manager on loopback.

Edge module used by the tests, `spacesecrets dev` and `make demo`. It generates a fresh CA and
serving/client certificates, starts the three upstream binaries built by `hack/controlplane` on free
loopback ports (RBAC and the default admission plugins on, an audit log written), waits on
`/readyz`, and stops everything it started -- also when the parent dies (PR_SET_PDEATHSIG), so no
process or port outlives it. Clients authenticate with client certificates; `kubeconfig_for()` mints
one for any user name and groups, for RBAC tests.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import ipaddress
import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

START_ATTEMPTS = 3
CRD_DELAY = "There can be a delay between when CustomResourceDefinitions are created"
CRD_DELAY_SECONDS = 30.0
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl", "helm")
CONTROLLERS = (
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "clusterrole-aggregation-controller",
    # for a node (spacesecrets.devtools.node): kube-root-ca.crt in every namespace, which pods'
    # tokens mount, and the removal of the not-ready taint the API server puts on a new node
    "root-ca-cert-publisher",
    "node-lifecycle-controller",
    # Deployments on a node (the chart's operator, a flow): their ReplicaSets and pods
    "deployment-controller",
    "replicaset-controller",
)
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata"}],
}


class ControlPlaneError(RuntimeError):
    """The control plane could not be built or started."""


class KubectlError(subprocess.CalledProcessError):
    def __str__(self) -> str:
        return f"kubectl {' '.join(self.cmd[2:])} failed ({self.returncode}): {self.stderr}"


def find_binaries(repo: Path | None = None) -> Path:
    """The directory holding the control-plane binaries, building them when not cached.

    `SPACESECRETS_CONTROLPLANE_BIN` wins; otherwise `hack/controlplane/build.sh` of the checkout
    (which returns at once when the cache is warm).
    """
    env = os.environ.get("SPACESECRETS_CONTROLPLANE_BIN")
    if env:
        return Path(env)
    root = repo or _checkout_root()
    script = root / "hack" / "controlplane" / "build.sh"
    if not script.exists():
        raise ControlPlaneError(
            "set SPACESECRETS_CONTROLPLANE_BIN to a directory with etcd, kube-apiserver and "
            "kube-controller-manager, or run from a spacesecrets checkout"
        )
    out = subprocess.run(
        ["bash", str(script)], check=True, stdout=subprocess.PIPE, text=True
    ).stdout
    return Path(out.strip().splitlines()[-1])


def _checkout_root() -> Path:
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "hack" / "controlplane").is_dir():
            return parent
    return Path.cwd()


# Listen ports come from below Linux's ephemeral range (32768-60999): a port the kernel handed out
# would be free now, but the next outgoing connection of any process may take it before the
# server binds it.
_PORTS = range(20000, 32000)


def free_port() -> int:
    """A loopback port nothing listens on now, outside the ephemeral range."""
    for _ in range(100):
        port = random.choice(_PORTS)  # noqa: S311 -- not for security
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise ControlPlaneError("no free loopback port found")


# ---------------------------------------------------------------------------------------------
# Certificates
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _KeyPair:
    cert_pem: bytes
    key_pem: bytes = field(repr=False)


def _name(common_name: str, groups: Sequence[str] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    attrs += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
    return x509.Name(attrs)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class CertificateAuthority:
    """A throw-away CA that signs the serving and client certificates of one control plane."""

    def __init__(self) -> None:
        self._key = _new_key()
        now = dt.datetime.now(dt.UTC)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(_name("spacesecrets-local-ca"))
            .issuer_name(_name("spacesecrets-local-ca"))
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )

    @property
    def cert_pem(self) -> bytes:
        return self._cert.public_bytes(serialization.Encoding.PEM)

    def issue(
        self,
        common_name: str,
        groups: Sequence[str] = (),
        *,
        server_names: Sequence[str] = (),
        server_ips: Sequence[str] = (),
    ) -> _KeyPair:
        key = _new_key()
        now = dt.datetime.now(dt.UTC)
        usage = [x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name, groups))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )
        if server_names or server_ips:
            usage.append(x509.oid.ExtendedKeyUsageOID.SERVER_AUTH)
            sans: list[x509.GeneralName] = [x509.DNSName(n) for n in server_names]
            sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in server_ips]
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        return _KeyPair(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))


# ---------------------------------------------------------------------------------------------
# The control plane
# ---------------------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child: get SIGKILL when the launching process dies, however it dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    log_file: IO[bytes]


@dataclass
class ControlPlane:
    """A running local control plane. Use `start()` / `stop()` or `running()`."""

    bin_dir: Path
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="spacesecrets-cp-")))
    etcd_port: int = 0
    apiserver_port: int = 0
    _procs: dict[str, _Proc] = field(default_factory=dict)
    _ca: CertificateAuthority = field(default_factory=CertificateAuthority)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    @property
    def audit_log(self) -> Path:
        return self.workdir / "audit.log"

    @property
    def ca_file(self) -> Path:
        return self.workdir / "pki" / "ca.crt"

    def binary(self, name: str) -> str:
        return str(self.bin_dir / name)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> None:
        try:
            for attempt in range(START_ATTEMPTS):
                self.etcd_port, self.apiserver_port = free_port(), free_port()
                self._write_pki()
                try:
                    self.start_etcd()
                    self.start_apiserver()
                    self.wait_ready(timeout)
                    break
                except ControlPlaneError as exc:
                    # another process took a port between our check and the server's bind
                    if "address already in use" not in str(exc) or attempt + 1 == START_ATTEMPTS:
                        raise
                    for name in list(self._procs)[::-1]:
                        self.stop_process(name)
                    shutil.rmtree(self.workdir / "etcd", ignore_errors=True)
            self.start_controller_manager()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every process started and remove the working directory. Idempotent."""
        for name in list(self._procs)[::-1]:
            self.stop_process(name)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def stop_process(self, name: str, sig: int = signal.SIGTERM) -> None:
        proc = self._procs.pop(name, None)
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.popen.send_signal(sig)
        try:
            proc.popen.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.popen.kill()
            proc.popen.wait(timeout=20)
        proc.log_file.close()

    def restart(self, name: str) -> None:
        """Stop one component and start it again on the same ports and data (fault tests)."""
        self.stop_process(name)
        {
            "etcd": self.start_etcd,
            "kube-apiserver": self.start_apiserver,
            "kube-controller-manager": self.start_controller_manager,
        }[name]()
        if name == "kube-apiserver":
            self.wait_ready(120.0)

    @contextlib.contextmanager
    def running(self, timeout: float = 120.0) -> Iterator[ControlPlane]:
        self.start(timeout)
        try:
            yield self
        finally:
            self.stop()

    # -- components -----------------------------------------------------------------------------

    def _spawn(self, name: str, args: list[str]) -> None:
        log = self.workdir / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log_file = log.open("ab")
        popen = subprocess.Popen(
            [self.binary(name), *args],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 -- no threads are started before exec
            cwd=self.workdir,
        )
        self._procs[name] = _Proc(name, popen, log, log_file)

    def start_etcd(self) -> None:
        self.etcd_port = self.etcd_port or free_port()
        peer = free_port()
        self._spawn(
            "etcd",
            [
                "--name=local",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{self.etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{self.etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=local=http://127.0.0.1:{peer}",
                "--unsafe-no-fsync",
                "--log-level=warn",
                "--quota-backend-bytes=8589934592",
            ],
        )

    def start_apiserver(self) -> None:
        self.apiserver_port = self.apiserver_port or free_port()
        pki = self.workdir / "pki"
        self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.apiserver_port}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                # for logs, exec and port-forward through a node's kubelet (spacesecrets.devtools)
                f"--kubelet-client-certificate={pki / 'kubelet-client.crt'}",
                f"--kubelet-client-key={pki / 'kubelet-client.key'}",
                "--service-account-issuer=https://kubernetes.default.svc",
                "--authorization-mode=RBAC",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--endpoint-reconciler-type=none",
                "--profiling=false",
                f"--audit-policy-file={pki / 'audit-policy.yaml'}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-mode=batch",
                "--audit-log-batch-max-wait=1s",
                "--v=0",
            ],
        )

    def start_controller_manager(self) -> None:
        pki = self.workdir / "pki"
        kubeconfig = self.kubeconfig_for(
            "system:kube-controller-manager", name="controller-manager"
        )
        self._spawn(
            "kube-controller-manager",
            [
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--secure-port=0",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--controllers={','.join(CONTROLLERS)}",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                "--concurrent-gc-syncs=5",
                "--v=0",
            ],
        )

    # -- access ---------------------------------------------------------------------------------

    def _write_pki(self) -> None:
        pki = self.workdir / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        (pki / "ca.crt").write_bytes(self._ca.cert_pem)
        serving = self._ca.issue(
            "kube-apiserver",
            server_names=[
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            server_ips=["127.0.0.1", "10.0.0.1"],
        )
        (pki / "apiserver.crt").write_bytes(serving.cert_pem)
        (pki / "apiserver.key").write_bytes(serving.key_pem)
        kubelet_client = self._ca.issue("kube-apiserver-kubelet-client", ["system:masters"])
        (pki / "kubelet-client.crt").write_bytes(kubelet_client.cert_pem)
        (pki / "kubelet-client.key").write_bytes(kubelet_client.key_pem)
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (pki / "sa.key").write_bytes(_pem_key(sa_key))
        (pki / "sa.pub").write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        (pki / "audit-policy.yaml").write_text(yaml.safe_dump(AUDIT_POLICY))
        self.kubeconfig_for("admin", ["system:masters"], path=self.admin_kubeconfig)

    def kubeconfig_for(
        self,
        user: str,
        groups: Sequence[str] = (),
        *,
        name: str | None = None,
        path: Path | None = None,
    ) -> Path:
        """Write a client-certificate kubeconfig for `user` in `groups`; return its path."""
        pair = self._ca.issue(user, groups)
        slug = name or "".join(c if c.isalnum() else "-" for c in user)
        path = path or self.workdir / "users" / f"{slug}.kubeconfig"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self._kubeconfig(user, pair)))
        path.chmod(0o600)
        return path

    def token_kubeconfig(self, user: str, token: str) -> Path:
        """A kubeconfig authenticating with a bearer token (e.g. a ServiceAccount's)."""
        path = self.workdir / "users" / f"token-{''.join(c if c.isalnum() else '-' for c in user)}"
        path.parent.mkdir(parents=True, exist_ok=True)
        config = self._kubeconfig(user, None)
        config["users"][0]["user"] = {"token": token}
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def _kubeconfig(self, user: str, pair: _KeyPair | None) -> dict[str, Any]:
        import base64

        def b64(data: bytes) -> str:
            return base64.b64encode(data).decode()

        user_entry: dict[str, str] = {}
        if pair is not None:
            user_entry = {
                "client-certificate-data": b64(pair.cert_pem),
                "client-key-data": b64(pair.key_pem),
            }
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "local",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": b64(self._ca.cert_pem),
                    },
                }
            ],
            "users": [{"name": user, "user": user_entry}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
            "current-context": "local",
        }

    def _admin_ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        pki = self.workdir / "pki"
        if not (pki / "admin.crt").exists():
            pair = self._ca.issue("admin", ["system:masters"])
            (pki / "admin.crt").write_bytes(pair.cert_pem)
            (pki / "admin.key").write_bytes(pair.key_pem)
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        return ctx

    def get(self, path: str) -> Any:
        """GET a path as admin; JSON decoded when it is JSON."""
        with urllib.request.urlopen(  # noqa: S310 -- our own https loopback server
            self.server + path, context=self._admin_ssl(), timeout=10
        ) as resp:
            body = resp.read().decode()
        try:
            return json.loads(body)
        except json.JSONDecodeError:
            return body

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for name, proc in self._procs.items():
                if proc.popen.poll() is not None:
                    tail = proc.log.read_text(errors="replace")[-3000:]
                    raise ControlPlaneError(f"{name} exited with {proc.popen.returncode}:\n{tail}")
            try:
                if self.get("/readyz") == "ok":
                    return
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            time.sleep(0.2)
        raise ControlPlaneError(f"kube-apiserver not ready after {timeout:.0f}s: {last}")

    def version(self) -> str:
        return str(self.get("/version")["gitVersion"])

    def kubectl(
        self,
        *args: str,
        kubeconfig: Path | None = None,
        input: str | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl against this control plane. A write the API server refuses
        because a new kind is not served yet (503, seen on a loaded machine just after the
        CustomResourceDefinitions were installed, even after a dry run of the kind passed) is
        tried again for up to CRD_DELAY_SECONDS, as a GitOps tool would."""
        deadline = time.monotonic() + CRD_DELAY_SECONDS
        while True:
            result = subprocess.run(
                [
                    self.binary("kubectl"),
                    f"--kubeconfig={kubeconfig or self.admin_kubeconfig}",
                    *args,
                ],
                input=input,
                capture_output=True,
                text=True,
                check=False,
                timeout=120,
            )
            if CRD_DELAY not in result.stderr or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        if check and result.returncode != 0:
            raise KubectlError(result.returncode, result.args, result.stdout, result.stderr)
        return result

    def pids(self) -> dict[str, int]:
        return {name: p.popen.pid for name, p in self._procs.items()}
