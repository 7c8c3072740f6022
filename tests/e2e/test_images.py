"""The images, built here as a user builds them (`make image`, `make nodered-image`: Debian by
mmdebstrap, PyPI, npm, this tree; no Docker, no registry), then read back from their archives and
run: the layer unpacked into a directory and started as the image's user (uid 65532, no
capabilities) on a read-only root with a tmpfs /tmp, in a private mount and PID namespace, so
every mount and process goes when the namespace does.

The first build takes a minute or two (then cached by its inputs); unpacking takes seconds. Needs
root, mmdebstrap and the network to Debian's mirror, PyPI and npm.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from spacesecrets.devtools.dev import OPERATOR_NAMESPACE, LocalCluster, free_port, wait_for
from spacesecrets.devtools.node import can_run_node, find_node_binaries

ROOT = Path(__file__).resolve().parents[2]
HACK = ROOT / "hack/image"
NONROOT = 65532
# The stated bounds: the operator image is about 59 MB gzipped, 170 MB unpacked; Node-RED's about
# 79 MB and 285 MB (Node.js, ICU and Node-RED's own dependency tree).
OPERATOR_MAX_MB = (64, 192)
NODERED_MAX_MB = (96, 320)

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("mmdebstrap") is None or shutil.which("unshare") is None,
    reason="building and running the images needs root, mmdebstrap (make mmdebstrap) and unshare",
)

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Image:
    archive: Path
    index: dict[str, Any]
    manifest: dict[str, Any]
    config: dict[str, Any]
    rootfs: Path
    layer_bytes: int

    @property
    def run(self) -> dict[str, Any]:
        return dict(self.config["config"])

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(item.split("=", 1) for item in self.run["Env"])
        return {**env, **extra}


def _build(which: str) -> Path:
    done = subprocess.run(
        ["bash", str(HACK / "build.sh"), which],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    assert done.returncode == 0, f"hack/image/build.sh {which} failed:\n{done.stderr[-4000:]}"
    return Path(done.stdout.strip().splitlines()[-1])


def _blob(layout: Path, digest: str) -> Path:
    algorithm, hexdigest = digest.split(":")
    return layout / "blobs" / algorithm / hexdigest


def _open(archive: Path, into: Path) -> Image:
    """Read an image archive as a runtime would, checking every digest on the way."""
    layout = into / "layout"
    layout.mkdir()
    subprocess.run(["tar", "-xf", str(archive), "-C", str(layout)], check=True)
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((layout / "index.json").read_text())
    [descriptor] = index["manifests"]

    def read(desc: Mapping[str, Any]) -> bytes:
        data = _blob(layout, desc["digest"]).read_bytes()
        assert len(data) == desc["size"]
        assert f"sha256:{hashlib.sha256(data).hexdigest()}" == desc["digest"]
        return data

    manifest = json.loads(read(descriptor))
    config = json.loads(read(manifest["config"]))
    [layer] = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    layer_data = read(layer)
    assert config["rootfs"]["diff_ids"] == [
        f"sha256:{hashlib.sha256(gzip.decompress(layer_data)).hexdigest()}"
    ]
    # the docker-archive manifest (podman load, docker load) names the same blobs
    [docker] = json.loads((layout / "manifest.json").read_text())
    assert docker["Config"] == f"blobs/sha256/{manifest['config']['digest'][7:]}"
    assert docker["Layers"] == [f"blobs/sha256/{layer['digest'][7:]}"]
    assert docker["RepoTags"] == [descriptor["annotations"]["io.containerd.image.name"]]
    rootfs = into / "rootfs"
    rootfs.mkdir()
    subprocess.run(
        ["tar", "--numeric-owner", "-xzf", str(_blob(layout, layer["digest"])), "-C", str(rootfs)],
        check=True,
    )
    return Image(archive, index, manifest, config, rootfs, len(layer_data))


# Runs inside `unshare --mount --pid --fork --kill-child`: the root bind-mounted onto itself
# read-only, tmpfs where the pod has writable volumes, a minimal /dev and a /proc of the new PID
# namespace, files staged into /tmp, then the command chrooted as uid/gid 65532 (no capabilities
# left) with exactly `env`. This shell stays the namespace's PID 1 and root: the death signal
# --kill-child gives it would be cleared by a change of user, and when it dies, for any reason,
# the kernel kills everything in the namespace. It passes SIGTERM on to the command.
_RUNNER = r"""
set -eu
root=$1 stage=$2 workdir=$3 writable=$4; shift 4
mount --bind "$root" "$root"
mount -o remount,bind,ro,nosuid,nodev "$root"
for dir in /tmp $writable; do
  mount -t tmpfs -o nosuid,nodev,mode=0755,uid=65532,gid=65532,size=64m tmpfs "$root$dir"
done
chmod 1777 "$root/tmp"
mount -t tmpfs -o nosuid,mode=0755,size=1m tmpfs "$root/dev"
for node in null zero full random urandom tty; do
  touch "$root/dev/$node"
  mount --bind "/dev/$node" "$root/dev/$node"
done
mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
cp -a "$stage/." "$root/tmp/"
chroot --userspec=65532:65532 --groups=65532 "$root" /usr/bin/env -i -C "$workdir" "$@" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM INT
while :; do
  if wait "$child"; then exit 0; else status=$?; fi
  kill -0 "$child" 2>/dev/null || exit "$status"
done
"""


def _command(
    image: Image,
    argv: Sequence[str],
    env: Mapping[str, str],
    stage: Path,
    writable: Sequence[str] = (),
) -> list[str]:
    stage.mkdir(parents=True, exist_ok=True)
    subprocess.run(["chown", "-R", f"{NONROOT}:{NONROOT}", str(stage)], check=True)
    return [
        "unshare", "--mount", "--pid", "--fork", "--kill-child", "--propagation", "private",
        "sh", "-c", _RUNNER, "runner", str(image.rootfs), str(stage),
        image.run.get("WorkingDir") or "/", " ".join(writable),
        *(f"{k}={v}" for k, v in env.items()), *argv,
    ]  # fmt: skip


def _stop(proc: subprocess.Popen[Any], grace: float = 20) -> None:
    """SIGTERM to the namespace's PID 1 (the runner, which passes it on), then SIGKILL to unshare,
    whose death kills the whole namespace."""
    if proc.poll() is None:
        try:
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        except OSError:
            children = []
        for child in children:
            os.kill(int(child), signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@contextlib.contextmanager
def started(command: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        _stop(proc)


def _processes_under(path: Path | str) -> list[int]:
    """Processes whose root directory is in `path` (or names it)."""
    needle = str(path.resolve()) if isinstance(path, Path) else path
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in os.readlink(entry / "root"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _mounted_under(path: Path) -> list[str]:
    needle = str(path.resolve())
    return [
        line for line in Path("/proc/self/mountinfo").read_text().splitlines() if needle in line
    ]


def run_in(
    image: Image,
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    files: Mapping[str, str] | None = None,
    writable: Sequence[str] = (),
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """`argv` in the image as the chart runs it; `files` are placed in its /tmp."""
    stage = image.rootfs.parent / f"stage-{os.urandom(4).hex()}"
    stage.mkdir()
    for name, text in (files or {}).items():
        (stage / name).write_text(text)
    proc = subprocess.Popen(
        _command(image, argv, image.env() if env is None else env, stage, writable),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    finally:
        _stop(proc)
        shutil.rmtree(stage)
        assert not _mounted_under(image.rootfs), "a mount outlived its namespace"
        assert not _processes_under(image.rootfs), "a process outlived its namespace"


@pytest.fixture(scope="module")
def operator_image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    return _open(_build("operator"), tmp_path_factory.mktemp("operator-image"))


@pytest.fixture(scope="module")
def nodered_image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    return _open(_build("nodered"), tmp_path_factory.mktemp("nodered-image"))


def _chart() -> tuple[str, str]:
    chart = yaml.safe_load((ROOT / "charts/spacesecrets/Chart.yaml").read_text())
    values = yaml.safe_load((ROOT / "charts/spacesecrets/values.yaml").read_text())
    return values["image"]["repository"], chart["appVersion"]


def _size_mb(path: Path) -> float:
    total = 0
    for top, _, files in os.walk(path):
        total += sum(os.lstat(os.path.join(top, f)).st_size for f in files)
    return total / 1e6


# -- the operator image ------------------------------------------------------------------------


def test_operator_image_is_what_the_chart_runs(operator_image: Image) -> None:
    repository, app_version = _chart()
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert operator_image.archive.name == f"spacesecrets-operator-{version}.oci.tar"
    [descriptor] = operator_image.index["manifests"]
    assert descriptor["annotations"]["io.containerd.image.name"] == f"{repository}:{app_version}"
    assert descriptor["annotations"]["org.opencontainers.image.ref.name"] == app_version
    run = operator_image.run
    assert run["User"] == f"{NONROOT}:{NONROOT}"
    assert run["Entrypoint"] == ["spacesecrets"]
    assert run["Cmd"] == ["operator"]
    env = operator_image.env()
    assert env["USER"] == "nonroot"
    assert env["HOME"] == "/home/nonroot"
    assert operator_image.config["os"] == "linux"
    assert operator_image.config["architecture"] == "amd64"


def test_operator_image_has_a_passwd_entry_for_its_user(operator_image: Image) -> None:
    passwd = (operator_image.rootfs / "etc/passwd").read_text().splitlines()
    assert "nonroot:x:65532:65532:nonroot:/home/nonroot:/usr/sbin/nologin" in passwd
    assert "nonroot:x:65532:" in (operator_image.rootfs / "etc/group").read_text().splitlines()
    home = (operator_image.rootfs / "home/nonroot").stat()
    assert (home.st_uid, home.st_gid) == (NONROOT, NONROOT)


def _installed_distributions(rootfs: Path) -> dict[str, str]:
    site = rootfs / "usr/local/lib/python3.11/dist-packages"
    found = {}
    for info in site.glob("*.dist-info"):
        name, version = info.name[: -len(".dist-info")].rsplit("-", 1)
        found[re.sub(r"[-_.]+", "-", name).lower()] = version
    return found


def _requirements() -> dict[str, str]:
    text = (HACK / "operator/requirements.txt").read_text()
    return dict(re.findall(r"^([a-z0-9-]+)==(\S+) \\$", text, flags=re.MULTILINE))


def test_operator_image_holds_exactly_the_locked_python_packages(operator_image: Image) -> None:
    installed = _installed_distributions(operator_image.rootfs)
    assert installed.pop("spacesecrets") == "0.1.0"
    assert installed == _requirements()
    for absent in ("pydantic", "pydantic-core", "kubernetes"):
        assert absent not in installed
    # and the operator, as the CLI starts it, loads neither
    probe = (
        "import sys; sys.modules.setdefault('kubernetes', None); import kopf; "
        "from spacesecrets import handlers; from spacesecrets.cli import main; "
        "import importlib.util as u; print(u.find_spec('pydantic'), 'pydantic' in sys.modules)"
    )
    done = run_in(operator_image, ["python3", "-c", probe])
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["None", "False"]


def test_operator_requirements_agree_with_pyproject() -> None:
    pinned = {
        re.sub(r"[-_.]+", "-", name).lower(): version
        for name, version in (
            dep.split("==")
            for dep in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
                "dependencies"
            ]
        )
    }
    locked = _requirements()
    # what only the CLI's owner commands load (the official client brings urllib3)
    not_in_image = {"kubernetes", "pydantic", "urllib3"}
    for name in set(pinned) - not_in_image:
        assert locked[name] == pinned[name], name
    assert not not_in_image & set(locked)
    text = (HACK / "operator/requirements.txt").read_text()
    assert text.count("--hash=sha256:") == len(locked)


def test_operator_image_size(operator_image: Image) -> None:
    compressed, unpacked = operator_image.layer_bytes / 1e6, _size_mb(operator_image.rootfs)
    print(f"operator image: {compressed:.1f} MB gzipped, {unpacked:.1f} MB unpacked")
    assert compressed < OPERATOR_MAX_MB[0]
    assert unpacked < OPERATOR_MAX_MB[1]
    # what a read-only, non-root operator never reads is not in it
    for gone in ("var/lib/apt/lists", "usr/share/man", "usr/share/locale", "var/log"):
        path = operator_image.rootfs / gone
        assert not path.exists() or not any(path.iterdir()), gone
    assert not list((operator_image.rootfs / "dev").iterdir())


def test_operator_image_runs_as_its_user_on_a_read_only_root(operator_image: Image) -> None:
    run = operator_image.run
    helped = run_in(operator_image, [*run["Entrypoint"], "--help"])
    assert helped.returncode == 0, helped.stderr
    assert "Versioned, owner-managed, encrypted secrets" in helped.stdout
    script = (
        "import getpass, os, pwd; print(os.getuid(), os.getgid(), getpass.getuser(), "
        "pwd.getpwuid(os.getuid()).pw_name)\n"
        "for path in ('/usr/local/lib/x', '/home/nonroot/x', '/tmp/x'):\n"
        "    try:\n"
        "        open(path, 'w').close(); print(path, 'written')\n"
        "    except OSError as exc:\n"
        "        print(path, exc.strerror)\n"
        "print(open('/proc/self/status').read().split('CapEff:')[1].split()[0])\n"
    )
    done = run_in(operator_image, ["python3", "-c", script])
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "65532 65532 nonroot nonroot"
    assert lines[1:4] == [
        "/usr/local/lib/x Read-only file system",
        "/home/nonroot/x Read-only file system",
        "/tmp/x written",
    ]
    assert lines[4] == "0000000000000000"  # no capabilities


def test_kopf_knows_who_it_is_from_the_passwd_entry_alone(operator_image: Image) -> None:
    """What crashed the operator pod: kopf's peering identity calls getpass.getuser(). Without
    USER (or LOGNAME) in the environment, that is the passwd entry's work."""
    env = {k: v for k, v in operator_image.env().items() if k not in ("USER", "LOGNAME")}
    probe = (
        "from kopf._core.engines.peering import detect_own_id; print(detect_own_id(manual=False))"
    )
    done = run_in(operator_image, ["python3", "-c", probe], env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("nonroot@")


def test_operator_image_serves_a_cluster(operator_image: Image, cluster: LocalCluster) -> None:
    """The image's operator, on its read-only root as uid 65532, with the environment the chart
    gives it: it logs in with its ServiceAccount's token, publishes its public key, and answers
    /healthz on the configured address only."""
    health, metrics = free_port(), free_port()
    kubeconfig = cluster.operator_kubeconfig().read_text()
    cluster.cp.kubectl(
        "delete", "configmap", "spacesecrets-public-keys", "-n", OPERATOR_NAMESPACE,
        "--ignore-not-found",
    )  # fmt: skip
    env = operator_image.env(
        KUBECONFIG="/tmp/kubeconfig",
        HOME="/tmp",
        SPACESECRETS_NAMESPACE=OPERATOR_NAMESPACE,
        SPACESECRETS_HEALTH_PORT=str(health),
        SPACESECRETS_HEALTH_ADDRESS="127.0.0.1",
        SPACESECRETS_METRICS_PORT=str(metrics),
        SPACESECRETS_METRICS_ADDRESS="127.0.0.1",
    )
    stage = operator_image.rootfs.parent / "stage-operator"
    (stage).mkdir(exist_ok=True)
    (stage / "kubeconfig").write_text(kubeconfig)
    (stage / "kubeconfig").chmod(0o600)
    argv = [*operator_image.run["Entrypoint"], *operator_image.run["Cmd"]]
    log = operator_image.rootfs.parent / "operator.log"
    try:
        with started(_command(operator_image, argv, env, stage), log) as proc:

            def healthy() -> bool:
                assert proc.poll() is None, f"the operator exited:\n{log.read_text()[-3000:]}"
                try:
                    with _DIRECT.open(f"http://127.0.0.1:{health}/healthz", timeout=2) as response:
                        return bool(response.status == 200)
                except (urllib.error.URLError, OSError):
                    return False

            wait_for("the image's operator's /healthz", healthy, 90)
            with socket.socket() as sock:
                sock.settimeout(5)
                assert sock.connect_ex(("127.0.0.2", health)) != 0, "/healthz is not loopback-only"
            wait_for(
                "the operator's public key",
                lambda: cluster.cp.kubectl(
                    "get", "configmap", "spacesecrets-public-keys", "-n", OPERATOR_NAMESPACE,
                    check=False,
                ).returncode == 0,
                60,
            )  # fmt: skip
            assert "getpwuid" not in log.read_text()
        assert proc.returncode == 0, (
            f"the operator did not stop cleanly:\n{log.read_text()[-2000:]}"
        )
    finally:
        shutil.rmtree(stage)
    assert not _mounted_under(operator_image.rootfs)
    assert not _processes_under(operator_image.rootfs)


@pytest.mark.parametrize("transport", ["oci-archive", "docker-archive"])
def test_container_tools_read_the_archive(
    operator_image: Image, transport: str, tmp_path: Path
) -> None:
    """containers/image (what `podman load` uses) reads the archive both as an OCI layout and as
    a docker archive, verifying every blob on the way."""
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed (apt-get install skopeo)")
    source = f"{transport}:{operator_image.archive}"
    subprocess.run(["skopeo", "copy", "-q", source, f"dir:{tmp_path / 'copy'}"], check=True)
    inspected = json.loads(
        subprocess.run(
            ["skopeo", "inspect", "--config", source], capture_output=True, check=True
        ).stdout
    )
    assert inspected["config"]["User"] == f"{NONROOT}:{NONROOT}"
    assert inspected["rootfs"] == operator_image.config["rootfs"]


def _containerd_bin() -> Path | None:
    env = os.environ.get("SPACESECRETS_CONTAINERD_BIN")
    if env:
        return Path(env)
    found = shutil.which("containerd")
    if found and shutil.which("ctr"):
        return Path(found).parent
    # else the local node's containerd v2 (make kubenode builds it where the machine allows)
    return find_node_binaries() if can_run_node(packages=False) is None else None


# A private containerd (no CRI plugin) in its own mount and PID namespaces, so its socket, store
# and unpacking mounts all go with them; `ctr images import` as the kubelet's node would.
_CONTAINERD = r"""
set -eu
bin=$1 dir=$2; shift 2
"$bin/containerd" --config "$dir/config.toml" >"$dir/containerd.log" 2>&1 &
for _ in $(seq 100); do [ -S "$dir/c.sock" ] && break; sleep 0.1; done
for archive in "$@"; do
  "$bin/ctr" -a "$dir/c.sock" -n k8s.io images import "$archive" >/dev/null
done
"$bin/ctr" -a "$dir/c.sock" -n k8s.io images ls -q
"$bin/ctr" -a "$dir/c.sock" -n k8s.io snapshots ls | tail -n +2 | wc -l
"""


def test_containerd_imports_the_archives(
    operator_image: Image, nodered_image: Image, tmp_path: Path
) -> None:
    bin_dir = _containerd_bin()
    if bin_dir is None:
        why = can_run_node(packages=False)
        pytest.skip(f"no containerd and ctr (PATH, SPACESECRETS_CONTAINERD_BIN or the node): {why}")
    (tmp_path / "config.toml").write_text(
        "version = 3\n"
        f'root = "{tmp_path}/root"\nstate = "{tmp_path}/state"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime",'
        ' "io.containerd.cri.v1.images"]\n'
        f'[grpc]\n  address = "{tmp_path}/c.sock"\n'
    )
    archives = [str(operator_image.archive), str(nodered_image.archive)]
    done = subprocess.run(
        ["unshare", "--mount", "--pid", "--fork", "--kill-child", "--propagation", "private",
         "sh", "-c", _CONTAINERD, "containerd", str(bin_dir), str(tmp_path), *archives],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    log = (tmp_path / "containerd.log").read_text()[-2000:]
    assert done.returncode == 0, f"{done.stderr}\n{log}"
    *names, snapshots = done.stdout.split()
    names_wanted = {
        image.index["manifests"][0]["annotations"]["io.containerd.image.name"]
        for image in (operator_image, nodered_image)
    }
    assert set(names) == names_wanted
    assert int(snapshots) == 2  # each image's one layer, unpacked
    assert not _mounted_under(tmp_path)


# -- the Dockerfile and the chart agree with the build ----------------------------------------


def _dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) for each instruction, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
    return out


def test_dockerfile_builds_the_same_image() -> None:
    instructions = _dockerfile()
    final = instructions[max(i for i, (w, _) in enumerate(instructions) if w == "FROM") :]
    build = instructions[: len(instructions) - len(final)]
    assert final[0] == ("FROM", "scratch")
    assert ("COPY", "--from=build /rootfs/ /") in final
    runs = " ".join(arg for word, arg in build if word == "RUN")
    # the same scripts, hence the same pins: Debian packages (packages, debian.lock), the hashed
    # requirements file, the passwd entry, the project's wheel
    assert "hack/image/rootfs.sh operator /rootfs" in runs
    assert "hack/image/build.sh python-deps /rootfs" in runs
    assert "hack/image/build.sh python-app /rootfs /src" in runs
    assert ("COPY", "hack/image/ hack/image/") in build
    dockerignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert "!hack/image/" in dockerignore
    # the build stage's own tools are pinned (mmdebstrap's hooks and pip shape the result)
    assert re.search(r"mmdebstrap=\S+", runs)
    assert re.search(r"python3-pip=\S+", runs)
    # the run-time config is image.json's
    run = json.loads((HACK / "operator/image.json").read_text())
    final_args = dict(final)
    assert final_args["USER"] == run["User"]
    assert json.loads(final_args["ENTRYPOINT"]) == run["Entrypoint"]
    assert json.loads(final_args["CMD"]) == run["Cmd"]
    assert final_args["WORKDIR"] == run["WorkingDir"]
    env = dict(shlex.split(item)[0].split("=", 1) for item in final_args["ENV"].split(" "))
    assert env == dict(item.split("=", 1) for item in run["Env"])
    assert sorted(f"{p}/tcp" for p in final_args["EXPOSE"].split()) == sorted(run["ExposedPorts"])
    labels = dict(re.findall(r'(\S+)="([^"]*)"', final_args["LABEL"]))
    assert labels == run["Labels"]


def _tree(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every path under `root` with what an image keeps of it (no mtimes), but /dev's contents."""
    out: dict[str, tuple[Any, ...]] = {}
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(top, name)
            rel = str(path.relative_to(root))
            st = path.lstat()
            if path.is_symlink():
                what: Any = os.readlink(path)
            elif path.is_file():
                what = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                what = None
            out[rel] = (st.st_mode, st.st_uid, st.st_gid, what)
    return {k: v for k, v in out.items() if not k.startswith("dev/")}


@pytest.mark.slow
def test_dockerfile_build_stage_makes_the_same_root_filesystem(
    operator_image: Image, tmp_path: Path
) -> None:
    """With no Docker here, the Dockerfile's build stage is played step by step (its COPYs from
    this tree with .dockerignore's exclusions, its RUNs with /src and /rootfs moved into a temporary
    directory, Debian's own pip as in the build stage): it makes the very root filesystem that
    `make image` packs, file for file, modes and owners included."""
    debian_python = Path("/usr/bin/python3")
    if subprocess.run([debian_python, "-m", "pip", "--version"], check=False).returncode:
        pytest.skip("Debian's python3-pip is not installed (the Dockerfile's build stage has it)")
    instructions = _dockerfile()
    froms = [i for i, (word, _) in enumerate(instructions) if word == "FROM"]
    src, rootfs = tmp_path / "src", tmp_path / "rootfs"
    for word, arg in instructions[froms[0] + 1 : froms[1]]:
        if word == "WORKDIR":
            assert arg == "/src"
            src.mkdir()
        elif word == "COPY":
            *sources, dest = arg.split()
            # each source lands at its own path: `COPY a/ a/` or top-level files into `./`
            assert all(dest.rstrip("/") in (s.rstrip("/"), ".") for s in sources), arg
            subprocess.run(
                ["tar", "-C", str(ROOT), "--exclude=__pycache__", "--exclude=*.pyc",
                 "--exclude=*.egg-info", "--exclude=.mypy_cache", "--exclude=node_modules",
                 "-cf", str(tmp_path / "copy.tar"), *(s.rstrip("/") for s in sources)],
                check=True,
            )  # fmt: skip
            subprocess.run(["tar", "-C", str(src), "-xf", str(tmp_path / "copy.tar")], check=True)
        elif word == "RUN" and "apt-get" in arg:
            continue  # the build stage's own tools, pinned (see above)
        elif word == "RUN":
            command = re.sub(r"(?<=\s)/rootfs(?=\s|$)", str(rootfs), arg)
            command = re.sub(r"(?<=\s)/src(?=\s|$)", str(src), command)
            done = subprocess.run(
                ["bash", "-ec", command],
                cwd=src,
                env={**os.environ, "PYTHON": str(debian_python)},
                capture_output=True,
                text=True,
                check=False,
            )
            assert done.returncode == 0, f"{arg}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        else:
            pytest.fail(f"the build stage has a {word} this test does not play")
    built, packed = _tree(rootfs), _tree(operator_image.rootfs)
    shutil.rmtree(rootfs)
    assert sorted(set(built) ^ set(packed)) == []
    assert [k for k in built if built[k] != packed[k]] == []


def test_the_pinned_debian_packages_are_in_the_lock() -> None:
    for image in ("operator", "nodered"):
        lock = set((HACK / image / "debian.lock").read_text().split())
        for line in (HACK / image / "packages").read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                assert re.fullmatch(r"[a-z0-9.+-]+=\S+", line.strip()), line
                assert line.strip() in lock, f"{image}: {line} is not in debian.lock"


def test_the_chart_runs_the_operator_as_the_image_expects() -> None:
    bin_dir = os.environ.get("SPACESECRETS_CONTROLPLANE_BIN")
    if not bin_dir:
        pytest.skip("helm comes with the control plane (SPACESECRETS_CONTROLPLANE_BIN)")
    rendered = subprocess.run(
        [f"{bin_dir}/helm", "template", "spacesecrets", str(ROOT / "charts/spacesecrets")],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    [deployment] = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    run = json.loads((HACK / "operator/image.json").read_text())
    uid, gid = (int(n) for n in run["User"].split(":"))
    security = container["securityContext"]
    assert (security["runAsUser"], security["runAsGroup"]) == (uid, gid)
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert container["command"] == run["Entrypoint"] + run["Cmd"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["USER"] == "nonroot"
    assert env["SPACESECRETS_HEALTH_ADDRESS"] == "0.0.0.0"
    [tmp] = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    [volume] = [v for v in pod["volumes"] if v["name"] == tmp["name"]]
    assert "emptyDir" in volume
    assert env["HOME"] == "/tmp"  # writable, unlike the image's /home/nonroot on a read-only root
    # health.bindAddress=podIP: the pod's own IP, from the downward API
    rendered = subprocess.run(
        [f"{bin_dir}/helm", "template", "spacesecrets", str(ROOT / "charts/spacesecrets"),
         "--set", "health.bindAddress=podIP"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    [deployment] = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Deployment"]
    [address] = [
        e
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        if e["name"] == "SPACESECRETS_HEALTH_ADDRESS"
    ]
    assert address == {
        "name": "SPACESECRETS_HEALTH_ADDRESS",
        "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
    }


# -- the Node-RED image ------------------------------------------------------------------------


def test_nodered_image_config_and_size(nodered_image: Image) -> None:
    run = nodered_image.run
    assert run["User"] == f"{NONROOT}:{NONROOT}"
    assert run["Entrypoint"] == ["node-red"]
    assert run["Cmd"] == ["--userDir", "/data"]
    assert nodered_image.env()["USER"] == "nonroot"
    assert "nonroot:x:65532:65532" in (nodered_image.rootfs / "etc/passwd").read_text()
    compressed, unpacked = nodered_image.layer_bytes / 1e6, _size_mb(nodered_image.rootfs)
    print(f"Node-RED image: {compressed:.1f} MB gzipped, {unpacked:.1f} MB unpacked")
    assert compressed < NODERED_MAX_MB[0]
    assert unpacked < NODERED_MAX_MB[1]


def test_nodered_image_holds_our_node_as_packed(nodered_image: Image) -> None:
    ours = json.loads((ROOT / "clients/node-red/package.json").read_text())
    installed = nodered_image.rootfs / "usr/src/node-red/node_modules" / ours["name"]
    assert json.loads((installed / "package.json").read_text())["version"] == ours["version"]
    for name in ours["files"]:
        assert (installed / name).read_bytes() == (ROOT / "clients/node-red" / name).read_bytes()
    assert not (installed / "test").exists()  # only what `npm pack` packs
    pinned = json.loads((HACK / "nodered/package.json").read_text())["dependencies"]["node-red"]
    done = run_in(nodered_image, [*nodered_image.run["Entrypoint"], "--version"])
    assert done.returncode == 0, done.stderr
    assert f"Node-RED v{pinned}" in done.stdout
    assert "Node.js v18." in done.stdout


def test_nodered_image_loads_our_node(nodered_image: Image) -> None:
    """Node-RED from the image, on its read-only root with a writable userDir, lists our node as
    loaded at the packed version."""
    port = free_port()
    settings = f'module.exports = {{ uiHost: "127.0.0.1", uiPort: {port} }};\n'
    stage = nodered_image.rootfs.parent / "stage-nodered"
    stage.mkdir(exist_ok=True)
    (stage / "settings.js").write_text(settings)
    argv = [*nodered_image.run["Entrypoint"], *nodered_image.run["Cmd"]]
    argv += ["--settings", "/tmp/settings.js"]
    log = nodered_image.rootfs.parent / "node-red.log"
    command = _command(nodered_image, argv, nodered_image.env(), stage, writable=["/data"])
    try:
        with started(command, log) as proc:
            nodes: list[dict[str, Any]] = []

            def listed() -> bool:
                assert proc.poll() is None, f"Node-RED exited:\n{log.read_text()[-3000:]}"
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/nodes", headers={"Accept": "application/json"}
                )
                try:
                    with _DIRECT.open(request, timeout=2) as response:
                        nodes[:] = json.loads(response.read())
                        return True
                except (urllib.error.URLError, OSError):
                    return False

            wait_for("Node-RED's /nodes", listed, 60)
            ours = json.loads((ROOT / "clients/node-red/package.json").read_text())
            [entry] = [n for n in nodes if n.get("module") == ours["name"]]
            assert entry["version"] == ours["version"]
            assert entry["enabled"] is True
            assert entry.get("loaded", True) is True, entry
        assert proc.returncode == 0, f"Node-RED did not stop cleanly:\n{log.read_text()[-2000:]}"
    finally:
        shutil.rmtree(stage)
    assert not _mounted_under(nodered_image.rootfs)
    assert not _processes_under(nodered_image.rootfs)


@pytest.fixture(autouse=True)
def _nothing_left_running_or_mounted() -> Iterator[None]:
    yield
    marks = ("/operator-image", "/nodered-image")
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    assert not [line for line in mounts if any(mark in line for mark in marks)]
    left = [pid for mark in marks for pid in _processes_under(mark)]
    assert not left, f"processes left running in an image: {left}"
