"""Version semantics of a space, on the pure core."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from spacesecrets.core import crypto, versions
from spacesecrets.core.versions import Value

NOW = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def ring() -> crypto.KeyRing:
    return crypto.KeyRing.create(NOW)


def seal(ring: crypto.KeyRing, values: dict[str, tuple[str, bytes]], ns: str = "ns") -> dict:
    return {
        k: {"format": f, "sealed": crypto.seal(ring.current.public, ns, k, f, v)}
        for k, (f, v) in values.items()
    }


def test_open_spec_accepts_text_and_json(ring: crypto.KeyRing) -> None:
    plain, errors = versions.open_spec(
        ring,
        "ns",
        seal(ring, {"HOST": ("text", b"api.example.com"), "CONF": ("json", b'{"retries": 3}')}),
    )
    assert errors == []
    assert plain["HOST"].projected() == "api.example.com"
    assert plain["CONF"].projected() == {"retries": 3}


def test_errors_name_the_key_never_the_value(ring: crypto.KeyRing) -> None:
    data = seal(ring, {"BAD_JSON": ("json", b"{not json: hunter2"), "OK": ("text", b"fine")})
    data["MOVED"] = seal(ring, {"MOVED": ("text", b"hunter2")}, ns="elsewhere")["MOVED"]
    data["BIG"] = seal(ring, {"BIG": ("text", b"x" * (versions.MAX_VALUE_BYTES + 1))})["BIG"]
    plain, errors = versions.open_spec(ring, "ns", data)
    by_key = {e.key: e for e in errors}
    assert set(by_key) == {"BAD_JSON", "MOVED", "BIG"}
    assert by_key["BAD_JSON"].reason == versions.INVALID_JSON
    assert by_key["MOVED"].reason == crypto.CANNOT_OPEN
    assert by_key["BIG"].reason == versions.TOO_LARGE
    for e in errors:
        assert e.key in e.message
        assert "hunter2" not in e.message
    assert "hunter2" not in repr(plain)


def test_total_size_limit(ring: crypto.KeyRing) -> None:
    chunk = b"y" * (versions.MAX_VALUE_BYTES - 10)
    count = versions.MAX_TOTAL_BYTES // len(chunk) + 1
    _, errors = versions.open_spec(
        ring, "ns", seal(ring, {f"K{i}": ("text", chunk) for i in range(count)})
    )
    assert [e.reason for e in errors] == [versions.TOO_LARGE]


def plain_of(**values: str) -> versions.Plain:
    return {k: Value("text", v.encode()) for k, v in values.items()}


def test_add_edit_remove_each_bump_once(ring: crypto.KeyRing) -> None:
    h = versions.History.new(ring, "ns")
    c1 = versions.record(h, ring, plain_of(A="1"), "t1", 20)
    assert c1 is not None and (c1.version, c1.added) == (1, ["A"])
    assert versions.record(h, ring, plain_of(A="1"), "t2", 20) is None
    c2 = versions.record(h, ring, plain_of(A="1", B="2"), "t3", 20)
    assert c2 is not None and (c2.version, c2.added, c2.changed) == (2, ["B"], [])
    c3 = versions.record(h, ring, plain_of(A="changed", B="2"), "t4", 20)
    assert c3 is not None and (c3.version, c3.changed) == (3, ["A"])
    c4 = versions.record(h, ring, plain_of(A="changed"), "t5", 20)
    assert c4 is not None and (c4.version, c4.removed) == (4, ["B"])
    status = versions.status_fields(h, [])
    assert status["version"] == 4
    assert status["createdAt"] == "t1" and status["updatedAt"] == "t5"
    assert {k["name"]: k["version"] for k in status["keys"]} == {"A": 3}
    assert [e["version"] for e in status["history"]] == [4, 3, 2, 1]


def test_format_change_is_a_change(ring: crypto.KeyRing) -> None:
    h = versions.History.new(ring, "ns")
    versions.record(h, ring, {"A": Value("text", b"1")}, "t1", 20)
    change = versions.record(h, ring, {"A": Value("json", b"1")}, "t2", 20)
    assert change is not None and change.changed == ["A"]


def test_history_holds_no_plaintext_and_reads_back(ring: crypto.KeyRing) -> None:
    h = versions.History.new(ring, "ns")
    versions.record(h, ring, plain_of(PASSWORD="correct-horse"), "t1", 20)
    versions.record(h, ring, plain_of(PASSWORD="battery-staple"), "t2", 20)
    stored = json.dumps(h.to_data())
    assert "correct-horse" not in stored and "battery-staple" not in stored
    again = versions.History.from_data("ns", h.to_data())
    assert again.values(ring, 1)["PASSWORD"].data == b"correct-horse"
    assert again.values(ring)["PASSWORD"].data == b"battery-staple"


def test_versions_never_reused_after_rollback(ring: crypto.KeyRing) -> None:
    h = versions.History.new(ring, "ns")
    versions.record(h, ring, plain_of(A="1"), "t1", 20)
    versions.record(h, ring, plain_of(A="2"), "t2", 20)
    restored = h.values(ring, 1)
    change = versions.record(h, ring, restored, "t3", 20, rollback_of=1)
    assert change is not None and change.version == 3
    assert h.index["versions"][0]["rollbackOf"] == 1


def test_retention_keeps_limit_and_current(ring: crypto.KeyRing) -> None:
    h = versions.History.new(ring, "ns")
    for i in range(1, 8):
        versions.record(h, ring, plain_of(A=str(i)), f"t{i}", 3)
    assert h.kept_versions() == [5, 6, 7]
    assert [v["version"] for v in h.index["versions"]] == [7, 6, 5]
    assert h.version == 7


def test_retention_respects_byte_budget(ring: crypto.KeyRing) -> None:
    h = versions.History.new(ring, "ns")
    big = "z" * 60_000
    for i in range(1, 6):
        versions.record(h, ring, plain_of(A=big + str(i)), f"t{i}", 20)
        versions.prune(h, 20, budget=200_000)
    assert h.version == 5
    assert 5 in h.kept_versions()
    assert len(h.kept_versions()) < 5


def test_diff_is_by_key_name() -> None:
    assert versions.diff({"A": "1", "B": "2"}, {"B": "3", "C": "4"}) == (["C"], ["B"], ["A"])
