"""The order of writes, as the API server's watches tell it: each event noted with its object's
resourceVersion.

Test support. One control plane has one etcd, whose revision numbers every write of every kind in
one sequence: comparing the resourceVersions of two objects' events says which write came first,
exactly, where the arrival times of two watches would only say it roughly. (Kubernetes clients
must treat resourceVersions as opaque; these tests run against our own control plane, where they
are etcd's revisions.)
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import kubernetes


@dataclass(frozen=True)
class Seen:
    source: str
    type: str  # ADDED, MODIFIED, DELETED (the listing's objects are ADDED)
    revision: int
    obj: dict[str, Any]


class Revisions:
    """Watches a few sources from one listing on, in threads, keeping every event in order of
    arrival per source (`events`), until `stop`."""

    def __init__(self) -> None:
        self.events: list[Seen] = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def watch(self, source: str, list_fn: Callable[..., Any], **kwargs: Any) -> None:
        """Start watching `list_fn` (an official-client list function) from its current state."""
        listed = list_fn(**kwargs, _preload_content=False)
        doc = json.loads(listed.data)
        with self.lock:
            for obj in doc.get("items") or []:
                self._note(source, "ADDED", obj)
        since = doc["metadata"]["resourceVersion"]
        thread = threading.Thread(
            target=self._run, args=(source, list_fn, kwargs, since), daemon=True
        )
        thread.start()
        self._threads.append(thread)

    def _note(self, source: str, type_: str, obj: dict[str, Any]) -> None:
        revision = int(obj["metadata"]["resourceVersion"])
        self.events.append(Seen(source, type_, revision, obj))

    def _run(
        self, source: str, list_fn: Callable[..., Any], kwargs: dict[str, Any], since: str
    ) -> None:
        while not self._stop.is_set():
            watch = kubernetes.watch.Watch()
            try:
                for event in watch.stream(
                    list_fn, resource_version=since, timeout_seconds=5, **kwargs
                ):
                    raw = event["raw_object"]
                    since = raw["metadata"]["resourceVersion"]
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        with self.lock:
                            self._note(source, event["type"], raw)
                    if self._stop.is_set():
                        break
            except Exception as exc:  # a gap would make the order unknown: the test fails
                self.errors.append(exc)
                return
            finally:
                watch.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)

    def of(self, source: str) -> list[Seen]:
        with self.lock:
            return [e for e in self.events if e.source == source]


def history_version(secret: dict[str, Any]) -> int:
    """The version a history Secret records (its index's), as read from a watch event."""
    index = (secret.get("data") or {}).get("index.json")
    return int(json.loads(base64.b64decode(index)).get("version", 0)) if index else 0


def target_version(target: dict[str, Any]) -> int | None:
    raw = ((target.get("metadata") or {}).get("annotations") or {}).get("spacesecrets.io/version")
    return int(raw) if raw is not None else None


def projected_before_recorded(histories: list[Seen], targets: list[Seen]) -> list[str]:
    """Every write of a target holding version V that came before the write of the history
    recording V (or with none at all): the ordering guarantees, broken. One space's events."""
    out = []
    for t in targets:
        version = target_version(t.obj)
        if t.type == "DELETED" or version is None:
            continue
        recorded = [h.revision for h in histories if history_version(h.obj) >= version]
        if not recorded or min(recorded) >= t.revision:
            name = t.obj["metadata"]["name"]
            out.append(
                f"{name} held version {version} at revision {t.revision}, recorded at "
                f"{min(recorded) if recorded else 'none'}"
            )
    return out
