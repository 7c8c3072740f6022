"""Versions of a space: open and validate the spec, diff against the current version, and keep
the encrypted history with its retention.

Pure core. The history of a space is a `History`: an index (versions, per-key metadata and keyed
digests -- never values) plus one AES-GCM blob per kept version, all of which `kube` stores in a
Secret in the operator's namespace. The history, not the status, is the source of truth for the
version number, so a lost or hand-edited status can never make a version be given twice.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from spacesecrets.core import crypto
from spacesecrets.core.settings import (
    HISTORY_BUDGET_BYTES,
    MAX_JSON_DEPTH,
    MAX_PROJECTION_BYTES,
    MAX_TOTAL_BYTES,
    MAX_VALUE_BYTES,
)

INVALID_JSON = "InvalidJSON"
TOO_LARGE = "TooLarge"
INVALID_TEXT = "InvalidText"


@dataclass(frozen=True)
class Value:
    """One plaintext value with its format. repr never shows the value."""

    format: str
    data: bytes = field(repr=False)

    def projected(self) -> Any:
        """The value as a flow sees it: a string, or the parsed JSON document."""
        text = self.data.decode()
        return json.loads(text) if self.format == "json" else text


Plain = dict[str, Value]


@dataclass(frozen=True)
class EntryError:
    key: str
    reason: str
    message: str


def open_spec(
    ring: crypto.KeyRing, namespace: str, data: Mapping[str, Mapping[str, Any]]
) -> tuple[Plain, list[EntryError]]:
    """Unseal and validate every entry. Errors name the key and the cause, never the value."""
    plain: Plain = {}
    errors: list[EntryError] = []
    total = 0
    for key in sorted(data):
        entry = data[key]
        fmt = str(entry.get("format", "text"))
        try:
            raw = ring.unseal(namespace, key, fmt, str(entry.get("sealed", "")))
        except crypto.UnsealError as exc:
            errors.append(EntryError(key, exc.reason, f"{key} {exc}"))
            continue
        problem = _validate(key, fmt, raw)
        if problem:
            errors.append(problem)
            continue
        total += len(raw)
        plain[key] = Value(fmt, raw)
    if total > MAX_TOTAL_BYTES:
        errors.append(
            EntryError(
                "",
                TOO_LARGE,
                f"the values add up to {total} bytes, over the "
                f"{MAX_TOTAL_BYTES} bytes a space may hold",
            )
        )
    elif not errors and projection_size(plain) > MAX_PROJECTION_BYTES:
        errors.append(
            EntryError(
                "",
                TOO_LARGE,
                f"the projected SECRETS document would exceed {MAX_PROJECTION_BYTES} bytes",
            )
        )
    return plain, errors


def _validate(key: str, fmt: str, raw: bytes) -> EntryError | None:
    if len(raw) > MAX_VALUE_BYTES:
        return EntryError(key, TOO_LARGE, f"{key} is {len(raw)} bytes, over {MAX_VALUE_BYTES}")
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        return EntryError(key, INVALID_TEXT, f"{key} is not UTF-8 text")
    if fmt == "json":
        try:
            check_json(key, text)
        except JSONValueError as exc:
            return EntryError(key, INVALID_JSON, str(exc))
    return None


# ---------------------------------------------------------------------------------------------
# JSON values a flow can read
# ---------------------------------------------------------------------------------------------


class JSONValueError(ValueError):
    """A JSON value a flow could not use. The message names the key and the cause, never the
    value: the operator puts it in a condition and an Event, the CLI prints it."""

    def __init__(self, key: str, cause: str) -> None:
        super().__init__(f"{key}: JSON value is not valid for flows: {cause}")
        self.key = key
        self.cause = cause


class _Refused(ValueError):
    """Raised by the parser hooks below; `check_json` adds the key."""


# One JSON string (escapes included; an unterminated one runs to the end of the text, so no
# input makes the scan quadratic) or one bracket outside strings.
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*(?:"|\\?\Z)|[\[\]{}]', re.DOTALL)


def json_depth(text: str) -> int:
    """How deeply arrays and objects nest in a JSON text; a scalar is 0, `[]` and `{}` are 1.

    A linear scan, no recursion, no parse: a hostile `[[[[...` is measured before any recursive
    parser sees it. For a text that is not JSON the count is a bound, not an exact depth.
    """
    depth = deepest = 0
    for match in _JSON_TOKEN.finditer(text):
        bracket = match.group()[0]
        if bracket in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif bracket in "]}":
            depth = max(depth - 1, 0)
    return deepest


def _refuse_constant(name: str) -> Any:
    # Python's json reads NaN, Infinity and -Infinity; JSON has no such values and a flow's
    # JSON.parse refuses the whole SECRETS document that holds one.
    raise _Refused(f"{name} is not allowed")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):  # 1e400 parses as inf and would be written out as Infinity
        raise _Refused("a number is too large: it would be Infinity")
    return number


def _bounded_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:  # over Python's limit on digits (sys.get_int_max_str_digits)
        raise _Refused("a number has too many digits") from None


def check_json(key: str, text: str) -> Any:
    """Parse a JSON value as the operator will project it, or raise `JSONValueError`.

    The one check for a JSON value, used by the operator on every spec and by the CLI before it
    seals: valid JSON, no NaN/Infinity (in any spelling), nesting at most `MAX_JSON_DEPTH`.
    Returns the parsed document.
    """
    depth = json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise JSONValueError(key, f"nests {depth} levels deep; the limit is {MAX_JSON_DEPTH}")
    try:
        return json.loads(
            text,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
            parse_int=_bounded_int,
        )
    except _Refused as exc:
        raise JSONValueError(key, str(exc)) from None
    except json.JSONDecodeError as exc:
        # position only: the parser's message never quotes the document, and neither do we
        raise JSONValueError(
            key, f"syntax error at line {exc.lineno}, column {exc.colno}"
        ) from None
    except RecursionError:  # not reached after the scan above; kept so no depth is a traceback
        raise JSONValueError(key, f"nests deeper than {MAX_JSON_DEPTH} levels") from None


def projection_size(plain: Plain) -> int:
    return len(json.dumps({k: v.projected() for k, v in plain.items()}).encode())


def serialize_plain(plain: Plain) -> bytes:
    return json.dumps(
        {k: {"format": v.format, "value": v.data.decode()} for k, v in sorted(plain.items())},
        separators=(",", ":"),
    ).encode()


def deserialize_plain(data: bytes) -> Plain:
    doc: dict[str, dict[str, str]] = json.loads(data)
    return {k: Value(v["format"], v["value"].encode()) for k, v in doc.items()}


# ---------------------------------------------------------------------------------------------
# History
# ---------------------------------------------------------------------------------------------


@dataclass
class History:
    """The index and encrypted versions of one space, as stored in its history Secret."""

    namespace: str
    wrapped_key: str
    index: dict[str, Any]
    blobs: dict[int, str]

    @classmethod
    def new(cls, ring: crypto.KeyRing, namespace: str) -> History:
        wrapped = ring.wrap(namespace, crypto.new_data_key())
        index: dict[str, Any] = {"version": 0, "keys": {}, "versions": []}
        return cls(namespace, wrapped, index, {})

    @property
    def version(self) -> int:
        return int(self.index.get("version", 0))

    @property
    def deleted_at(self) -> str | None:
        value = self.index.get("deletedAt")
        return str(value) if value else None

    def data_key(self, ring: crypto.KeyRing) -> bytes:
        return ring.unwrap(self.namespace, self.wrapped_key)

    def digests(self) -> dict[str, str]:
        return {k: str(m["digest"]) for k, m in self.index.get("keys", {}).items()}

    def values(self, ring: crypto.KeyRing, version: int | None = None) -> Plain:
        """The plaintext of a kept version (the current one by default)."""
        version = self.version if version is None else version
        blob = self.blobs.get(version)
        if blob is None:
            raise LookupError(f"version {version} is not in the history")
        return deserialize_plain(
            crypto.decrypt_version(self.data_key(ring), self.namespace, version, blob)
        )

    def kept_versions(self) -> list[int]:
        return sorted(self.blobs)

    def rewrapped(self, ring: crypto.KeyRing) -> bool:
        """Re-wrap the data key under the current master key; True when it changed."""
        if ring.wrapped_by_current(self.wrapped_key):
            return False
        self.wrapped_key = ring.wrap(self.namespace, self.data_key(ring))
        return True

    # -- serialization (the Secret's data, before base64) ------------------------------------

    def to_data(self) -> dict[str, str]:
        data = {"datakey": self.wrapped_key, "index.json": json.dumps(self.index, sort_keys=True)}
        data.update({f"v{n}": blob for n, blob in self.blobs.items()})
        return data

    @classmethod
    def from_data(cls, namespace: str, data: Mapping[str, str]) -> History:
        blobs = {int(k[1:]): v for k, v in data.items() if k.startswith("v") and k[1:].isdigit()}
        return cls(namespace, data["datakey"], json.loads(data["index.json"]), blobs)


@dataclass(frozen=True)
class Change:
    version: int
    added: list[str]
    changed: list[str]
    removed: list[str]


def diff(old: Mapping[str, str], new: Mapping[str, str]) -> tuple[list[str], list[str], list[str]]:
    """Key names added, changed and removed between two digest maps."""
    added = sorted(set(new) - set(old))
    removed = sorted(set(old) - set(new))
    changed = sorted(k for k in set(old) & set(new) if old[k] != new[k])
    return added, changed, removed


def record(
    history: History,
    ring: crypto.KeyRing,
    plain: Plain,
    now: str,
    limit: int,
    *,
    rollback_of: int | None = None,
) -> Change | None:
    """Make `plain` the current version when it differs from it; None when nothing changed.

    Digests are keyed (HMAC) over format and plaintext, so re-sealing the same value -- new
    ciphertext -- is not a change, while a changed format is.
    """
    data_key = history.data_key(ring)
    dkey = crypto.digest_key(data_key)
    digests = {k: crypto.digest(dkey, v.format, v.data) for k, v in plain.items()}
    added, changed, removed = diff(history.digests(), digests)
    if history.version and not (added or changed or removed):
        return None
    version = history.version + 1
    old_keys: dict[str, Any] = history.index.get("keys", {})
    keys = {
        k: (
            old_keys[k]
            if k in old_keys and k not in changed
            else {"format": plain[k].format, "version": version, "updatedAt": now}
        )
        | {"digest": digests[k]}
        for k in sorted(plain)
    }
    entry: dict[str, Any] = {
        "version": version,
        "at": now,
        "added": added,
        "changed": changed,
        "removed": removed,
    }
    if rollback_of is not None:
        entry["rollbackOf"] = rollback_of
    history.index.update(
        version=version,
        createdAt=history.index.get("createdAt") or now,
        updatedAt=now,
        keys=keys,
        versions=[entry, *history.index.get("versions", [])],
        deletedAt=None,
    )
    history.blobs[version] = crypto.encrypt_version(
        data_key, history.namespace, version, serialize_plain(plain)
    )
    prune(history, limit)
    return Change(version, added, changed, removed)


def prune(history: History, limit: int, budget: int = HISTORY_BUDGET_BYTES) -> None:
    """Keep the newest `limit` versions, fewer if their blobs exceed the Secret's budget.

    The current version is always kept.
    """
    versions = sorted(history.blobs, reverse=True)
    kept: list[int] = []
    # the index's size matters only when there is a version to drop (a space's first version,
    # every space at a cold start, has none): measuring it is most of a first record's JSON
    size = len(json.dumps(history.index)) if len(versions) > 1 else 0
    for n in versions:
        size += len(history.blobs[n])
        if kept and (len(kept) >= limit or size > budget):
            break
        kept.append(n)
    for n in set(versions) - set(kept):
        del history.blobs[n]
    history.index["versions"] = [
        v for v in history.index.get("versions", []) if v["version"] >= min(kept, default=0)
    ][:limit]


def status_fields(history: History, sealing_kids: list[str]) -> dict[str, Any]:
    """The status a space shows for its current version (metadata only)."""
    index = history.index
    keys = [
        {"name": k, "format": m["format"], "version": m["version"], "updatedAt": m["updatedAt"]}
        for k, m in sorted(index.get("keys", {}).items())
    ]
    return {
        "version": history.version,
        "createdAt": index.get("createdAt"),
        "updatedAt": index.get("updatedAt"),
        "keyCount": len(keys),
        "keys": keys,
        "history": [dict(v) for v in index.get("versions", [])],
        "sealingKeys": sorted(set(sealing_kids)),
    }


def sealing_kids(data: Mapping[str, Mapping[str, Any]]) -> list[str]:
    kids = []
    for entry in data.values():
        parts = str(entry.get("sealed", "")).split(":")
        if len(parts) == 3:
            kids.append(parts[1])
    return kids
