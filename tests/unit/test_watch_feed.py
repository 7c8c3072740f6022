"""The watch feed against a scripted API: listing in pages, resuming from the last resourceVersion,
listing again when it expired, pausing behind its gate. No cluster."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from spacesecrets.kube.transport import Response
from spacesecrets.kube.watch import Event, Feed, Resource

SPACES = Resource("/apis/spacesecrets.io/v1alpha1", "spacesecrets", "SpaceSecrets", "a=b")


def _obj(name: str, rv: int) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": str(rv)}}


class ScriptedApi:
    """Answers lists from `pages` and watches from `watches`, one script item per request; every
    request is recorded. When the watches run out, the feed is stopped."""

    def __init__(self, pages: list[dict[str, Any]], watches: list[tuple[int, list[Any]]]) -> None:
        self.pages, self.watches = pages, watches
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.feed: Feed | None = None

    def request(
        self, method: str, path: str, body: Any = None, *, query: Mapping[str, str] | None = None,
        **_: Any,
    ) -> Response:  # fmt: skip
        self.requests.append((path, dict(query or {})))
        page = self.pages.pop(0)
        return Response(page.pop("_status", 200), json.dumps(page).encode())

    @contextlib.contextmanager
    def stream(
        self, path: str, query: Mapping[str, str], *, read_timeout: float
    ) -> Iterator[tuple[int, Iterator[bytes]]]:
        self.requests.append((path, dict(query)))
        if not self.watches:
            assert self.feed is not None
            self.feed.stop()
            yield 200, iter([])
            return
        status, events = self.watches.pop(0)
        yield status, iter([json.dumps(e).encode() + b"\n" for e in events])


def run_feed(api: ScriptedApi, gate: threading.Event | None = None) -> list[Event]:
    got: list[Event] = []

    def deliver(events: Sequence[Event]) -> None:
        got.extend(events)

    gate = gate or threading.Event()
    gate.set()
    feed = Feed(api, SPACES, None, deliver, gate, page=2)  # type: ignore[arg-type]
    api.feed = feed
    feed._run()
    return got


def test_a_listing_in_pages_then_the_changes_from_its_resource_version() -> None:
    api = ScriptedApi(
        pages=[
            {"items": [_obj("a", 1), _obj("b", 2)], "metadata": {"continue": "t1"}},
            {"items": [_obj("c", 3)], "metadata": {"resourceVersion": "10"}},
        ],
        watches=[
            (
                200,
                [
                    {"type": "MODIFIED", "object": _obj("a", 11)},
                    {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}},
                    {"type": "DELETED", "object": _obj("b", 16)},
                ],
            ),
        ],
    )
    got = run_feed(api)
    assert [(t, o["metadata"]["name"]) for t, o in got] == [
        ("ADDED", "a"), ("ADDED", "b"), ("ADDED", "c"), ("MODIFIED", "a"), ("DELETED", "b"),
    ]  # fmt: skip
    assert got[0][1]["kind"] == "SpaceSecrets"  # a listing's items get their kind
    assert got[0][1]["apiVersion"] == "spacesecrets.io/v1alpha1"
    lists = [q for p, q in api.requests if "watch" not in q]
    assert lists[0] == {"labelSelector": "a=b", "limit": "2"}
    assert lists[1]["continue"] == "t1"
    watches = [q for p, q in api.requests if "watch" in q]
    assert watches[0]["resourceVersion"] == "10"
    assert watches[1]["resourceVersion"] == "16"  # resumed after the last event, no listing


def test_an_expired_resource_version_lists_again() -> None:
    api = ScriptedApi(
        pages=[
            {"items": [_obj("a", 1)], "metadata": {"resourceVersion": "5"}},
            {"items": [_obj("a", 20)], "metadata": {"resourceVersion": "21"}},
        ],
        watches=[(200, [{"type": "ERROR", "object": {"code": 410, "reason": "Expired"}}])],
    )
    got = run_feed(api)
    assert [o["metadata"]["resourceVersion"] for _, o in got] == ["1", "20"]
    assert [q.get("resourceVersion") for _, q in api.requests if "watch" in q] == ["5", "21"]


def test_a_closed_gate_delivers_nothing_and_lists_afresh_when_open() -> None:
    gate = threading.Event()
    api = ScriptedApi(
        pages=[
            {"items": [_obj("a", 1)], "metadata": {"resourceVersion": "5"}},
            {"items": [_obj("a", 7)], "metadata": {"resourceVersion": "8"}},
        ],
        watches=[(200, [{"type": "MODIFIED", "object": _obj("a", 6)}])],
    )
    delivered: list[Event] = []

    def deliver(events: Sequence[Event]) -> None:
        delivered.extend(events)
        if len(delivered) == 1:  # a peer of higher priority arrives: stand by, then serve again
            gate.clear()
            threading.Timer(0.05, gate.set).start()

    gate.set()
    feed = Feed(api, SPACES, None, deliver, gate, page=2)  # type: ignore[arg-type]
    api.feed = feed
    feed._run()
    # the change seen while paused was not delivered; the fresh listing brought its result
    assert [(t, o["metadata"]["resourceVersion"]) for t, o in delivered] == [
        ("ADDED", "1"), ("ADDED", "7"),
    ]  # fmt: skip
