"""Reading the values an owner seals: a YAML mapping or a `.env` file, KEY -> (format, bytes).

Pure: no cluster, no key. Values never appear in an error message; keys do.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import yaml

from spacesecrets.core import versions

MAX_INPUT_CHARS = 4 * 1024 * 1024


class _AliasError(Exception):
    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


class _PlainLoader(yaml.SafeLoader):
    """Safe YAML without aliases: values are plain data, and an alias bomb ("billion laughs")
    would otherwise expand when the value is written out as JSON."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):  # type: ignore[no-untyped-call]
            raise _AliasError(self.peek_event().start_mark.line + 1)  # type: ignore[no-untyped-call]
        return super().compose_node(parent, index)


def parse_values(text: str, filename: str) -> dict[str, tuple[str, bytes]]:
    """Plain values in: a YAML mapping (strings and dates are text, anything else JSON; or
    {format, value}) or a .env file (KEY=VALUE, text)."""
    if filename.endswith(".env") or filename == ".env":
        return _parse_env(text, filename)
    if len(text) > MAX_INPUT_CHARS:
        raise ValueError(f"{filename} is over {MAX_INPUT_CHARS} characters")
    try:
        doc = yaml.load(text, Loader=_PlainLoader)  # noqa: S506 -- a SafeLoader, aliases refused
    except _AliasError as exc:
        raise ValueError(f"{filename} uses a YAML alias at line {exc.line}: not accepted") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ValueError(f"{filename} is not valid YAML{where}") from None
    except RecursionError:
        raise ValueError(f"{filename} is nested too deeply") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{filename} must be a mapping of KEY: value")
    return {_check_key(str(raw)): _entry(_check_key(str(raw)), value) for raw, value in doc.items()}


def _entry(key: str, value: Any) -> tuple[str, bytes]:
    """One YAML value as (format, bytes): strings and dates are text, anything else JSON, or
    an explicit {format, value}."""
    if isinstance(value, dict) and set(value) == {"format", "value"}:
        fmt = str(value["format"])
        if fmt not in ("text", "json"):
            raise ValueError(f"{key}: format must be text or json")
        raw = value["value"]
        if fmt == "text":
            return fmt, _text(key, raw).encode()
        data = raw if isinstance(raw, str) else _json_text(key, raw)
    elif isinstance(value, str | dt.date):
        return "text", _text(key, value).encode()
    else:
        fmt, data = "json", _json_text(key, value)
    versions.check_json(key, data)
    return fmt, data.encode()


def _parse_env(text: str, filename: str) -> dict[str, tuple[str, bytes]]:
    out: dict[str, tuple[str, bytes]] = {}
    for n, raw_line in enumerate(text.splitlines(), 1):
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").lstrip()
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"{filename}:{n}: expected KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[_check_key(key.strip())] = ("text", value.encode())
    return out


def _text(key: str, value: Any) -> str:
    """A YAML scalar as a text value: a date or timestamp as its ISO 8601 text."""
    if isinstance(value, dt.date):  # a datetime is a date too
        return value.isoformat()
    if isinstance(value, bytes | set):
        raise ValueError(f"{key}: {_not_json(value)}")
    return str(value)


def _json_text(key: str, value: Any) -> str:
    """A YAML value as JSON text. Dates and timestamps, wherever they are, become ISO 8601
    strings; types JSON has no form for are refused naming the key. NaN and Infinity are
    written out as such, for `versions.check_json` to refuse with the message it gives in the
    operator."""
    try:
        return json.dumps(_json_data(key, value))
    except RecursionError:  # the YAML loader bounds the depth; this is the last guard
        raise versions.JSONValueError(key, "nests too deeply") from None


def _json_data(key: str, value: Any) -> Any:
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dict):
        return {_json_key(key, k): _json_data(key, v) for k, v in value.items()}
    if isinstance(value, list | tuple):  # !!omap and !!pairs load as lists of tuples
        return [_json_data(key, v) for v in value]
    if value is None or isinstance(value, str | int | float):  # bool is an int
        return value
    raise ValueError(f"{key}: {_not_json(value)}")


def _json_key(key: str, name: Any) -> Any:
    if isinstance(name, dt.date):
        return name.isoformat()
    if name is None or isinstance(name, str | int | float):  # json.dumps writes these as text
        return name
    raise ValueError(f"{key}: {_not_json(name)} (as a mapping key)")


def _not_json(value: Any) -> str:
    """Why a YAML value cannot be sealed; names the type, never the value."""
    if isinstance(value, bytes):
        return "a YAML !!binary value cannot be sealed; give binary data as base64 text"
    if isinstance(value, set | frozenset):
        return "a YAML !!set cannot be sealed; use a list"
    return f"a YAML value of type {type(value).__name__} cannot be sealed"


def _check_key(key: str) -> str:
    import re

    from spacesecrets.schema import models  # pydantic: loaded by the commands that need it only

    if not re.match(models.KEY_PATTERN, key) or len(key) > models.KEY_MAX_LENGTH:
        raise ValueError(
            f"{key!r} is not a valid KEY: use letters, digits and underscores, "
            "not starting with a digit (e.g. PRODUCT_A_API_HOST)"
        )
    return key


def _parse_owner(text: str) -> dict[str, str]:
    kind, sep, name = text.partition(":")
    if not sep or kind not in ("User", "Group", "ServiceAccount") or not name:
        raise ValueError(
            f"--owner {text!r}: use Kind:name with Kind User, Group or "
            "ServiceAccount, e.g. User:alice@example.com"
        )
    return {"kind": kind, "name": name}
