"""A real node for the local control plane: containerd, runc and kubelet (plus kube-scheduler).

`Node(cp).start()` adds node `127.0.0.1` to a running `ControlPlane`; `stop()` removes every trace.

Isolation. One holder process (`unshare --fork --pid --kill-child --net --mount --mount-proc`, our
static pause binary as its init) owns a new PID, network and mount namespace, with only `lo` up.
containerd and the kubelet are entered into it with `nsenter`, so the shims and every container
live in its PID namespace: when the holder ends -- by `stop()`, or because the launching process
died (PR_SET_PDEATHSIG on the holder, `--kill-child` on its init) -- the kernel kills all of them,
and their mounts and the network namespace go with them. Inside, `/run` and `/var/log` are private
directories under the node's workdir, and the sysctls kubelet insists on (`protectKernelDefaults`)
are files bind-mounted over `/proc/sys/...`, so the host's sysctls are never written.

Network. The control plane stays on the host's loopback; two forwarders join the worlds, both
threads of this process that create their sockets in the right namespace (`setns` per thread):
the API server's port on 127.0.0.1 inside the namespace (and 10.0.0.1:443, the `kubernetes`
Service's address, for in-cluster clients), and the kubelet's port on the host's 127.0.0.1 for
the API server's logs, exec and port-forward. Pods get addresses of their own (POD_SUBNET, a
`bridge` CNI network inside the namespace), from which SERVICE_IP:443 is local; `hostNetwork`
pods share the namespace's `lo`. No traffic leaves loopback or the namespace.

cgroups. The kubelet (cgroupfs driver, cgroup v1 or v2) puts its pods under a cgroup root of its
own, `/spacesecrets-node-<id>`, created before and removed after, in every mounted hierarchy.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from spacesecrets.devtools import oci
from spacesecrets.devtools.controlplane import ControlPlane, ControlPlaneError, free_port
from spacesecrets.devtools.dev import wait_for

NODE_NAME = "127.0.0.1"
NODE_BINARIES = ("kubelet", "kube-scheduler", "containerd", "containerd-shim-runc-v2", "ctr",
                 "pause", "busybox")  # fmt: skip
CNI_BIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
CGROUP_PREFIX = "spacesecrets-node-"
SERVICE_IP = "10.0.0.1"  # the `kubernetes` Service's ClusterIP for the control plane's range
POD_SUBNET = "10.88.0.0/16"  # pods' addresses, on a bridge inside the node's network namespace
# What kubelet's protectKernelDefaults expects to read (pkg/kubelet/cm/container_manager_linux.go).
KERNEL_DEFAULTS = {
    "vm/overcommit_memory": "1",
    "vm/panic_on_oom": "0",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000",
    "kernel/keys/root_maxbytes": "25000000",
}
_CLONE_NEWNET = 0x40000000


class NodeError(RuntimeError):
    """The node could not be built, started or cleaned up."""


# ---------------------------------------------------------------------------------------------
# Binaries and host checks
# ---------------------------------------------------------------------------------------------


def _checkout_root() -> Path | None:
    for parent in Path(__file__).resolve().parents:
        if (parent / "hack" / "node" / "build.sh").is_file():
            return parent
    return None


def find_node_binaries(build: bool = True) -> Path | None:
    """The directory with kubelet, containerd & co.: `SPACESECRETS_NODE_BIN`, else what
    `hack/node/build.sh` prints (building when `build` and the cache is cold), else None."""
    env = os.environ.get("SPACESECRETS_NODE_BIN")
    if env:
        return Path(env)
    root = _checkout_root()
    if root is None:
        return None
    script = root / "hack" / "node" / "build.sh"
    if not build:
        return None
    out = subprocess.run(["bash", str(script)], check=True, stdout=subprocess.PIPE, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


def runc_binary() -> str | None:
    return shutil.which("runc") or next(
        (p for p in ("/usr/sbin/runc", "/usr/bin/runc") if os.access(p, os.X_OK)), None
    )


def cni_bin_dir() -> str | None:
    return next((d for d in CNI_BIN_DIRS if os.access(f"{d}/loopback", os.X_OK)), None)


def _cgroup_hierarchies() -> list[Path]:
    """The cgroup directories a cgroup root has to be made in: each v1 hierarchy (the named and
    the hybrid unified one included), or the single v2 tree."""
    base = Path("/sys/fs/cgroup")
    if (base / "cgroup.controllers").exists():
        return [base]
    return sorted(
        p for p in base.iterdir() if p.is_dir() and not p.is_symlink() and os.path.ismount(p)
    )


def _host_problem() -> str | None:
    """Why this host cannot run a node at all (root, namespaces, cgroups, overlayfs)."""
    if os.uname().sysname != "Linux":
        return "the node needs Linux"
    if os.geteuid() != 0:
        return "the node needs root (namespaces, mounts, cgroups)"
    missing = [t for t in ("unshare", "nsenter", "mount", "ip") if shutil.which(t) is None]
    if missing:
        return f"`{missing[0]}` is not installed (util-linux, iproute2)"
    try:
        filesystems = Path("/proc/filesystems").read_text()
    except OSError:
        filesystems = ""
    if "overlay" not in filesystems.split():
        return "the kernel has no overlayfs (containerd's snapshotter)"
    return _cgroup_problem() or _namespace_problem()


def _cgroup_problem() -> str | None:
    try:
        hierarchies = _cgroup_hierarchies()
    except OSError:
        hierarchies = []
    names = {h.name for h in hierarchies}
    v2 = hierarchies == [Path("/sys/fs/cgroup")]
    if not v2 and not {"memory", "cpu", "pids"} <= names | {n for h in names for n in h.split(",")}:
        return "no cgroup v1 memory/cpu/pids hierarchies and no cgroup v2 at /sys/fs/cgroup"
    return None


def _namespace_problem() -> str | None:
    probe = subprocess.run(
        ["unshare", "--fork", "--pid", "--net", "--mount", "--propagation", "private", "true"],
        capture_output=True,
        text=True,
        check=False,
    )
    return f"cannot create namespaces: {probe.stderr.strip()}" if probe.returncode else None


def can_run_node(bin_dir: Path | None = None, *, packages: bool = True) -> str | None:
    """None when this machine can run the node; otherwise why not, in one sentence.

    `packages=False` asks only about the host (root, namespaces, cgroups, overlayfs), not about
    what `make kubenode` installs (runc, the CNI plugins) or builds (`bin_dir`)."""
    problem = _host_problem()
    if problem or not packages:
        return problem
    if runc_binary() is None:
        return "runc is not installed (make kubenode installs Debian's)"
    if cni_bin_dir() is None:
        return "the CNI plugins are not installed (make kubenode installs Debian's)"
    missing = [b for b in NODE_BINARIES if bin_dir is not None and not (bin_dir / b).exists()]
    if missing:
        return f"node binaries missing in {bin_dir}: {', '.join(missing)} (make kubenode)"
    return None


# ---------------------------------------------------------------------------------------------
# Namespaces and forwarding
# ---------------------------------------------------------------------------------------------

_libc = ctypes.CDLL("libc.so.6", use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _die_with_parent() -> None:
    _libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Forwarder:
    """TCP forwarding between the host's network namespace and another one, in threads.

    Each listener gets a thread that creates the listening socket in one namespace and then
    switches itself (setns is per thread) to the other, where it connects for each accepted
    connection; two more threads pump the bytes.
    """

    def __init__(self, netns: Path) -> None:
        self._host = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        self._other = os.open(netns, os.O_RDONLY)
        self._listeners: list[socket.socket] = []
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False

    def add(self, listen: tuple[str, int], target: tuple[str, int], *, inside: bool) -> None:
        """Listen on `listen` (inside the other namespace when `inside`, else on the host) and
        forward to `target` in the opposite one."""
        ready: list[BaseException | socket.socket] = []
        event = threading.Event()
        first, second = (self._other, self._host) if inside else (self._host, self._other)

        def run() -> None:
            try:
                _setns(first)
                sock = socket.create_server(listen, backlog=64)
                _setns(second)
                with self._lock:
                    self._listeners.append(sock)
                ready.append(sock)
            except BaseException as exc:
                ready.append(exc)
                return
            finally:
                event.set()
            self._accept(sock, target)

        threading.Thread(target=run, name=f"fwd-{listen[1]}", daemon=True).start()
        event.wait(10)
        if not ready or isinstance(ready[0], BaseException):
            raise NodeError(f"cannot listen on {listen} for forwarding: {ready[:1]}")

    def _accept(self, sock: socket.socket, target: tuple[str, int]) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            try:
                out = socket.create_connection(target, timeout=5)
                out.settimeout(None)
            except OSError:
                conn.close()
                continue
            with self._lock:
                if self._closed:
                    conn.close()
                    out.close()
                    return
                self._conns.update((conn, out))
            threading.Thread(target=self._serve, args=(conn, out), daemon=True).start()

    def _serve(self, a: socket.socket, b: socket.socket) -> None:
        back = threading.Thread(target=self._pump, args=(b, a), daemon=True)
        back.start()
        self._pump(a, b)
        back.join()
        with self._lock:
            self._conns.difference_update((a, b))
        a.close()
        b.close()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            socks = [*self._listeners, *self._conns]
            self._listeners.clear()
            self._conns.clear()
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        for fd in (self._host, self._other):
            with contextlib.suppress(OSError):
                os.close(fd)


# ---------------------------------------------------------------------------------------------
# The node
# ---------------------------------------------------------------------------------------------


@dataclass
class _Daemon:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    log_file: IO[bytes]
    inside: bool


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _ns_inode(pid: int, kind: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/{kind}").st_ino
    except OSError:
        return None


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _wait(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.2) -> Any:
    """`dev.wait_for`, failing as a NodeError."""
    try:
        return wait_for(what, check, timeout, interval)
    except TimeoutError as exc:
        raise NodeError(str(exc)) from None


@dataclass
class Node:
    """Node `127.0.0.1` of a running local control plane. `start()` / `stop()` or `running()`.

    Pods reach it through the kube-scheduler started with it (or `spec.nodeName: 127.0.0.1`).
    Images come from `import_image()` (OCI archives, `imagePullPolicy: Never`): there is no
    registry; `registry.k8s.io/pause:3.10` and `oci.BUSYBOX_IMAGE` are imported at start.
    """

    cp: ControlPlane
    bin_dir: Path
    sync_frequency: str = "1m"  # kubelet's resync: how soon a changed Secret reaches its volumes
    scheduler: bool = True
    workdir: Path = field(default=Path())
    kubelet_port: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    _id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    _holder: subprocess.Popen[bytes] | None = None
    _init_pid: int = 0
    _ns: dict[str, int] = field(default_factory=dict)
    _daemons: dict[str, _Daemon] = field(default_factory=dict)
    _forwarder: Forwarder | None = None
    _stopped: bool = False
    _holder_log: IO[bytes] | None = None

    def __post_init__(self) -> None:
        if self.workdir == Path():
            self.workdir = self.cp.workdir / "node"

    @property
    def name(self) -> str:
        return NODE_NAME

    @property
    def cgroup_root(self) -> str:
        return f"/{CGROUP_PREFIX}{self._id}"

    @property
    def run_dir(self) -> Path:
        return self.workdir / "run"

    @property
    def containerd_socket(self) -> Path:
        """containerd's socket, reachable from the host too (the private /run's backing dir)."""
        return self.run_dir / "containerd" / "containerd.sock"

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> None:
        reason = can_run_node(self.bin_dir)
        if reason:
            raise NodeError(reason)
        begin = time.monotonic()
        atexit.register(self.stop)
        try:
            remove_stale_cgroups()
            self.workdir.mkdir(parents=True, exist_ok=True)
            self._start_holder()
            self._start_forwarding()
            self._start_containerd(timeout)
            self.import_image(
                oci.pause_image(self.workdir / "images" / "pause.tar", self.bin_dir / "pause")
            )
            self.import_image(
                oci.busybox_image(self.workdir / "images" / "busybox.tar", self.bin_dir / "busybox")
            )
            self.timings["containerd ready"] = time.monotonic() - begin
            self._authorize()
            kubelet_start = time.monotonic()
            self._start_kubelet()
            if self.scheduler:
                self._start_scheduler()
            self.wait_ready(timeout)
            self.timings["kubelet start to node Ready"] = time.monotonic() - kubelet_start
            self.timings["node start to Ready"] = time.monotonic() - begin
        except BaseException:
            self.stop()
            raise

    @contextlib.contextmanager
    def running(self, timeout: float = 120.0) -> Iterator[Node]:
        self.start(timeout)
        try:
            yield self
        finally:
            self.stop()

    def _start_holder(self) -> None:
        for d in ("run", "log", "sysctl", "kubelet", "containerd", "cni", "logs", "images",
                  "volume-plugins", "opt"):  # fmt: skip
            (self.workdir / d).mkdir(parents=True, exist_ok=True)
        self._holder_log = (self.workdir / "logs" / "holder.log").open("ab")
        self._holder = subprocess.Popen(
            [
                "unshare",
                "--fork",
                "--pid",
                "--kill-child",
                "--net",
                "--mount",
                "--propagation",
                "private",
                "--mount-proc",
                str(self.bin_dir / "pause"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._holder_log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 -- no threads are started before exec
        )
        holder = self._holder
        own_pid_ns = _ns_inode(os.getpid(), "pid")

        def init_pid() -> int | None:
            if holder.poll() is not None:
                raise NodeError(f"the namespace holder exited with {holder.returncode}")
            kids = _children(holder.pid)
            # past --mount-proc: the init runs the pause binary in its own PID namespace
            if kids and _ns_inode(kids[0], "pid") not in (None, own_pid_ns):
                return kids[0] if _comm(kids[0]) == "pause" else None
            return None

        self._init_pid = _wait("the node's namespaces", init_pid, 10, 0.02)
        self._ns = {k: ino for k in ("net", "mnt", "pid") if (ino := _ns_inode(self._init_pid, k))}
        sysctl = self.workdir / "sysctl"
        binds = []
        for key, value in KERNEL_DEFAULTS.items():
            (sysctl / key.replace("/", ".")).write_text(value + "\n")
            binds.append(f"mount --bind {sysctl / key.replace('/', '.')} /proc/sys/{key}")
        script = "\n".join(
            [
                "set -eu",
                "ip link set lo up",
                f"ip addr add {SERVICE_IP}/32 dev lo",
                f"mount --bind {self.workdir / 'run'} /run",
                f"mount --bind {self.workdir / 'log'} /var/log",
                *binds,
            ]
        )
        self._nsenter_run(["sh", "-c", script])

    def _nsenter(self, *, pid: bool = False) -> list[str]:
        args = ["nsenter", "-t", str(self._init_pid), "--net", "--mount"]
        return [*args, "--pid"] if pid else args

    def _nsenter_run(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*self._nsenter(), *argv], capture_output=True, text=True, check=False, timeout=60
        )
        if result.returncode != 0:
            raise NodeError(f"{' '.join(argv)} in the node's namespace failed: {result.stderr}")
        return result

    def _start_forwarding(self) -> None:
        self._forwarder = Forwarder(Path(f"/proc/{self._init_pid}/ns/net"))
        api = ("127.0.0.1", self.cp.apiserver_port)
        self._forwarder.add(api, api, inside=True)
        self._forwarder.add((SERVICE_IP, 443), api, inside=True)
        self.kubelet_port = free_port()
        kubelet = ("127.0.0.1", self.kubelet_port)
        self._forwarder.add(kubelet, kubelet, inside=False)

    def _spawn(
        self, name: str, argv: Sequence[str], *, inside: bool, env: dict[str, str] | None = None
    ) -> None:
        log = self.workdir / "logs" / f"{name}.log"
        log_file = log.open("ab")
        popen = subprocess.Popen(
            [*(self._nsenter(pid=True) if inside else []), *argv],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            preexec_fn=_die_with_parent,  # noqa: PLW1509 -- no threads in the child before exec
            cwd=self.workdir,
        )
        self._daemons[name] = _Daemon(name, popen, log, log_file, inside)

    def _check_alive(self) -> None:
        for d in self._daemons.values():
            if d.popen.poll() is not None:
                tail = d.log.read_text(errors="replace")[-3000:]
                raise NodeError(f"{d.name} exited with {d.popen.returncode}:\n{tail}")

    def _containerd_config(self) -> str:
        wd = self.workdir
        runc = runc_binary()
        return f"""\
version = 3
root = '{wd / "containerd"}'
state = '/run/containerd'
temp = '{wd / "containerd" / "tmp"}'
imports = []
disabled_plugins = ['io.containerd.nri.v1.nri']

[grpc]
  address = '/run/containerd/containerd.sock'
[ttrpc]
  address = '/run/containerd/containerd.sock.ttrpc'

[plugins]
  [plugins.'io.containerd.internal.v1.opt']
    path = '{wd / "opt"}'
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = '{oci.PAUSE_IMAGE}'
  [plugins.'io.containerd.cri.v1.runtime']
    # the VM's capability bounding set lacks CAP_SYS_RESOURCE: never lower oom_score_adj
    restrict_oom_score_adj = true
    cdi_spec_dirs = []
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = '{runc}'
          SystemdCgroup = false
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ['{cni_bin_dir()}']
      conf_dir = '{wd / "cni"}'
  [plugins.'io.containerd.grpc.v1.cri']
    stream_server_address = '127.0.0.1'
    stream_server_port = '0'
"""

    def _start_containerd(self, timeout: float) -> None:
        cfg = self.workdir / "containerd.toml"
        cfg.write_text(self._containerd_config())
        # pods get an address of their own on a bridge inside the node's network namespace, so
        # several pods may listen on one port (two replicas of a Deployment); from there they
        # reach the API server's forwarder at SERVICE_IP:443, local to that namespace
        (self.workdir / "cni" / "10-pods.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "1.0.0",
                    "name": "spacesecrets-pods",
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": "cni0",
                            "isGateway": True,
                            "ipMasq": False,
                            "ipam": {
                                "type": "host-local",
                                "ranges": [[{"subnet": POD_SUBNET}]],
                                "routes": [{"dst": "0.0.0.0/0"}],
                                "dataDir": str(self.workdir / "cni-ipam"),
                            },
                        }
                    ],
                }
            )
        )
        path = f"{self.bin_dir}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
        argv = [str(self.bin_dir / "containerd"), f"--config={cfg}"]
        self._spawn("containerd", argv, inside=True, env={"PATH": path})

        def up() -> bool:
            self._check_alive()
            return self.ctr("version", check=False).returncode == 0

        _wait("containerd", up, timeout)

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ctr against the node's containerd (from the host, on its socket)."""
        result = subprocess.run(
            [
                str(self.bin_dir / "ctr"),
                f"--address={self.containerd_socket}",
                "-n",
                "k8s.io",
                *args,
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise NodeError(f"ctr {' '.join(args)} failed: {result.stderr}")
        return result

    def import_image(self, archive: Path) -> None:
        """Import an OCI archive into the node's containerd (CRI namespace, unpacked)."""
        self.ctr("images", "import", "--snapshotter=overlayfs", "--local", str(archive))

    def _authorize(self) -> None:
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:node"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:node",
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:nodes"}
            ],
        }
        self.cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(binding))

    def _kubelet_config(self) -> dict[str, Any]:
        wd = self.workdir
        return {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": "127.0.0.1",
            "port": self.kubelet_port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": 10248,
            "tlsCertFile": str(wd / "pki" / "kubelet.crt"),
            "tlsPrivateKeyFile": str(wd / "pki" / "kubelet.key"),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(self.cp.ca_file)},
            },
            "authorization": {"mode": "Webhook"},
            "containerRuntimeEndpoint": "unix:///run/containerd/containerd.sock",
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": self.cgroup_root,
            "failCgroupV1": False,
            "failSwapOn": False,
            "protectKernelDefaults": True,
            "oomScoreAdj": 0,
            "syncFrequency": self.sync_frequency,
            "volumePluginDir": str(wd / "volume-plugins"),
            "resolvConf": "",
            "registerNode": True,
            "evictionHard": {
                "memory.available": "50Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "shutdownGracePeriod": "0s",
        }

    def _start_kubelet(self) -> None:
        pki = self.workdir / "pki"
        pki.mkdir(exist_ok=True)
        serving = self.cp._ca.issue(
            f"system:node:{NODE_NAME}",
            ["system:nodes"],
            server_names=["localhost"],
            server_ips=[NODE_NAME],
        )
        (pki / "kubelet.crt").write_bytes(serving.cert_pem)
        (pki / "kubelet.key").write_bytes(serving.key_pem)
        (pki / "kubelet.key").chmod(0o600)
        kubeconfig = self.cp.kubeconfig_for(
            f"system:node:{NODE_NAME}", ["system:nodes"], name="kubelet"
        )
        cfg = self.workdir / "kubelet.yaml"
        cfg.write_text(yaml.safe_dump(self._kubelet_config()))
        self._make_cgroup_root()
        self._spawn(
            "kubelet",
            [
                str(self.bin_dir / "kubelet"),
                f"--config={cfg}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={self.workdir / 'kubelet'}",
                f"--cert-dir={pki}",
                f"--hostname-override={NODE_NAME}",
                "--v=1",
            ],
            inside=True,
        )

    def _start_scheduler(self) -> None:
        kubeconfig = self.cp.kubeconfig_for("system:kube-scheduler", name="scheduler")
        self._spawn(
            "kube-scheduler",
            [
                str(self.bin_dir / "kube-scheduler"),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--secure-port=0",
                "--leader-elect=false",
                "--v=0",
            ],
            inside=False,
        )

    def node_object(self) -> dict[str, Any] | None:
        result = self.cp.kubectl("get", "node", NODE_NAME, "-o", "json", check=False)
        return json.loads(result.stdout) if result.returncode == 0 else None

    def ready(self) -> bool:
        node = self.node_object() or {}
        conds = (node.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

    def wait_ready(self, timeout: float = 120.0) -> None:
        def check() -> bool:
            self._check_alive()
            return self.ready()

        try:
            _wait(f"node {NODE_NAME} Ready", check, timeout, 0.3)
        except NodeError as exc:
            tail = self.log("kubelet")[-4000:]
            raise NodeError(f"{exc}\nkubelet log ends:\n{tail}") from None

    def log(self, name: str) -> str:
        path = self.workdir / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- cgroups --------------------------------------------------------------------------------

    def _make_cgroup_root(self) -> None:
        for h in _cgroup_hierarchies():
            d = h / self.cgroup_root.lstrip("/")
            d.mkdir(exist_ok=True)
            if h.name == "cpuset" or "cpuset" in h.name.split(","):
                for f in ("cpuset.cpus", "cpuset.mems"):
                    (d / f).write_text((h / f).read_text())

    def cgroup_dirs(self) -> list[Path]:
        """This node's cgroup root in each hierarchy, where it still exists."""
        try:
            hierarchies = _cgroup_hierarchies()
        except OSError:
            return []
        return [
            h / self.cgroup_root.lstrip("/")
            for h in hierarchies
            if (h / self.cgroup_root.lstrip("/")).exists()
        ]

    # -- teardown -------------------------------------------------------------------------------

    def _stop_daemon(self, name: str, timeout: float = 20.0) -> None:
        d = self._daemons.pop(name, None)
        if d is None:
            return
        targets = _children(d.popen.pid) if d.inside else []
        for pid in targets or [d.popen.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        try:
            d.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            for pid in [*targets, d.popen.pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            d.popen.wait(timeout)
        d.log_file.close()

    def _namespace_pids(self) -> list[int]:
        """Processes still in the node's PID, network or mount namespace."""
        if not self._ns:
            return []
        found = []
        for pid in _pids():
            if pid == os.getpid():
                continue
            for kind in ("pid", "net", "mnt"):
                if kind in self._ns and _ns_inode(pid, kind) == self._ns[kind]:
                    found.append(pid)
                    break
        return found

    def stop(self) -> None:
        """Stop the kubelet, containerd, the pods and the holder; remove the cgroups and the
        workdir. Idempotent; raises NodeError when something stayed behind."""
        if self._stopped:
            return
        self._stopped = True
        atexit.unregister(self.stop)
        for name in ("kube-scheduler", "kubelet", "containerd"):
            self._stop_daemon(name)
        if self._init_pid:
            # the init of the node's PID namespace: its end kills the shims and all containers
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._init_pid, signal.SIGKILL)
        if self._holder is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._holder.wait(20)
            if self._holder.poll() is None:
                self._holder.kill()
                self._holder.wait(20)
        if self._holder_log is not None:
            self._holder_log.close()
        with contextlib.suppress(NodeError):
            _wait("the node's processes to end", lambda: not self._namespace_pids(), 20, 0.05)
        if self._forwarder is not None:
            self._forwarder.close()
            self._forwarder = None
        for d in self.cgroup_dirs():
            _remove_cgroup_tree(d)
        left = self.leftovers()
        shutil.rmtree(self.workdir, ignore_errors=True)
        if left:
            raise NodeError(f"the node left behind: {left}")

    def leftovers(self) -> list[str]:
        """What of this node still exists: processes in its namespaces, mounts under its workdir
        in any mount namespace, its cgroup directories."""
        left = [f"process {pid} ({_comm(pid)})" for pid in self._namespace_pids()]
        prefix = str(self.workdir)
        for pid in _pids():
            try:
                lines = Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
            except OSError:
                continue
            for line in lines:
                fields = line.split()
                if len(fields) > 4 and (
                    fields[4].startswith(prefix) or fields[3].startswith(prefix)
                ):
                    left.append(f"mount {fields[4]} (seen by process {pid})")
                    break
        left += [f"cgroup {d}" for d in self.cgroup_dirs()]
        return left


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def _remove_cgroup_tree(root: Path, timeout: float = 10.0) -> None:
    """rmdir a cgroup directory tree depth first (a cgroup dir holds only control files, which
    go with it); retries while the last processes are being reaped."""
    deadline = time.monotonic() + timeout
    while root.exists():
        dirs = sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        try:
            for d in [*dirs, root]:
                d.rmdir()
        except FileNotFoundError:
            continue
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def remove_stale_cgroups() -> None:
    """Remove node cgroup roots that earlier, killed sessions left (only empty ones go)."""
    try:
        hierarchies = _cgroup_hierarchies()
    except OSError:
        return
    for h in hierarchies:
        for d in h.glob(f"{CGROUP_PREFIX}*"):
            with contextlib.suppress(OSError):
                _remove_cgroup_tree(d, timeout=0)


def add_node(cp: ControlPlane, bin_dir: Path | None = None, **kwargs: Any) -> Node:
    """Start a node for `cp` (binaries from `find_node_binaries()` unless given)."""
    found = bin_dir or find_node_binaries()
    if found is None:
        raise ControlPlaneError(
            "no node binaries: run `make kubenode` or set SPACESECRETS_NODE_BIN"
        )
    node = Node(cp, found, **kwargs)
    node.start()
    return node


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m spacesecrets.devtools.node why-not [--host]`: print why this machine cannot run
    the node (nothing when it can); for the Makefile."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] != "why-not":
        print("usage: python -m spacesecrets.devtools.node why-not [--host]", file=sys.stderr)
        return 2
    print(can_run_node(packages="--host" not in args) or "")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
