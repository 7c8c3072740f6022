"""OCI image archives written without a registry or an image builder.

An archive is an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/...`) that also holds
a docker-archive `manifest.json` naming the same blobs, so `ctr -n k8s.io images import`,
`podman load` and `docker load` all take it. Each image has one layer, and its bytes depend only
on what goes in: entries sorted, every mtime one epoch, no user or group names, no time in gzip
headers.

- `pack()` (and `python -m spacesecrets.devtools.oci`): a root filesystem directory, gzipped, with
  the run-time config from a JSON file; the project's images (hack/image/build.sh).
- `write_image()`: a few files given in code, uncompressed; `pause_image()` and `busybox_image()`
  are the two images the local test node needs (the sandbox's pause process, a tiny shell).

    python -m spacesecrets.devtools.oci --rootfs DIR --config image.json \
        --name ghcr.io/spacesecrets/spacesecrets:0.1.0 --epoch 1700000000 --out image.oci.tar
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import hashlib
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
BUSYBOX_IMAGE = "spacesecrets.local/busybox:test"
# The applets the tests and a person poking at a pod use; busybox answers to any of these names.
BUSYBOX_APPLETS = (
    "sh", "cat", "ls", "sleep", "echo", "env", "id", "ps", "grep", "sed", "head", "tail", "wc",
    "test", "true", "false", "readlink", "stat", "mkdir", "rm", "cp", "mv", "date", "hostname",
    "watch", "wget", "nc", "vi", "find", "xargs", "sort", "uniq", "tr", "cut", "sha256sum",
)  # fmt: skip
# A container runtime mounts its own /dev, /proc and /sys: only the empty directories go in.
RUNTIME_MOUNTS = ("dev", "proc", "sys")
TAR = "application/vnd.oci.image.layer.v1.tar"
TAR_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


@dataclass(frozen=True)
class Layer:
    path: Path
    digest: str  # of the blob as stored: its name
    diff_id: str  # of the tar itself: what the image config lists
    size: int
    media_type: str


# -- layers --------------------------------------------------------------------------------------


class _Hashing(io.RawIOBase):
    """A write-only stream that hashes and counts what passes through to `sink`."""

    def __init__(self, sink: IO[bytes]) -> None:
        self.sink = sink
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.sha.update(view)
        self.size += len(view)
        self.sink.write(view)
        return len(view)


def _rootfs_entries(rootfs: Path) -> list[Path]:
    """Every path under `rootfs`, parents first, in byte order; nothing under RUNTIME_MOUNTS."""
    out: list[Path] = []
    for top, dirs, files in os.walk(rootfs):
        rel = Path(top).relative_to(rootfs)
        if rel.parts and rel.parts[0] in RUNTIME_MOUNTS:
            dirs.clear()
            continue
        out.extend(Path(top, name) for name in dirs + files)
    return sorted(out, key=lambda p: os.fsencode(p.relative_to(rootfs)))


def write_layer(rootfs: Path, out: Path, epoch: int) -> Layer:
    """A gzipped tar of the directory `rootfs` (numeric owners and modes kept, names dropped)."""
    with out.open("wb") as file:
        compressed = _Hashing(file)
        with gzip.GzipFile(fileobj=compressed, mode="wb", compresslevel=6, mtime=0) as gz:
            plain = _Hashing(gz)  # type: ignore[arg-type]
            with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for path in _rootfs_entries(rootfs):
                    info = tar.gettarinfo(str(path), arcname=str(path.relative_to(rootfs)))
                    if not (info.isreg() or info.isdir() or info.issym() or info.islnk()):
                        continue  # sockets, fifos and device nodes belong to the runtime
                    info.mtime, info.uname, info.gname = epoch, "", ""
                    if info.isreg():
                        with path.open("rb") as data:
                            tar.addfile(info, data)
                    else:
                        tar.addfile(info)
    return Layer(
        out,
        f"sha256:{compressed.sha.hexdigest()}",
        f"sha256:{plain.sha.hexdigest()}",
        compressed.size,
        TAR_GZIP,
    )


@dataclass(frozen=True)
class Entry:
    """One member of a layer given in code: a file (from bytes or a path), a directory or a
    symlink."""

    name: str
    data: bytes | None = None
    source: Path | None = None
    mode: int = 0o644
    link: str | None = None
    directory: bool = False


def _entries_layer(entries: Iterable[Entry], out: Path) -> Layer:
    """An uncompressed tar of `entries`, owned by root, mtime 0."""
    with out.open("wb") as file:
        plain = _Hashing(file)
        with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for e in entries:
                info = tarfile.TarInfo(e.name.lstrip("/"))
                info.mode, info.mtime, info.uid, info.gid = e.mode, 0, 0, 0
                if e.directory:
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                elif e.link is not None:
                    info.type, info.linkname, info.mode = tarfile.SYMTYPE, e.link, 0o777
                    tar.addfile(info)
                else:
                    data = e.data if e.data is not None else (e.source or Path("/dev/null"))
                    blob = data if isinstance(data, bytes) else data.read_bytes()
                    info.size = len(blob)
                    tar.addfile(info, io.BytesIO(blob))
    digest = f"sha256:{plain.sha.hexdigest()}"
    return Layer(out, digest, digest, plain.size, TAR)


# -- the archive ---------------------------------------------------------------------------------


def _json(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _digest(blob: bytes) -> str:
    return f"sha256:{hashlib.sha256(blob).hexdigest()}"


def _descriptor(media_type: str, blob: bytes) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": _digest(blob), "size": len(blob)}


def image_config(run: Mapping[str, Any], layer: Layer, epoch: int) -> dict[str, Any]:
    """The OCI image config: `run` (User, Env, Entrypoint, Cmd, ...) over the one layer."""
    created = dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": dict(run),
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
        "history": [{"created": created, "created_by": "spacesecrets.devtools.oci"}],
    }


def write_archive(layer: Layer, config: Mapping[str, Any], name: str, out: Path, epoch: int) -> str:
    """The image archive at `out`, named `name` (registry/repository:tag); returns the manifest's
    digest (the image's id in containerd)."""
    config_blob = _json(config)
    manifest_blob = _json(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": _descriptor("application/vnd.oci.image.config.v1+json", config_blob),
            "layers": [{"mediaType": layer.media_type, "digest": layer.digest, "size": layer.size}],
        }
    )
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                **_descriptor("application/vnd.oci.image.manifest.v1+json", manifest_blob),
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": name.rpartition(":")[2],
                },
            }
        ],
    }
    blobs = "blobs/sha256/"
    docker = [
        {
            "Config": blobs + _digest(config_blob)[7:],
            "RepoTags": [name],
            "Layers": [blobs + layer.digest[7:]],
        }
    ]
    small = {
        "oci-layout": _json({"imageLayoutVersion": "1.0.0"}),
        "index.json": _json(index),
        "manifest.json": _json(docker),
        blobs + _digest(config_blob)[7:]: config_blob,
        blobs + _digest(manifest_blob)[7:]: manifest_blob,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for directory in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, epoch
            tar.addfile(info)
        for member, data in sorted(small.items()):
            info = tarfile.TarInfo(member)
            info.size, info.mode, info.mtime = len(data), 0o644, epoch
            tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo(blobs + layer.digest[7:])
        info.size, info.mode, info.mtime = layer.size, 0o644, epoch
        with layer.path.open("rb") as blob_file:
            tar.addfile(info, blob_file)
    return _digest(manifest_blob)


def pack(rootfs: Path, run: Mapping[str, Any], name: str, out: Path, epoch: int) -> str:
    """The image of the directory `rootfs`, as `write_archive`."""
    layer_path = out.with_name(out.name + ".layer")
    try:
        layer = write_layer(rootfs, layer_path, epoch)
        return write_archive(layer, image_config(run, layer, epoch), name, out, epoch)
    finally:
        layer_path.unlink(missing_ok=True)


# -- small images given in code ------------------------------------------------------------------


def write_image(  # noqa: PLR0913 -- an image's config; all but the first three are keywords
    path: Path,
    ref: str,
    entries: Sequence[Entry],
    *,
    entrypoint: Sequence[str] = (),
    cmd: Sequence[str] = (),
    env: Sequence[str] = ("PATH=/bin",),
    user: str = "",
) -> Path:
    """Write an image archive holding one image named `ref` (e.g. `registry/name:tag`)."""
    run: dict[str, Any] = {"Env": list(env)}
    if entrypoint:
        run["Entrypoint"] = list(entrypoint)
    if cmd:
        run["Cmd"] = list(cmd)
    if user:
        run["User"] = user
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        layer = _entries_layer(entries, Path(tmp) / "layer.tar")
        write_archive(layer, image_config(run, layer, 0), ref, path, 0)
    return path


def _base_dirs() -> list[Entry]:
    return [Entry(d, directory=True, mode=0o755) for d in ("bin", "etc", "proc", "sys", "dev")] + [
        Entry("tmp", directory=True, mode=0o1777)
    ]


def pause_image(path: Path, pause_binary: Path) -> Path:
    """The sandbox image: the static pause binary as /pause, run as nobody (65535)."""
    entries = [Entry("pause", source=pause_binary, mode=0o755)]
    return write_image(path, PAUSE_IMAGE, entries, entrypoint=["/pause"], user="65535:65535")


def busybox_image(path: Path, busybox_binary: Path, ref: str = BUSYBOX_IMAGE) -> Path:
    """A shell image: Debian's static busybox and the applet links the tests use."""
    entries = [
        *_base_dirs(),
        Entry("bin/busybox", source=busybox_binary, mode=0o755),
        *(Entry(f"bin/{a}", link="busybox") for a in BUSYBOX_APPLETS),
        Entry("etc/passwd", data=b"root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n"),
        Entry("etc/group", data=b"root:x:0:\nnogroup:x:65534:\n"),
    ]
    return write_image(path, ref, entries, cmd=["sh"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Pack a root filesystem into an image archive.")
    parser.add_argument("--rootfs", type=Path, required=True)
    parser.add_argument("--config", type=Path, required=True, help="the run-time config (JSON)")
    parser.add_argument("--name", required=True, help="the image reference, with its tag")
    parser.add_argument("--epoch", type=int, required=True, help="every file's mtime")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    run = json.loads(args.config.read_text())
    run.pop("//", None)  # a comment
    digest = pack(args.rootfs, run, args.name, args.out, args.epoch)
    print(f"{args.out}: {args.name} {digest}")


if __name__ == "__main__":
    main()
