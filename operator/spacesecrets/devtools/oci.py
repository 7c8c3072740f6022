"""OCI image archives written without a registry or an image builder.

`write_image()` packs files into one uncompressed layer, adds the config and manifest, and writes an
OCI image layout as a tar that `ctr images import` takes; `pause_image()` and `busybox_image()` are
the two images the local test node needs (the sandbox's pause process and a tiny shell image).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
BUSYBOX_IMAGE = "spacesecrets.local/busybox:test"
# The applets the tests and a person poking at a pod use; busybox answers to any of these names.
BUSYBOX_APPLETS = (
    "sh", "cat", "ls", "sleep", "echo", "env", "id", "ps", "grep", "sed", "head", "tail", "wc",
    "test", "true", "false", "readlink", "stat", "mkdir", "rm", "cp", "mv", "date", "hostname",
    "watch", "wget", "nc", "vi", "find", "xargs", "sort", "uniq", "tr", "cut", "sha256sum",
)  # fmt: skip


@dataclass(frozen=True)
class Entry:
    """One member of a layer: a file (from bytes or a path), a directory or a symlink."""

    name: str
    data: bytes | None = None
    source: Path | None = None
    mode: int = 0o644
    link: str | None = None
    directory: bool = False


def _layer(entries: Iterable[Entry]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
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
                data = (
                    e.data if e.data is not None else (e.source or Path("/dev/null")).read_bytes()
                )
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _blob(tar: tarfile.TarFile, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest[7:]}")
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))
    return digest


def _json(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


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
    """Write an OCI image layout tar holding one image named `ref` (e.g. `registry/name:tag`)."""
    layer = _layer(entries)
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config: dict[str, Any] = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": list(env)},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    if entrypoint:
        config["config"]["Entrypoint"] = list(entrypoint)
    if cmd:
        config["config"]["Cmd"] = list(cmd)
    if user:
        config["config"]["User"] = user
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        config_bytes = _json(config)
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": _blob(tar, config_bytes),
                "size": len(config_bytes),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": _blob(tar, layer),
                    "size": len(layer),
                }
            ],
        }
        manifest_bytes = _json(manifest)
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": manifest["mediaType"],
                    "digest": _blob(tar, manifest_bytes),
                    "size": len(manifest_bytes),
                    "platform": {"architecture": "amd64", "os": "linux"},
                    "annotations": {
                        "io.containerd.image.name": ref,
                        "org.opencontainers.image.ref.name": ref.rpartition(":")[2],
                    },
                }
            ],
        }
        for name, data in (("oci-layout", _json({"imageLayoutVersion": "1.0.0"})),
                           ("index.json", _json(index))):  # fmt: skip
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
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
