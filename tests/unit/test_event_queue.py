"""The Event queue: Warnings go first, and a flood of Normal Events never crowds one out."""

from __future__ import annotations

from spacesecrets.kube import EventQueue


def test_warnings_are_posted_first_and_each_kind_is_bounded() -> None:
    q = EventQueue(capacity=2)
    assert q.put(False, ("ns", {"reason": "VersionCreated"}))
    assert q.put(False, ("ns", {"reason": "Issued"}))
    assert not q.put(False, ("ns", {"reason": "Issued"}))  # full: dropped
    assert q.put(True, ("ns", {"reason": "InvalidJSON"}))  # a Warning still fits
    assert [q.get()[1]["reason"] for _ in range(3)] == ["InvalidJSON", "VersionCreated", "Issued"]
