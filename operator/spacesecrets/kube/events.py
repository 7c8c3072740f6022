"""Events waiting to be posted, in two bounded queues (Warnings first).

Edge (kube layer), threads only: no API call here; `client.Kube` posts what it takes out.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any


class EventQueue:
    """Events waiting to be posted: Warnings first, each kind bounded. Normal Events can be held
    while reconciles are running, so a burst of them does not compete with the writes users wait
    for; a held Event waits `max_hold` seconds at most."""

    def __init__(self, capacity: int, max_hold: float = 10.0) -> None:
        self.capacity = capacity
        self.max_hold = max_hold
        self._warnings: deque[tuple[str, dict[str, Any]]] = deque()
        self._normal: deque[tuple[str, dict[str, Any]]] = deque()
        self._ready = threading.Condition()
        self._held = False

    def hold(self, held: bool) -> None:
        with self._ready:
            if held != self._held:
                self._held = held
                self._ready.notify_all()

    def put(self, warning: bool, item: tuple[str, dict[str, Any]]) -> bool:
        """False when that kind's queue is full (the Event is dropped)."""
        queue = self._warnings if warning else self._normal
        with self._ready:
            if len(queue) >= self.capacity:
                return False
            queue.append(item)
            self._ready.notify()
            return True

    def get(self) -> tuple[str, dict[str, Any]]:
        with self._ready:
            deadline: float | None = None
            while True:
                if self._warnings:
                    return self._warnings.popleft()
                if self._normal and not self._held:
                    return self._normal.popleft()
                if not self._normal:
                    self._ready.wait()
                    continue
                deadline = deadline or time.monotonic() + self.max_hold
                left = deadline - time.monotonic()
                if left <= 0:
                    return self._normal.popleft()
                self._ready.wait(left)
