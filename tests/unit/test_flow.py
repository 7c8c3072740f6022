"""The flow-side reader: consistent reads during kubelet swaps, last good kept, refresher."""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spacesecrets.devtools.kubelet import write_projection
from spacesecrets.flow import (
    FlowSecrets,
    SecretsUnavailableError,
    parse_autosync,
)

SECRET_VALUE = "s3cr3t-value-never-shown"


def documents(version: int, **extra: Any) -> dict[str, bytes]:
    """Both documents of one version; SECRETS carries the version too, to detect mixes."""
    secrets: dict[str, Any] = {
        "V": version,
        "A_KEY": f"{SECRET_VALUE}-{version}",
        "A_CONFIG": {"retries": version, "pad": "x" * (version % 97)},
    }
    metadata: dict[str, Any] = {
        "space": "team-a",
        "version": version,
        "createdAt": "2026-11-29T12:00:00Z",
        "updatedAt": "2026-11-29T12:00:00Z",
        "issuedAt": "2026-11-29T12:00:00Z",
        "autosync": "1m",
        "syncOnSave": True,
        "keys": {
            "V": {"format": "json", "version": version, "updatedAt": "2026-11-29T12:00:00Z"},
            "A_KEY": {"format": "text", "version": version, "updatedAt": "2026-11-29T12:00:00Z"},
            "A_CONFIG": {"format": "json", "version": 1, "updatedAt": "2026-11-29T12:00:00Z"},
        },
    }
    metadata.update(extra)
    return {
        "SECRETS": json.dumps(secrets).encode(),
        "SECRETS_METADATA": json.dumps(metadata).encode(),
    }


def write_version(volume: Path, version: int, **extra: Any) -> None:
    write_projection(volume, documents(version, **extra))


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    path = tmp_path / "etc-spacesecrets"
    write_version(path, 1)
    return path


@pytest.fixture
def reader(volume: Path) -> Iterator[FlowSecrets]:
    with FlowSecrets(volume, background=False) as flow_secrets:
        yield flow_secrets


# -- reading ----------------------------------------------------------------------------------


def test_reads_both_documents(reader: FlowSecrets) -> None:
    assert reader.error is None
    assert reader.version == 1
    assert reader["A_KEY"] == f"{SECRET_VALUE}-1"
    assert reader["A_CONFIG"] == {"retries": 1, "pad": "x"}
    assert reader.get("MISSING", "default") == "default"
    assert "A_KEY" in reader
    assert sorted(reader) == ["A_CONFIG", "A_KEY", "V"]
    assert len(reader) == 3
    assert reader.metadata["space"] == "team-a"
    assert reader.metadata["keys"]["A_KEY"]["format"] == "text"
    with pytest.raises(KeyError):
        reader["MISSING"]


def test_values_handed_out_are_copies(reader: FlowSecrets) -> None:
    reader["A_CONFIG"]["retries"] = 99
    reader.metadata["version"] = 99
    assert reader["A_CONFIG"]["retries"] == 1
    assert reader.version == 1
    snapshot = reader.snapshot()
    assert snapshot.version == 1
    assert snapshot.secrets["V"] == snapshot.metadata["version"]


def test_repr_shows_keys_and_version_never_values(reader: FlowSecrets) -> None:
    text = repr(reader)
    assert "A_KEY" in text
    assert "version=1" in text
    assert SECRET_VALUE not in text
    assert "retries" not in text
    snapshot_text = repr(reader.snapshot())
    assert "A_KEY" in snapshot_text
    assert SECRET_VALUE not in snapshot_text


def test_a_plain_directory_without_kubelet_layout_is_readable(tmp_path: Path) -> None:
    for name, content in documents(4).items():
        (tmp_path / name).write_bytes(content)
    with FlowSecrets(tmp_path, background=False) as flow_secrets:
        assert flow_secrets.error is None
        assert flow_secrets.version == 4


def test_refresh_reports_whether_documents_changed(volume: Path, reader: FlowSecrets) -> None:
    assert reader.refresh() is False
    write_version(volume, 2)
    assert reader.refresh() is True
    assert reader.version == 2
    assert reader["A_KEY"] == f"{SECRET_VALUE}-2"
    assert reader.refresh() is False


# -- the race: never a mix of two versions -----------------------------------------------------


def test_reader_never_sees_a_mix_of_versions_while_kubelet_swaps(volume: Path) -> None:
    versions = 2000
    mismatches: list[tuple[Any, Any]] = []
    unexpected_errors: set[str] = set()
    seen_versions: set[int] = set()
    writer_done = threading.Event()
    failures: list[BaseException] = []

    def writer() -> None:
        try:
            for version in range(2, versions + 2):
                write_version(volume, version)
        except BaseException as exc:  # surfaced by the main thread
            failures.append(exc)
        finally:
            writer_done.set()

    def reader_loop(flow_secrets: FlowSecrets) -> None:
        try:
            # Bounded: stops with the writer, or after a generous number of reads.
            for _ in range(200_000):
                if writer_done.is_set():
                    break
                flow_secrets.refresh()
                error = flow_secrets.error
                # The only acceptable failure is giving up under constant churn: a missing or
                # corrupt file here would mean a half-swapped volume leaked through.
                if error is not None and "kept changing" not in error:
                    unexpected_errors.add(error)
                snapshot = flow_secrets.snapshot()
                if snapshot.secrets["V"] != snapshot.metadata["version"]:
                    mismatches.append((snapshot.secrets["V"], snapshot.metadata["version"]))
                if snapshot.secrets["A_KEY"] != f"{SECRET_VALUE}-{snapshot.version}":
                    mismatches.append(("A_KEY", snapshot.version))
                seen_versions.add(snapshot.version)
        except BaseException as exc:
            failures.append(exc)

    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # interleave the threads as often as the interpreter allows
    try:
        with FlowSecrets(volume, background=False) as flow_secrets:
            readers = [threading.Thread(target=reader_loop, args=(flow_secrets,)) for _ in range(2)]
            writer_thread = threading.Thread(target=writer)
            for thread in readers:
                thread.start()
            writer_thread.start()
            writer_thread.join(timeout=120)
            for thread in readers:
                thread.join(timeout=120)
            assert not writer_thread.is_alive()
            assert not any(thread.is_alive() for thread in readers)
            flow_secrets.refresh()
            assert flow_secrets.version == versions + 1
    finally:
        sys.setswitchinterval(old_interval)

    assert not failures, failures
    assert mismatches == []
    assert unexpected_errors == set()
    # The readers really raced the writer: they saw many versions, not just the first and last.
    assert len(seen_versions) > 20, len(seen_versions)


# -- bad documents: error reported, last good kept ---------------------------------------------


def test_missing_directory_reports_error_and_recovers(tmp_path: Path) -> None:
    volume = tmp_path / "not-yet"
    with FlowSecrets(volume, background=False) as flow_secrets:
        assert flow_secrets.version is None
        assert flow_secrets.error is not None
        assert "does not exist" in flow_secrets.error
        assert flow_secrets.get("A_KEY") is None
        assert "A_KEY" not in flow_secrets
        assert list(flow_secrets) == []
        with pytest.raises(SecretsUnavailableError, match="does not exist"):
            flow_secrets["A_KEY"]
        with pytest.raises(SecretsUnavailableError):
            _ = flow_secrets.metadata

        write_version(volume, 1)
        assert flow_secrets.refresh() is True
        assert flow_secrets.error is None
        assert flow_secrets.version == 1


@pytest.mark.parametrize("missing", ["SECRETS", "SECRETS_METADATA"])
def test_missing_file_reports_error_and_keeps_last_good(
    volume: Path, reader: FlowSecrets, missing: str
) -> None:
    payload = documents(2)
    del payload[missing]
    write_projection(volume, payload)

    assert reader.refresh() is False
    assert reader.error == f"{missing} is missing"
    assert reader.version == 1
    assert reader["A_KEY"] == f"{SECRET_VALUE}-1"


def test_truncated_file_reports_error_and_keeps_last_good(
    volume: Path, reader: FlowSecrets, caplog: pytest.LogCaptureFixture
) -> None:
    payload = documents(2)
    payload["SECRETS"] = payload["SECRETS"][: len(payload["SECRETS"]) // 2]
    assert SECRET_VALUE.encode() in payload["SECRETS"]  # the corrupt text holds a value
    caplog.set_level(logging.DEBUG)
    write_projection(volume, payload)

    assert reader.refresh() is False
    assert reader.error is not None
    assert reader.error.startswith("SECRETS is not valid JSON")
    assert reader.version == 1
    assert reader["A_KEY"] == f"{SECRET_VALUE}-1"
    assert SECRET_VALUE not in reader.error
    assert SECRET_VALUE not in repr(reader)
    assert "SECRETS is not valid JSON" in caplog.text
    assert SECRET_VALUE not in caplog.text


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("SECRETS", b"", "SECRETS is empty"),
        ("SECRETS", b"\xff\xfe{}", "SECRETS is not valid UTF-8"),
        ("SECRETS", b'["A_KEY"]', "SECRETS is not a JSON object"),
        ("SECRETS", b'"just a string"', "SECRETS is not a JSON object"),
        ("SECRETS_METADATA", b"null", "SECRETS_METADATA is not a JSON object"),
        ("SECRETS_METADATA", b'{"space": "team-a"}', "SECRETS_METADATA has no integer version"),
        ("SECRETS_METADATA", b'{"version": "7"}', "SECRETS_METADATA has no integer version"),
        ("SECRETS_METADATA", b'{"version": true}', "SECRETS_METADATA has no integer version"),
        ("SECRETS_METADATA", b'{"version": 0}', "SECRETS_METADATA version must be at least 1"),
        (
            "SECRETS_METADATA",
            b'{"version": 2, "keys": []}',
            "SECRETS_METADATA field keys is not an object of objects",
        ),
        (
            "SECRETS_METADATA",
            b'{"version": 2, "autosync": 60}',
            "SECRETS_METADATA field autosync is not a string",
        ),
        (
            "SECRETS_METADATA",
            b'{"version": 2, "syncOnSave": "yes"}',
            "SECRETS_METADATA field syncOnSave is not a boolean",
        ),
    ],
)
def test_wrong_types_report_error_and_keep_last_good(
    volume: Path, reader: FlowSecrets, name: str, content: bytes, expected: str
) -> None:
    payload = documents(2)
    payload[name] = content
    write_projection(volume, payload)

    assert reader.refresh() is False
    assert reader.error == expected
    assert reader.version == 1
    assert reader["A_KEY"] == f"{SECRET_VALUE}-1"


def test_error_clears_when_good_documents_return(volume: Path, reader: FlowSecrets) -> None:
    write_projection(volume, {"SECRETS": b"{", "SECRETS_METADATA": b"{}"})
    reader.refresh()
    assert reader.error is not None

    write_version(volume, 3)
    assert reader.refresh() is True
    assert reader.error is None
    assert reader.version == 3


# -- change callbacks --------------------------------------------------------------------------


def test_change_callback_fires_once_per_new_version(volume: Path, reader: FlowSecrets) -> None:
    calls: list[int | None] = []
    reader.on_change(lambda flow_secrets: calls.append(flow_secrets.version))

    write_version(volume, 2)
    reader.refresh()
    reader.refresh()
    write_version(volume, 2)  # identical payload: kubelet writes nothing
    reader.refresh()
    write_projection(volume, {"SECRETS": b"{broken", "SECRETS_METADATA": b"{}"})
    reader.refresh()
    write_version(volume, 3)
    reader.refresh()
    reader.refresh()

    assert calls == [2, 3]


def test_a_failing_callback_does_not_stop_others_nor_leak_values(
    volume: Path, reader: FlowSecrets, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[int | None] = []

    def broken(flow_secrets: FlowSecrets) -> None:
        raise RuntimeError(flow_secrets["A_KEY"])

    reader.on_change(broken)
    reader.on_change(lambda flow_secrets: seen.append(flow_secrets.version))
    caplog.set_level(logging.DEBUG)

    write_version(volume, 2)
    assert reader.refresh() is True

    assert seen == [2]
    assert "RuntimeError" in caplog.text
    assert SECRET_VALUE not in caplog.text


# -- background refresher ----------------------------------------------------------------------


def test_refresher_picks_up_a_swap_long_before_the_interval(volume: Path) -> None:
    reached = threading.Event()
    with FlowSecrets(volume, autosync="24h", poll_interval=0.05) as flow_secrets:

        @flow_secrets.on_change
        def on_version(changed: FlowSecrets) -> None:
            if changed.version == 2:
                reached.set()

        write_version(volume, 2)
        assert reached.wait(timeout=10), "the ..data swap was not noticed"
        assert flow_secrets["A_KEY"] == f"{SECRET_VALUE}-2"


def test_refresher_reads_on_the_autosync_tick(tmp_path: Path) -> None:
    # A plain directory rewritten in place and a link poll that would take an hour: only the
    # autosync tick (a float override, as tests use) can bring version 2 in.
    for name, content in documents(1).items():
        (tmp_path / name).write_bytes(content)
    reached = threading.Event()
    with FlowSecrets(tmp_path, autosync=0.05, poll_interval=3600) as flow_secrets:

        @flow_secrets.on_change
        def on_version(changed: FlowSecrets) -> None:
            if changed.version == 2:
                reached.set()

        for name, content in documents(2).items():
            (tmp_path / name).write_bytes(content)
        assert reached.wait(timeout=10), "the autosync tick did not refresh"


def test_close_stops_the_refresher(volume: Path) -> None:
    flow_secrets = FlowSecrets(volume, autosync=0.01, poll_interval=0.01)
    thread = flow_secrets._thread
    assert thread is not None
    assert thread.is_alive()
    flow_secrets.close()
    assert not thread.is_alive()
    assert flow_secrets.version == 1  # still readable after close


def test_autosync_interval_comes_from_metadata_unless_overridden(tmp_path: Path) -> None:
    write_version(tmp_path, 1, autosync="30m")
    with FlowSecrets(tmp_path, background=False) as flow_secrets:
        assert flow_secrets.autosync_seconds == 1800
    with FlowSecrets(tmp_path, autosync="12h", background=False) as flow_secrets:
        assert flow_secrets.autosync_seconds == 12 * 3600


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("1m", 60), ("30m", 1800), ("60m", 3600), ("12h", 43200), ("24h", 86400), (0.5, 0.5)],
)
def test_parse_autosync_accepts_the_choices_and_seconds(value: str | float, seconds: float) -> None:
    assert parse_autosync(value) == seconds


@pytest.mark.parametrize("value", ["5m", "1h", "", 0, -1.0, float("nan"), float("inf"), True])
def test_parse_autosync_rejects_anything_else(value: str | float) -> None:
    with pytest.raises(ValueError, match="autosync"):
        parse_autosync(value)
