"""`spacesecrets seal` and `set --json` with values a flow cannot read, offline: the public key
comes from a PEM file, so no cluster is needed. Every refusal is one line naming the key, never
the value, a non-zero exit and no traceback."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from spacesecrets.cli import main
from spacesecrets.core import crypto

NOW = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)
NS = "team-a"
MARKER = "aGlkZGVuLW1hcmtlcg=="  # base64 of "hidden-marker": the value no message may show


@pytest.fixture(scope="module")
def ring() -> crypto.KeyRing:
    return crypto.KeyRing.create(NOW)


@pytest.fixture
def pem(ring: crypto.KeyRing, tmp_path: Path) -> Path:
    path = tmp_path / "spacesecrets.pem"
    path.write_text(crypto.public_key_pem(ring.current.public))
    return path


@pytest.fixture
def nowhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kubeconfig that points nowhere (restored afterwards: `main` exports KUBECONFIG)."""
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")


def seal(pem: Path, text: str, input_format: str = "yaml") -> Result:
    args = ["seal", "-", "-n", NS, "--owner", "User:a", "--cert", str(pem)]
    return CliRunner().invoke(main, [*args, "--format", input_format], input=text)


def opened(ring: crypto.KeyRing, result: Result) -> dict[str, tuple[str, str]]:
    """KEY -> (format, plaintext) of a sealed manifest."""
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = yaml.safe_load(result.stdout)["spec"]["data"]
    return {
        k: (e["format"], ring.unseal(NS, k, e["format"], e["sealed"]).decode())
        for k, e in data.items()
    }


def refused(result: Result) -> str:
    """The one error line of a refused input."""
    assert result.exit_code != 0
    # CliRunner keeps an uncaught exception here instead of printing its traceback
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert MARKER not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0].removeprefix("Error: ")


def test_a_date_is_sealed_as_its_iso_text(ring: crypto.KeyRing, pem: Path) -> None:
    result = seal(
        pem,
        "EXPIRES: 2026-01-01\n"
        "ROTATED_AT: 2026-01-01T10:30:00Z\n"
        "LOCAL_AT: 2026-01-01 10:30:00\n"
        "QUOTED: '2026-01-01'\n"
        "EXPLICIT: {format: text, value: 2026-02-03}\n",
    )
    assert opened(ring, result) == {
        "EXPIRES": ("text", "2026-01-01"),
        "ROTATED_AT": ("text", "2026-01-01T10:30:00+00:00"),
        "LOCAL_AT": ("text", "2026-01-01T10:30:00"),
        "QUOTED": ("text", "2026-01-01"),
        "EXPLICIT": ("text", "2026-02-03"),
    }


def test_dates_inside_a_json_value_become_iso_strings(ring: crypto.KeyRing, pem: Path) -> None:
    result = seal(
        pem,
        "CONF: {expires: 2026-01-01, windows: [2026-01-02T00:00:00Z], 2026-03-04: day}\n"
        "EXPLICIT: {format: json, value: {at: 2026-05-06}}\n",
    )
    values = opened(ring, result)
    assert values["CONF"][0] == "json"
    assert json.loads(values["CONF"][1]) == {
        "expires": "2026-01-01",
        "windows": ["2026-01-02T00:00:00+00:00"],
        "2026-03-04": "day",
    }
    assert values["EXPLICIT"] == ("json", '{"at": "2026-05-06"}')


def test_an_env_file_is_unaffected(ring: crypto.KeyRing, pem: Path) -> None:
    result = seal(pem, "EXPIRES=2026-01-01\nRATIO=NaN\n", input_format="env")
    assert opened(ring, result) == {"EXPIRES": ("text", "2026-01-01"), "RATIO": ("text", "NaN")}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            f"BLOB: !!binary {MARKER}\n",
            "BLOB: a YAML !!binary value cannot be sealed; give binary data as base64 text",
        ),
        (
            f"CONF: {{key: !!binary {MARKER}}}\n",
            "CONF: a YAML !!binary value cannot be sealed; give binary data as base64 text",
        ),
        (
            f"CONF: {{format: text, value: !!binary {MARKER}}}\n",
            "CONF: a YAML !!binary value cannot be sealed; give binary data as base64 text",
        ),
        (
            f"CONF: {{? !!binary {MARKER} : x}}\n",
            "CONF: a YAML !!binary value cannot be sealed; give binary data as base64 text "
            "(as a mapping key)",
        ),
        (f"TAGS: !!set {{{MARKER}, b}}\n", "TAGS: a YAML !!set cannot be sealed; use a list"),
        (f"CONF: [!!set {{{MARKER}}}]\n", "CONF: a YAML !!set cannot be sealed; use a list"),
    ],
    ids=["binary", "nested-binary", "text-binary", "binary-key", "set", "nested-set"],
)
def test_yaml_types_json_has_no_form_for_are_refused(pem: Path, text: str, message: str) -> None:
    assert refused(seal(pem, text)) == message


PREFIX = "CONF: JSON value is not valid for flows: "


@pytest.mark.parametrize(
    ("text", "cause"),
    [
        (f"CONF: {{ratio: .nan, note: {MARKER}}}\n", "NaN is not allowed"),
        ("CONF: .inf\n", "Infinity is not allowed"),
        (f"CONF: [-.inf, {MARKER}]\n", "-Infinity is not allowed"),
        (
            f'CONF: {{format: json, value: \'{{"a": NaN, "b": "{MARKER}"}}\'}}\n',
            "NaN is not allowed",
        ),
        ("CONF: " + "[" * 40 + "]" * 40 + "\n", "nests 40 levels deep; the limit is 32"),
        (
            "CONF: {format: json, value: '" + "[" * 100_000 + "'}\n",
            "nests 100000 levels deep; the limit is 32",
        ),
    ],
    ids=["nan", "infinity", "minus-infinity", "explicit-nan", "40-deep", "100000-deep-text"],
)
def test_json_a_flow_cannot_parse_is_refused(pem: Path, text: str, cause: str) -> None:
    assert refused(seal(pem, text)) == PREFIX + cause


def test_depth_32_is_sealed(ring: crypto.KeyRing, pem: Path) -> None:
    result = seal(pem, "CONF: " + "[" * 32 + "]" * 32 + "\n")
    assert opened(ring, result)["CONF"] == ("json", "[" * 32 + "]" * 32)


@pytest.mark.parametrize(
    ("value", "cause"),
    [
        (b'{"a": NaN}', "NaN is not allowed"),
        (b"[Infinity]", "Infinity is not allowed"),
        (b"[" * 100_000, "nests 100000 levels deep; the limit is 32"),
    ],
    ids=["nan", "infinity", "100000-deep"],
)
def test_set_json_refuses_before_anything_leaves_the_machine(
    value: bytes, cause: str, nowhere: None
) -> None:
    """The check comes before the cluster is asked anything."""
    result = CliRunner().invoke(main, ["set", "CONF", "--json", "-n", NS], input=value)
    assert refused(result) == PREFIX + cause


def test_set_json_not_utf8_names_the_key_not_the_bytes(nowhere: None) -> None:
    result = CliRunner().invoke(main, ["set", "CONF", "--json", "-n", NS], input=b'"\xff"')
    assert refused(result) == "CONF is not UTF-8 text"
