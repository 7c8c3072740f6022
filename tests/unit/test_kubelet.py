"""The kubelet-like writer produces kubelet's projected-volume layout and update steps."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from spacesecrets.devtools.kubelet import DATA_DIR_NAME, DATA_TMP_NAME, write_projection

TIMESTAMPED = re.compile(r"^\.\.\d{4}_\d{2}_\d{2}_\d{2}_\d{2}_\d{2}\.\d{9}$")


def hidden_dirs(directory: Path) -> list[str]:
    return sorted(
        entry.name
        for entry in os.scandir(directory)
        if entry.name.startswith("..") and entry.is_dir(follow_symlinks=False)
    )


def test_first_write_creates_the_kubelet_layout(tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    write_projection(volume, {"SECRETS": b'{"A": "1"}', "SECRETS_METADATA": b'{"version": 1}'})

    data_target = os.readlink(volume / DATA_DIR_NAME)
    assert TIMESTAMPED.match(data_target), data_target
    assert not os.path.isabs(data_target)
    assert hidden_dirs(volume) == [data_target]
    assert sorted(os.listdir(volume)) == sorted(
        [DATA_DIR_NAME, data_target, "SECRETS", "SECRETS_METADATA"]
    )
    for name in ("SECRETS", "SECRETS_METADATA"):
        assert os.readlink(volume / name) == f"{DATA_DIR_NAME}/{name}"
        mode = os.stat(volume / data_target / name).st_mode
        assert stat.S_ISREG(mode)
        assert stat.S_IMODE(mode) == 0o644
    assert (volume / "SECRETS").read_bytes() == b'{"A": "1"}'
    assert (volume / "SECRETS_METADATA").read_bytes() == b'{"version": 1}'


def test_update_swaps_data_link_keeps_visible_links_and_removes_old_dir(tmp_path: Path) -> None:
    write_projection(tmp_path, {"SECRETS": b"v1", "SECRETS_METADATA": b"m1"})
    first = os.readlink(tmp_path / DATA_DIR_NAME)
    visible_inode = os.lstat(tmp_path / "SECRETS").st_ino

    write_projection(tmp_path, {"SECRETS": b"v2", "SECRETS_METADATA": b"m2"})

    second = os.readlink(tmp_path / DATA_DIR_NAME)
    assert second != first
    assert hidden_dirs(tmp_path) == [second]
    assert not (tmp_path / DATA_TMP_NAME).exists()
    assert not os.path.lexists(tmp_path / DATA_TMP_NAME)
    # The user-visible symlink is created once and follows ..data from then on.
    assert os.lstat(tmp_path / "SECRETS").st_ino == visible_inode
    assert (tmp_path / "SECRETS").read_bytes() == b"v2"
    assert (tmp_path / "SECRETS_METADATA").read_bytes() == b"m2"


def test_files_leaving_the_payload_disappear_and_new_ones_appear(tmp_path: Path) -> None:
    write_projection(tmp_path, {"SECRETS": b"s", "SECRETS_METADATA": b"m"})
    write_projection(tmp_path, {"SECRETS": b"s2", "EXTRA": b"e"})

    assert not os.path.lexists(tmp_path / "SECRETS_METADATA")
    assert os.readlink(tmp_path / "EXTRA") == f"{DATA_DIR_NAME}/EXTRA"
    assert (tmp_path / "EXTRA").read_bytes() == b"e"
    data_dir = tmp_path / os.readlink(tmp_path / DATA_DIR_NAME)
    assert sorted(os.listdir(data_dir)) == ["EXTRA", "SECRETS"]


def test_identical_payload_writes_nothing(tmp_path: Path) -> None:
    payload = {"SECRETS": b"same", "SECRETS_METADATA": b"meta"}
    write_projection(tmp_path, payload)
    before = os.readlink(tmp_path / DATA_DIR_NAME)

    write_projection(tmp_path, dict(payload))

    assert os.readlink(tmp_path / DATA_DIR_NAME) == before
    assert hidden_dirs(tmp_path) == [before]


def test_stale_data_tmp_link_from_a_crashed_writer_is_replaced(tmp_path: Path) -> None:
    os.symlink("..gone", tmp_path / DATA_TMP_NAME)

    write_projection(tmp_path, {"SECRETS": b"s"})

    assert not os.path.lexists(tmp_path / DATA_TMP_NAME)
    assert (tmp_path / "SECRETS").read_bytes() == b"s"


def test_many_quick_writes_get_unique_directories(tmp_path: Path) -> None:
    seen = set()
    for version in range(50):
        write_projection(tmp_path, {"SECRETS": str(version).encode()})
        seen.add(os.readlink(tmp_path / DATA_DIR_NAME))
        assert len(hidden_dirs(tmp_path)) == 1
    assert len(seen) == 50


def test_file_mode_can_be_chosen(tmp_path: Path) -> None:
    write_projection(tmp_path, {"SECRETS": b"s"}, mode=0o400)
    assert stat.S_IMODE(os.stat(tmp_path / "SECRETS").st_mode) == 0o400


@pytest.mark.parametrize("name", ["", "a/b", "..data", "..hidden", "x\0y"])
def test_invalid_names_are_rejected_before_writing(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="invalid projected file name"):
        write_projection(tmp_path / "v", {name: b"x"})
    assert not (tmp_path / "v").exists()
