"""The Event queue: Warnings go first, a flood of Normal Events never crowds one out, and
Normal Events wait while reconciles run."""

from __future__ import annotations

import threading
import time

from spacesecrets.kube.client import EventQueue


def test_warnings_are_posted_first_and_each_kind_is_bounded() -> None:
    q = EventQueue(capacity=2)
    assert q.put(False, ("ns", {"reason": "VersionCreated"}))
    assert q.put(False, ("ns", {"reason": "Issued"}))
    assert not q.put(False, ("ns", {"reason": "Issued"}))  # full: dropped
    assert q.put(True, ("ns", {"reason": "InvalidJSON"}))  # a Warning still fits
    assert [q.get()[1]["reason"] for _ in range(3)] == ["InvalidJSON", "VersionCreated", "Issued"]


def test_normal_events_wait_while_held_and_warnings_do_not() -> None:
    q = EventQueue(capacity=10, max_hold=60.0)
    q.hold(True)
    q.put(False, ("ns", {"reason": "Issued"}))
    q.put(True, ("ns", {"reason": "InvalidJSON"}))
    assert q.get()[1]["reason"] == "InvalidJSON"
    got: list[str] = []
    poster = threading.Thread(target=lambda: got.append(q.get()[1]["reason"]))
    poster.start()
    poster.join(0.2)
    assert poster.is_alive() and not got  # held while reconciles run
    q.hold(False)
    poster.join(5)
    assert got == ["Issued"]


def test_a_held_normal_event_is_posted_after_max_hold() -> None:
    q = EventQueue(capacity=10, max_hold=0.1)
    q.hold(True)
    q.put(False, ("ns", {"reason": "Issued"}))
    started = time.monotonic()
    assert q.get()[1]["reason"] == "Issued"
    assert time.monotonic() - started >= 0.1
