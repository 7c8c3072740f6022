"""Where every space's history lives: a Secret per namespace in the operator's namespace
(`history-<namespace>`), and the histories of deleted spaces set aside (`archive-<uid>`).

Engine layer. The contents are `core.versions.History` (encrypted values, an index of key names
and digests); this module only reads and writes them. Every write is conditional on the
resourceVersion read, so a stale copy costs a retry, never a lost version.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import logging
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any

from spacesecrets.core import versions
from spacesecrets.core.conditions import now_rfc3339, parse_rfc3339
from spacesecrets.core.settings import Settings
from spacesecrets.kube import AlreadyExists, NotFound, Temporary
from spacesecrets.kube.client import Kube
from spacesecrets.names import (
    ARCHIVE_LABEL,
    ARCHIVE_PREFIX,
    HISTORY_PREFIX,
    MANAGED_BY_LABEL,
    SPACE_LABEL,
)

log = logging.getLogger("spacesecrets")
_UID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
Cached = tuple[dict[str, str], str]  # a history's data and resourceVersion


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(text: str) -> str:
    return base64.b64decode(text).decode()


def _cache_entry(secret: Mapping[str, Any]) -> Cached:
    data = {k: _unb64(v) for k, v in (secret.get("data") or {}).items()}
    return data, str(secret["metadata"].get("resourceVersion", ""))


class HistoryStore:
    def __init__(self, settings: Settings, kube: Kube, clock: Callable[[], dt.datetime]) -> None:
        self.settings, self.kube, self.clock = settings, kube, clock
        self._lock = threading.Lock()
        # caches that only save reads (see prefetch)
        self._prefetched: dict[str, Cached] = {}
        self._complete = False
        self._exists: set[str] = set()

    @staticmethod
    def name(namespace: str) -> str:
        return f"{HISTORY_PREFIX}{namespace}"

    def _secret(
        self, name: str, labels: Mapping[str, str], data: Mapping[str, str]
    ) -> dict[str, Any]:
        return {
            "metadata": {
                "name": name,
                "namespace": self.settings.namespace,
                "labels": {MANAGED_BY_LABEL: "spacesecrets", **labels},
            },
            "type": "Opaque",
            "data": {k: _b64(v) for k, v in data.items()},
        }

    def prefetch(self, keep: Callable[[str], bool] = lambda _: True) -> None:
        """Read every space's history in one LIST, so the first reconciles need not GET theirs.

        Each prefetched history is handed out once and then dropped: afterwards a history is read
        when its space changes, which is rare, instead of thousands being held in memory. Only
        the namespaces `keep` says are kept (a shard's own); of the others, that they exist."""
        for secret in self.kube.list_secrets(self.settings.namespace, SPACE_LABEL):
            namespace = (secret["metadata"].get("labels") or {}).get(SPACE_LABEL)
            if namespace:
                with self._lock:
                    if keep(namespace):
                        self._prefetched[namespace] = _cache_entry(secret)
                    self._exists.add(namespace)
        with self._lock:
            self._complete = True

    def read(self, namespace: str, keep: bool = False) -> tuple[versions.History | None, str]:
        """The history and its resourceVersion. A prefetched copy is handed out once, unless
        `keep` (a read that writes nothing leaves it for the space's reconcile)."""
        with self._lock:
            cached = (self._prefetched.get if keep else self._prefetched.pop)(namespace, None)
            known_absent = cached is None and self._complete and namespace not in self._exists
        if known_absent:
            return None, ""
        if cached is None:
            try:
                secret = self.kube.get("Secret", self.settings.namespace, self.name(namespace))
            except NotFound:
                return None, ""
            cached = _cache_entry(secret)
        data, rv = cached
        return versions.History.from_data(namespace, data), rv

    def _forget(self, namespace: str) -> None:
        """Whatever we hold of this history may be stale: the next read asks the API."""
        with self._lock:
            self._prefetched.pop(namespace, None)
            self._exists.add(namespace)

    def drop(self, namespace: str) -> None:
        """Another shard serves the namespace now: a copy held of its history would go stale."""
        self._forget(namespace)

    def write(self, history: versions.History, rv: str) -> None:
        body = self._secret(
            self.name(history.namespace), {SPACE_LABEL: history.namespace}, history.to_data()
        )
        try:
            if rv:
                body["metadata"]["resourceVersion"] = rv
                self.kube.replace("Secret", self.settings.namespace, body, answer=False)
            else:
                self.kube.create("Secret", self.settings.namespace, body, answer=False)
        except AlreadyExists:
            self._forget(history.namespace)
            raise Temporary("the history was created concurrently", delay=1) from None
        except Temporary:
            self._forget(history.namespace)  # e.g. 409: somebody else wrote it
            raise
        with self._lock:
            self._exists.add(history.namespace)

    def mark_deleted(self, namespace: str) -> None:
        """The store is gone: its history is kept, from now on for the retention period."""
        history, rv = self.read(namespace)
        if history is not None and not history.deleted_at:
            history.index["deletedAt"] = now_rfc3339(self.clock())
            self.write(history, rv)

    # -- histories of deleted spaces, set aside ---------------------------------------------------

    def archive(self, history: versions.History) -> None:
        """Keep a deleted space's history aside under its uid (idempotent)."""
        if not history.deleted_at:
            history.index["deletedAt"] = now_rfc3339(self.clock())
        space_uid = str(history.index.get("spaceUid") or "unknown")
        body = self._secret(
            f"{ARCHIVE_PREFIX}{space_uid}", {ARCHIVE_LABEL: history.namespace}, history.to_data()
        )
        with contextlib.suppress(AlreadyExists):
            self.kube.create("Secret", self.settings.namespace, body)
        log.info("space %s: set aside the history of SpaceSecrets %s", history.namespace, space_uid)

    def read_archive(self, namespace: str, space_uid: str) -> versions.History | None:
        if not _UID.fullmatch(space_uid):
            return None
        name = f"{ARCHIVE_PREFIX}{space_uid}"
        try:
            secret = self.kube.get("Secret", self.settings.namespace, name)
        except NotFound:
            return None
        if (secret["metadata"].get("labels") or {}).get(ARCHIVE_LABEL) != namespace:
            return None  # another namespace's: sealed for its name, never handed across
        data, _ = _cache_entry(secret)
        return versions.History.from_data(namespace, data)

    def drop_archive(self, space_uid: str) -> None:
        with contextlib.suppress(NotFound):
            self.kube.delete("Secret", self.settings.namespace, f"{ARCHIVE_PREFIX}{space_uid}")

    def housekeeping(self) -> None:
        """Drop the histories of spaces deleted longer ago than the retention period (those of
        the namespaces and those set aside)."""
        cutoff = self.clock() - dt.timedelta(seconds=self.settings.history_retention)
        for label in (SPACE_LABEL, ARCHIVE_LABEL):
            for secret in self.kube.list_secrets(self.settings.namespace, label):
                data = (secret.get("data") or {}).get("index.json")
                deleted = json.loads(_unb64(data)).get("deletedAt") if data else None
                if not deleted or parse_rfc3339(deleted) >= cutoff:
                    continue
                self.kube.delete("Secret", self.settings.namespace, secret["metadata"]["name"])
                namespace = (secret["metadata"].get("labels") or {}).get(label)
                if label == SPACE_LABEL:
                    with self._lock:
                        self._exists.discard(str(namespace))
                log.info("dropped a history of %s (deleted %s)", namespace, deleted)
