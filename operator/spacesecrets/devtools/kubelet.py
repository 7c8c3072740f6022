"""A kubelet-like atomic writer for projected volumes (test support, standard library only).

The test suites have no kubelet, yet the flow-side readers must cope with the way kubelet updates
a Secret or ConfigMap volume while a pod reads it. :func:`write_projection` reproduces the steps
of kubelet's ``AtomicWriter`` (``pkg/volume/util/atomic_writer.go``) on a local directory:

1. the files are written into a new hidden directory named after the UTC time,
   ``..2026_11_29_12_00_00.123456789``;
2. a symlink ``..data_tmp`` pointing at that directory is renamed over ``..data``, so readers
   switch from the complete old version to the complete new one in a single step;
3. each user-visible name in the volume root is a symlink ``NAME -> ..data/NAME``, created once
   and then left alone (it follows ``..data``);
4. names that left the payload lose their symlink, and the old timestamped directory is removed.

As in kubelet, a payload identical to what is already published writes nothing.

Layer: pure standard library, no Kubernetes; used by tests and local development tools.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Mapping
from pathlib import Path

__all__ = ["DATA_DIR_NAME", "DATA_TMP_NAME", "write_projection"]

DATA_DIR_NAME = "..data"
DATA_TMP_NAME = "..data_tmp"

_DEFAULT_FILE_MODE = 0o644
_DIR_MODE = 0o755


def write_projection(
    directory: Path, files: Mapping[str, bytes], *, mode: int = _DEFAULT_FILE_MODE
) -> None:
    """Publish ``files`` (name -> content) in ``directory`` the way kubelet updates a volume.

    ``directory`` is created if needed. Names are plain file names (Secret and ConfigMap keys
    cannot contain ``/``) and may not start with ``..``, which kubelet reserves for itself.
    Readers that resolve ``..data`` once and read every file from the resolved directory always
    see one complete version.
    """
    for name in files:
        _validate_name(name)
    directory.mkdir(parents=True, exist_ok=True)
    data_link = directory / DATA_DIR_NAME

    old_dir_name = _read_data_link(data_link)
    old_names = _published_names(directory / old_dir_name) if old_dir_name else set()
    names_to_remove = old_names - set(files)

    should_write = old_dir_name is None or not _same_payload(directory / old_dir_name, files)
    if should_write:
        new_dir = _make_timestamped_dir(directory)
        for name, content in files.items():
            path = new_dir / name
            path.write_bytes(content)
            path.chmod(mode)
        tmp_link = directory / DATA_TMP_NAME
        # A writer that died between symlink and rename leaves ..data_tmp behind; kubelet
        # removes it too rather than failing forever.
        if tmp_link.is_symlink() or tmp_link.exists():
            tmp_link.unlink()
        # Relative target, as kubelet does, so the volume can be mounted anywhere.
        os.symlink(new_dir.name, tmp_link)
        os.replace(tmp_link, data_link)

    for name in files:
        visible = directory / name
        if not visible.is_symlink() and not visible.exists():
            os.symlink(f"{DATA_DIR_NAME}/{name}", visible)

    for name in names_to_remove:
        visible = directory / name
        if visible.is_symlink():
            visible.unlink()

    if should_write and old_dir_name is not None:
        _remove_tree(directory / old_dir_name)


def _validate_name(name: str) -> None:
    if not name or "/" in name or "\0" in name or name.startswith(".."):
        raise ValueError(f"invalid projected file name: {name!r}")


def _read_data_link(data_link: Path) -> str | None:
    try:
        return os.readlink(data_link)
    except FileNotFoundError:
        return None


def _published_names(data_dir: Path) -> set[str]:
    try:
        return {entry.name for entry in os.scandir(data_dir) if entry.is_file()}
    except FileNotFoundError:
        return set()


def _same_payload(data_dir: Path, files: Mapping[str, bytes]) -> bool:
    if _published_names(data_dir) != set(files):
        return False
    for name, content in files.items():
        try:
            if (data_dir / name).read_bytes() != content:
                return False
        except FileNotFoundError:
            return False
    return True


def _make_timestamped_dir(directory: Path) -> Path:
    # Kubelet uses MkdirTemp with a "..2006_01_02_15_04_05." prefix: the random suffix keeps
    # names unique when several writes happen within one second.
    prefix = time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime())
    while True:
        candidate = directory / f"{prefix}{secrets.randbelow(10**9):09d}"
        try:
            candidate.mkdir(mode=0o700)
        except FileExistsError:
            continue
        candidate.chmod(_DIR_MODE)
        return candidate


def _remove_tree(path: Path) -> None:
    try:
        entries = list(os.scandir(path))
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            _remove_tree(Path(entry.path))
        else:
            os.unlink(entry.path)
    os.rmdir(path)
