"""Watching a resource: list it, then follow its changes, in a thread of its own.

Edge. The operator's watches used to be kopf's, and kopf's per-event machinery (a task per object,
three loggers, a patch, causes, progress, handler invocation) cost about half of the operator's
CPU at a cold start, where it sees some six events per namespace -- most of them the echoes of its
own writes. A `Feed` does what a level-based watcher needs and nothing more: it lists in pages,
watches from the listing's resourceVersion with bookmarks, resumes after a dropped connection,
lists again when the resourceVersion expired (410), and hands each object, parsed once, to its
`deliver` function. A listing is handed over a page at a time and the feed waits for the page to be
taken, so thousands of parsed bodies never wait at once.

`gate` pauses a feed: while it is clear nothing is delivered, and when it is set again the feed
lists afresh (what kopf does when a peer of higher priority leaves).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from spacesecrets.kube.errors import Permanent, Temporary, error_for
from spacesecrets.kube.transport import Rest, Unreachable

log = logging.getLogger("spacesecrets")
PAGE = 100  # objects a page when listing (a space is ~20 KB parsed)
SERVER_TIMEOUT = 300  # seconds a watch request lasts before the server ends it (then resumed)
MAX_BACKOFF = 30.0
LISTED = "ADDED"  # the type an object found by a listing is delivered with

Event = tuple[str, dict[str, Any]]  # type, object
Deliver = Callable[[Sequence[Event]], None]  # blocks until the events are taken


class Expired(Exception):
    """The resourceVersion to resume from is too old (410): list again."""


@dataclass(frozen=True)
class Resource:
    """What to watch: e.g. ("/apis/apps/v1", "deployments", "Deployment")."""

    base: str
    plural: str
    kind: str
    selector: str = ""

    def path(self, namespace: str | None) -> str:
        scope = f"/namespaces/{namespace}" if namespace else ""
        return f"{self.base}{scope}/{self.plural}"

    @property
    def api_version(self) -> str:
        return self.base.removeprefix("/apis/").removeprefix("/api/")


class Feed:
    def __init__(
        self,
        rest: Rest,
        resource: Resource,
        namespace: str | None,
        deliver: Deliver,
        gate: threading.Event,
        *,
        page: int = PAGE,
    ) -> None:
        self.rest, self.resource, self.namespace = rest, resource, namespace
        self.deliver, self.gate, self.page = deliver, gate, page
        self.stopped = threading.Event()
        self.what = f"{resource.plural}" + (f" in {namespace}" if namespace else "")
        self._thread = threading.Thread(target=self._run, name=f"watch-{self.what}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stopped.set()
        self.gate.set()  # a paused feed wakes to see it is stopped

    def _query(self, **extra: str) -> dict[str, str]:
        query = dict(extra)
        if self.resource.selector:
            query["labelSelector"] = self.resource.selector
        return query

    def _run(self) -> None:
        backoff, version = 0.0, ""
        while not self.stopped.is_set():
            self.gate.wait()
            if self.stopped.is_set():
                return
            try:
                if not version:
                    version = self._list()
                version = self._watch(version)
                backoff = 0.0
            except Expired:
                version = ""
            except (Temporary, Permanent, ValueError) as exc:
                backoff = min(MAX_BACKOFF, max(1.0, backoff * 2))
                log.warning("watch of %s: %s; again in %.0fs", self.what, exc, backoff)
                self.stopped.wait(backoff)
            except Exception:  # a bug must not end the watch: log it, list again
                log.exception("watch of %s failed", self.what)
                version = ""
                self.stopped.wait(MAX_BACKOFF)

    def _list(self) -> str:
        """Deliver every object, a page at a time; the listing's resourceVersion."""
        token = ""
        while True:
            query = self._query(limit=str(self.page))
            if token:
                query["continue"] = token
            doc = self._get(query)
            items = doc.get("items") or []
            for item in items:  # a listing's items come without these
                item.setdefault("apiVersion", self.resource.api_version)
                item.setdefault("kind", self.resource.kind)
            meta = doc.get("metadata") or {}
            if items and self.gate.is_set():
                self.deliver([(LISTED, item) for item in items])
            token = str(meta.get("continue") or "")
            if not token:
                return str(meta.get("resourceVersion", ""))

    def _get(self, query: Mapping[str, str]) -> dict[str, Any]:
        path = self.resource.path(self.namespace)
        try:
            response = self.rest.request("GET", path, query=query)
        except Unreachable as exc:
            raise Temporary(f"list {self.what}: {exc}") from None
        if response.status == 410:
            raise Expired()
        if response.status != 200:
            raise error_for(f"list {self.what}", response.status, response.data)
        doc = json.loads(response.data)
        return doc if isinstance(doc, dict) else {}

    def _watch(self, version: str) -> str:
        """Follow the changes from `version` until the server ends the request (or the gate
        closes: then "", to list afresh once it opens); the last resourceVersion seen."""
        query = self._query(
            watch="1",
            resourceVersion=version,
            allowWatchBookmarks="true",
            timeoutSeconds=str(SERVER_TIMEOUT),
        )
        for line in self._lines(query):
            event = json.loads(line)
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    raise Expired()
                raise error_for(f"watch {self.what}", int(obj.get("code") or 0), line)
            version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
            if not self.gate.is_set() or self.stopped.is_set():
                return ""  # paused: what happened meanwhile is read by a fresh listing
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                self.deliver([(str(kind), obj)])
        return version

    def _lines(self, query: Mapping[str, str]) -> Iterator[bytes]:
        path = self.resource.path(self.namespace)
        with self.rest.stream(path, query, read_timeout=SERVER_TIMEOUT + 30) as (status, lines):
            if status == 410:
                raise Expired()
            if status != 200:
                raise error_for(f"watch {self.what}", status, b"".join(lines))
            for line in lines:
                if line.strip():
                    yield line
