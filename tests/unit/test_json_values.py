"""A JSON value a flow can read: the one check the operator and the CLI share (pure, no cluster)."""

from __future__ import annotations

import datetime as dt

import pytest

from spacesecrets.core import crypto, versions
from spacesecrets.core.settings import MAX_JSON_DEPTH

NOW = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)
MARKER = "hunter2-marker"


def nested(depth: int) -> str:
    return "[" * depth + f'"{MARKER}"' + "]" * depth


@pytest.mark.parametrize(
    ("text", "constant"),
    [
        ('{"a": NaN, "b": "' + MARKER + '"}', "NaN"),
        (f'["{MARKER}", Infinity]', "Infinity"),
        (f'{{"{MARKER}": -Infinity}}', "-Infinity"),
    ],
)
def test_nan_and_infinity_are_refused(text: str, constant: str) -> None:
    with pytest.raises(versions.JSONValueError) as caught:
        versions.check_json("PRODUCT_A_CONFIG", text)
    assert str(caught.value) == (
        f"PRODUCT_A_CONFIG: JSON value is not valid for flows: {constant} is not allowed"
    )
    assert caught.value.key == "PRODUCT_A_CONFIG"
    assert MARKER not in str(caught.value)


def test_a_number_that_overflows_to_infinity_is_refused() -> None:
    """Python reads 1e400 as inf, which the projection would write out as Infinity."""
    with pytest.raises(versions.JSONValueError, match="would be Infinity"):
        versions.check_json("K", '{"n": 1e400}')


def test_an_integer_over_the_digit_limit_is_a_clear_error() -> None:
    with pytest.raises(versions.JSONValueError, match="too many digits"):
        versions.check_json("K", "1" * 5000)


def test_the_limit_is_32() -> None:
    assert MAX_JSON_DEPTH == 32


def test_depth_counts_arrays_and_objects_and_a_scalar_is_zero() -> None:
    assert versions.json_depth('"x"') == 0
    assert versions.json_depth("3") == 0
    assert versions.json_depth("[]") == 1
    assert versions.json_depth('{"a": [1, {"b": []}], "c": {}}') == 4
    # brackets inside strings, escaped quotes included, are text
    assert versions.json_depth(r'["[[[{{\"]]]", "\\"]') == 1


def test_depth_32_is_accepted() -> None:
    assert versions.check_json("K", nested(MAX_JSON_DEPTH)) is not None
    mixed = '{"a": ' * 16 + "[" * 16 + "1" + "]" * 16 + "}" * 16
    assert versions.json_depth(mixed) == 32
    versions.check_json("K", mixed)


def test_depth_33_is_refused_naming_the_key() -> None:
    with pytest.raises(versions.JSONValueError) as caught:
        versions.check_json("DEEP", nested(MAX_JSON_DEPTH + 1))
    assert str(caught.value) == (
        "DEEP: JSON value is not valid for flows: nests 33 levels deep; the limit is 32"
    )
    assert MARKER not in str(caught.value)


@pytest.mark.parametrize("closed", [True, False], ids=["balanced", "unclosed"])
def test_100000_deep_is_refused_cleanly(closed: bool) -> None:
    """No RecursionError: the depth is measured by a scan before any parser recurses."""
    text = nested(100_000) if closed else "[" * 100_000
    with pytest.raises(versions.JSONValueError, match="nests 100000 levels deep; the limit is 32"):
        versions.check_json("DEEP", text)


def test_an_unterminated_string_full_of_escaped_quotes_scans_in_linear_time() -> None:
    """Every escaped quote could start a new string match; the scan must not retry each."""
    text = '"' + '\\"' * 200_000
    assert versions.json_depth(text) == 0
    with pytest.raises(versions.JSONValueError, match="syntax error at line 1"):
        versions.check_json("K", text)


def test_a_syntax_error_gives_a_position_not_the_text() -> None:
    with pytest.raises(versions.JSONValueError) as caught:
        versions.check_json("K", f'{{"a": {MARKER}}}')
    assert str(caught.value) == (
        "K: JSON value is not valid for flows: syntax error at line 1, column 7"
    )


def test_valid_json_is_returned_parsed() -> None:
    assert versions.check_json("K", '{"retries": 3, "ratio": 0.5, "on": true, "x": null}') == {
        "retries": 3,
        "ratio": 0.5,
        "on": True,
        "x": None,
    }


@pytest.mark.parametrize(
    ("value", "cause"),
    [
        (b'{"a": NaN}', "NaN is not allowed"),
        (b"[-Infinity]", "-Infinity is not allowed"),
        (nested(40).encode(), "nests 40 levels deep; the limit is 32"),
        (b"[" * 60_000, "nests 60000 levels deep; the limit is 32"),
    ],
    ids=["nan", "minus-infinity", "40-deep", "60000-deep"],
)
def test_the_operator_refuses_them_as_invalid_json(value: bytes, cause: str) -> None:
    ring = crypto.KeyRing.create(NOW)
    data = {
        "CONF": {
            "format": "json",
            "sealed": crypto.seal(ring.current.public, "ns", "CONF", "json", value),
        },
        "OK": {
            "format": "json",
            "sealed": crypto.seal(ring.current.public, "ns", "OK", "json", b"[1]"),
        },
    }
    plain, errors = versions.open_spec(ring, "ns", data)
    assert [(e.key, e.reason) for e in errors] == [("CONF", versions.INVALID_JSON)]
    assert errors[0].message == f"CONF: JSON value is not valid for flows: {cause}"
    assert MARKER not in errors[0].message
    assert sorted(plain) == ["OK"]
