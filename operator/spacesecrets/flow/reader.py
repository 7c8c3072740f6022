"""Flow-side reader of the mounted ``SECRETS`` / ``SECRETS_METADATA`` documents.

A flow pod mounts the Secret (or ConfigMap) that spacesecrets keeps for it as a volume directory.
Kubelet replaces such a volume atomically by swapping the ``..data`` symlink to a new hidden
directory, and the visible ``SECRETS`` and ``SECRETS_METADATA`` are symlinks through ``..data``.
Opening the two visible names one after the other can therefore straddle a swap and pair the
secrets of one version with the metadata of another. :class:`FlowSecrets` resolves ``..data``
once, reads both files from that one resolved directory, checks the link did not move meanwhile
and retries otherwise, so it only ever holds a matching pair.

Usage::

    from spacesecrets.flow import FlowSecrets

    with FlowSecrets("/etc/spacesecrets") as secrets:
        host = secrets["PRODUCT_A_API_HOST"]
        secrets.on_change(lambda s: print("now at version", s.version))

Bad input (missing, partial or corrupt files, wrong JSON types) never replaces the last good
documents: it is reported by :attr:`FlowSecrets.error` until a good read succeeds. Error
messages, log lines and ``repr`` name files, keys and versions, never values.

Layer: flow-side client library, standard library only; imports nothing else of spacesecrets.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final

__all__ = [
    "AUTOSYNC_CHOICES",
    "DEFAULT_DIRECTORY",
    "FlowSecrets",
    "FlowSecretsError",
    "SecretsUnavailableError",
    "Snapshot",
    "parse_autosync",
]

logger = logging.getLogger("spacesecrets.flow")

DEFAULT_DIRECTORY: Final = "/etc/spacesecrets"
SECRETS_FILE: Final = "SECRETS"
METADATA_FILE: Final = "SECRETS_METADATA"
DATA_LINK: Final = "..data"

# The one table of autosync choices: the operator, the CRD and the Node-RED node read this file too.
_AUTOSYNC: Final = json.loads(Path(__file__).with_name("autosync.json").read_text())
AUTOSYNC_CHOICES: Final[Mapping[str, float]] = {
    choice: float(seconds) for choice, seconds in _AUTOSYNC["seconds"].items()
}
_DEFAULT_AUTOSYNC: Final = str(_AUTOSYNC["default"])
_DEFAULT_POLL_SECONDS: Final = 1.0
# A swap takes kubelet microseconds; a handful of attempts only fails under constant churn.
_READ_ATTEMPTS: Final = 20

ChangeCallback = Callable[["FlowSecrets"], None]


class FlowSecretsError(Exception):
    """A read of the mounted documents failed; the message names files, never values."""


class _MissingFileError(FlowSecretsError):
    """One of the two documents is absent from the version being read."""


class SecretsUnavailableError(LookupError):
    """Raised on lookup when no good documents have been read yet."""


def parse_autosync(value: str | float) -> float:
    """Return the autosync interval in seconds.

    Accepts the product's choices (``1m``, ``30m``, ``60m``, ``12h``, ``24h``) or a positive
    number of seconds, which tests use to avoid waiting a minute.
    """
    if isinstance(value, bool):
        raise ValueError("autosync must be one of 1m, 30m, 60m, 12h, 24h or a number of seconds")
    if isinstance(value, (int, float)):
        seconds = float(value)
        if not seconds > 0 or seconds == float("inf"):
            raise ValueError("autosync seconds must be a positive finite number")
        return seconds
    try:
        return AUTOSYNC_CHOICES[value]
    except KeyError:
        choices = ", ".join(AUTOSYNC_CHOICES)
        raise ValueError(f"autosync must be one of {choices} or a number of seconds") from None


@dataclass(frozen=True)
class Snapshot:
    """One consistent pair of documents, as read from a single version of the volume."""

    secrets: Mapping[str, Any] = field(repr=False)
    metadata: Mapping[str, Any] = field(repr=False)

    @property
    def version(self) -> int:
        """The space's version these documents were issued from."""
        # Checked to be an int when the documents were parsed.
        return int(self.metadata["version"])

    def __repr__(self) -> str:
        return f"Snapshot(version={self.version}, keys={sorted(self.secrets)})"


class FlowSecrets(Mapping[str, Any]):
    """The secrets mounted for this flow, kept fresh in the background.

    The object is a read-only mapping KEY -> value (text values are ``str``, JSON values the
    decoded JSON) over the last good ``SECRETS`` document, plus :attr:`metadata`,
    :attr:`version` and :attr:`error`. The constructor reads once and does not raise on bad
    documents; a lookup raises :class:`SecretsUnavailableError` only while nothing good was
    ever read.

    ``autosync`` is the refresh interval: one of ``1m``, ``30m``, ``60m``, ``12h``, ``24h`` or
    seconds as a number; by default the ``autosync`` of the metadata (else ``1m``). Between
    ticks the refresher also checks the ``..data`` link every ``poll_interval`` seconds, which
    costs one ``readlink``, and refreshes as soon as kubelet swaps in a new version.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] = DEFAULT_DIRECTORY,
        *,
        autosync: str | float | None = None,
        poll_interval: float = _DEFAULT_POLL_SECONDS,
        background: bool = True,
    ) -> None:
        if not poll_interval > 0:
            raise ValueError("poll_interval must be positive")
        self._directory = Path(directory)
        self._autosync_override = None if autosync is None else parse_autosync(autosync)
        self._poll_interval = float(poll_interval)
        self._state_lock = threading.Lock()
        # Serialises refreshes so callbacks see versions in order, each exactly once; reentrant
        # so a callback may call refresh() itself.
        self._refresh_lock = threading.RLock()
        self._snapshot: Snapshot | None = None
        self._error: str | None = None
        self._callbacks: list[ChangeCallback] = []
        self._seen_marker: object = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.refresh()
        if background:
            self.start()

    # -- reading -----------------------------------------------------------------------------

    def refresh(self) -> bool:
        """Read the documents now; return True when they differ from the last good ones.

        On failure the last good documents stay and :attr:`error` says what is wrong; on
        success :attr:`error` is cleared. Change callbacks run before this returns.
        """
        with self._refresh_lock:
            self._seen_marker = self._change_marker()
            try:
                snapshot = self._read_consistent()
            except FlowSecretsError as exc:
                message = str(exc)
                with self._state_lock:
                    previous_error, self._error = self._error, message
                if message != previous_error:
                    logger.warning("spacesecrets: %s; keeping the last good documents", message)
                return False
            with self._state_lock:
                previous = self._snapshot
                changed = previous is None or (
                    previous.secrets != snapshot.secrets or previous.metadata != snapshot.metadata
                )
                if changed:
                    self._snapshot = snapshot
                had_error, self._error = self._error is not None, None
            if had_error:
                logger.info("spacesecrets: documents readable again (version %d)", snapshot.version)
            if changed:
                self._notify()
            return changed

    def _read_consistent(self) -> Snapshot:
        data_link = self._directory / DATA_LINK
        for _ in range(_READ_ATTEMPTS):
            try:
                target = os.readlink(data_link)
            except FileNotFoundError:
                target = None
            except OSError:
                # ..data exists but is not a link: not kubelet's layout, read the files as-is.
                target = None
            if target is None:
                if not self._directory.is_dir():
                    raise FlowSecretsError(f"directory {self._directory} does not exist")
                # A plain directory (local development, a copied volume): nothing to pin.
                return self._read_pair(self._directory)
            try:
                raw = self._read_pair_raw(self._directory / target)
            except _MissingFileError:
                # Kubelet may have removed that version after the swap; only a missing file in
                # the current version is an error.
                if _readlink_or_none(data_link) != target:
                    continue
                raise
            if _readlink_or_none(data_link) != target:
                continue
            return _parse_pair(*raw)
        raise FlowSecretsError(
            f"{SECRETS_FILE} kept changing while being read ({_READ_ATTEMPTS} attempts)"
        )

    def _read_pair(self, directory: Path) -> Snapshot:
        return _parse_pair(*self._read_pair_raw(directory))

    def _read_pair_raw(self, directory: Path) -> tuple[bytes, bytes]:
        secrets = _read_file(directory, SECRETS_FILE)
        metadata = _read_file(directory, METADATA_FILE)
        return secrets, metadata

    def _change_marker(self) -> object:
        """Something cheap that differs when the volume was updated."""
        link = _readlink_or_none(self._directory / DATA_LINK)
        if link is not None:
            return link
        marker: list[tuple[int, int, int] | None] = []
        for name in (SECRETS_FILE, METADATA_FILE):
            try:
                st = os.stat(self._directory / name)
            except OSError:
                marker.append(None)
            else:
                marker.append((st.st_ino, st.st_mtime_ns, st.st_size))
        return tuple(marker)

    # -- callbacks ---------------------------------------------------------------------------

    def on_change(self, callback: ChangeCallback) -> ChangeCallback:
        """Call ``callback(self)`` after each refresh that brings new documents.

        Callbacks run in the refreshing thread (usually the background refresher), in order,
        once per change. Returns the callback, so this works as a decorator.
        """
        with self._state_lock:
            self._callbacks.append(callback)
        return callback

    def _notify(self) -> None:
        with self._state_lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            try:
                callback(self)
            except Exception as exc:
                # The type only: a message or traceback could quote a secret value.
                logger.error(
                    "spacesecrets: on_change callback %s raised %s",
                    getattr(callback, "__qualname__", type(callback).__name__),
                    type(exc).__name__,
                )

    # -- background refresher ----------------------------------------------------------------

    def start(self) -> None:
        """Start the background refresher (the constructor does unless ``background=False``)."""
        with self._state_lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(
                target=self._run, name=f"spacesecrets-refresh:{self._directory}", daemon=True
            )
            self._thread.start()

    def close(self, timeout: float | None = 5.0) -> None:
        """Stop the background refresher; the last documents stay readable."""
        self._stop.set()
        with self._state_lock:
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def __enter__(self) -> FlowSecrets:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def autosync_seconds(self) -> float:
        """The current autosync interval: the override, else the metadata's, else 1m."""
        if self._autosync_override is not None:
            return self._autosync_override
        snapshot = self._current()
        if snapshot is not None:
            value = snapshot.metadata.get("autosync")
            if isinstance(value, str) and value in AUTOSYNC_CHOICES:
                return AUTOSYNC_CHOICES[value]
        return AUTOSYNC_CHOICES[_DEFAULT_AUTOSYNC]

    def _run(self) -> None:
        next_tick = time.monotonic() + self.autosync_seconds
        while True:
            timeout = max(0.0, min(self._poll_interval, next_tick - time.monotonic()))
            if self._stop.wait(timeout):
                return
            try:
                now = time.monotonic()
                if now >= next_tick:
                    self.refresh()
                    next_tick = time.monotonic() + self.autosync_seconds
                elif self._change_marker() != self._seen_marker:
                    self.refresh()
            except Exception as exc:
                # The refresher must outlive surprises (e.g. the volume unmounted under it).
                logger.error("spacesecrets: refresher failed: %s", type(exc).__name__)

    # -- read-only views ---------------------------------------------------------------------

    def _current(self) -> Snapshot | None:
        with self._state_lock:
            return self._snapshot

    def _require(self) -> Snapshot:
        snapshot = self._current()
        if snapshot is None:
            reason = self.error or "not read yet"
            raise SecretsUnavailableError(f"no secrets available from {self._directory}: {reason}")
        return snapshot

    def snapshot(self) -> Snapshot:
        """Both documents of one version together (copies; safe to keep and to modify)."""
        snapshot = self._require()
        return Snapshot(copy.deepcopy(snapshot.secrets), copy.deepcopy(snapshot.metadata))

    @property
    def directory(self) -> Path:
        """The mounted volume directory."""
        return self._directory

    @property
    def metadata(self) -> dict[str, Any]:
        """A copy of the last good ``SECRETS_METADATA`` document."""
        return copy.deepcopy(dict(self._require().metadata))

    @property
    def version(self) -> int | None:
        """The version of the last good documents, or None before the first good read."""
        snapshot = self._current()
        return None if snapshot is None else snapshot.version

    @property
    def error(self) -> str | None:
        """Why the latest read failed (names files, never values), or None if it succeeded."""
        with self._state_lock:
            return self._error

    def __getitem__(self, key: str) -> Any:
        # Copies, so callers cannot change what later refreshes compare against.
        return copy.deepcopy(self._require().secrets[key])

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` if absent or nothing was read yet."""
        snapshot = self._current()
        if snapshot is None or key not in snapshot.secrets:
            return default
        return copy.deepcopy(snapshot.secrets[key])

    def __contains__(self, key: object) -> bool:
        snapshot = self._current()
        return snapshot is not None and key in snapshot.secrets

    def __iter__(self) -> Iterator[str]:
        snapshot = self._current()
        return iter(() if snapshot is None else list(snapshot.secrets))

    def __len__(self) -> int:
        snapshot = self._current()
        return 0 if snapshot is None else len(snapshot.secrets)

    def __repr__(self) -> str:
        snapshot = self._current()
        keys = [] if snapshot is None else sorted(snapshot.secrets)
        version = None if snapshot is None else snapshot.version
        error = self.error
        tail = "" if error is None else f", error={error!r}"
        return f"FlowSecrets({str(self._directory)!r}, version={version}, keys={keys}{tail})"


def _readlink_or_none(path: Path) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _read_file(directory: Path, name: str) -> bytes:
    # Open by name inside the resolved directory: both files then come from one version.
    try:
        with open(directory / name, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise _MissingFileError(f"{name} is missing") from None
    except OSError as exc:
        raise FlowSecretsError(f"{name} cannot be read: {exc.strerror}") from None


def _parse_pair(secrets_raw: bytes, metadata_raw: bytes) -> Snapshot:
    secrets = _parse_object(SECRETS_FILE, secrets_raw)
    metadata = _parse_object(METADATA_FILE, metadata_raw)
    version = metadata.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise FlowSecretsError(f"{METADATA_FILE} has no integer version")
    if version < 1:
        raise FlowSecretsError(f"{METADATA_FILE} version must be at least 1")
    for name in ("space", "createdAt", "updatedAt", "issuedAt", "autosync"):
        if name in metadata and not isinstance(metadata[name], str):
            raise FlowSecretsError(f"{METADATA_FILE} field {name} is not a string")
    if "syncOnSave" in metadata and not isinstance(metadata["syncOnSave"], bool):
        raise FlowSecretsError(f"{METADATA_FILE} field syncOnSave is not a boolean")
    keys = metadata.get("keys", {})
    if not isinstance(keys, dict) or not all(isinstance(v, dict) for v in keys.values()):
        raise FlowSecretsError(f"{METADATA_FILE} field keys is not an object of objects")
    return Snapshot(secrets, metadata)


def _parse_object(name: str, raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        raise FlowSecretsError(f"{name} is empty")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise FlowSecretsError(f"{name} is not valid UTF-8") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        # Position only: the decoder's document is the secret text itself.
        raise FlowSecretsError(
            f"{name} is not valid JSON (line {exc.lineno}, column {exc.colno})"
        ) from None
    except RecursionError:
        raise FlowSecretsError(f"{name} is nested too deeply") from None
    if not isinstance(document, dict):
        raise FlowSecretsError(f"{name} is not a JSON object")
    return document
