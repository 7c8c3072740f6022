"""A work queue in the manner of client-go's: keys, not events.

Engine layer (asyncio only). A key waits in the queue at most once, and no two workers ever hold the
same key: a key added again while a worker holds it runs once more when that worker is done. Delayed
adds (retries, autosync ticks) wait in one heap, which is what makes thousands of objects cost one
timer instead of one task each. Keys of a lower rank are handed out first, so a cold start
reconciles the spaces before the flows that wait for them -- and a flow whose space became ready
goes ahead of the spaces still waiting. A key's rank is asked when it is added: adding a queued key
again moves it up when its rank is now lower (never down), so the caller decides when a key's
rank changes. A key moved up leaves its old place behind as a stale entry, skipped when reached,
so a move costs O(1) whatever the queue's length.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections import deque
from collections.abc import Callable

from spacesecrets.names import stronger

Key = tuple[str, str, str]  # kind, namespace, name


class WorkQueue:
    def __init__(self, rank: Callable[[Key], int] = lambda _: 0, ranks: int = 1) -> None:
        self._rank = rank
        self._ready: list[deque[Key]] = [deque() for _ in range(ranks)]
        self._reasons: dict[Key, str] = {}  # queued keys, with why they are queued
        self._ranked: dict[Key, int] = {}  # queued keys, with the rank they are queued at
        self._held: set[Key] = set()
        self._again: dict[Key, str] = {}  # added while held: queued when released
        self._timers: list[tuple[float, int, Key, str]] = []
        self._seq = itertools.count()
        self._ready_event = asyncio.Event()
        self._timer_event = asyncio.Event()

    def __len__(self) -> int:
        return len(self._reasons)

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing held (timers aside)."""
        return not self._reasons and not self._held

    def add(self, key: Key, reason: str) -> None:
        if key in self._held:
            self._again[key] = stronger(self._again.get(key), reason)
        elif key in self._reasons:
            self._reasons[key] = stronger(self._reasons[key], reason)
            self.rerank(key)
        else:
            self._reasons[key] = reason
            rank = self._ranked[key] = self._rank(key)
            self._ready[rank].append(key)
            self._ready_event.set()

    def rerank(self, key: Key) -> None:
        """Ask a queued key's rank again, and move it up if it is now lower."""
        queued = self._ranked.get(key)
        if queued is None:
            return
        rank = self._rank(key)
        if rank < queued:  # its old entry is skipped when reached
            self._ranked[key] = rank
            self._ready[rank].append(key)

    def add_at(self, when: float, key: Key, reason: str) -> None:
        """Add `key` at wall-clock time `when` (epoch seconds)."""
        heapq.heappush(self._timers, (when, next(self._seq), key, reason))
        if self._timers[0][2] == key:
            self._timer_event.set()  # an earlier deadline than the one the timer loop sleeps for

    def forget(self, key: Key) -> None:
        """Drop a queued key (its object is gone). Timers for it fire and are ignored upstream."""
        self._reasons.pop(key, None)  # its entry in the ready lists is skipped when reached
        self._ranked.pop(key, None)
        self._again.pop(key, None)

    def _pop(self) -> Key | None:
        for rank, ready in enumerate(self._ready):
            while ready:
                key = ready.popleft()
                if self._ranked.get(key) == rank:  # else forgotten, moved up, or handed out
                    del self._ranked[key]
                    return key
        return None

    async def get(self) -> tuple[Key, str]:
        while True:
            key = self._pop()
            if key is not None:
                self._held.add(key)
                return key, self._reasons.pop(key)
            self._ready_event.clear()
            await self._ready_event.wait()

    def done(self, key: Key) -> None:
        self._held.discard(key)
        again = self._again.pop(key, None)
        if again is not None:
            self.add(key, again)
        elif any(self._ready):
            self._ready_event.set()  # another worker may be waiting while keys are ready

    def due(self, now: float) -> list[tuple[float, Key, str]]:
        """Pop the timers due at `now`: (when, key, reason) each."""
        out = []
        while self._timers and self._timers[0][0] <= now:
            when, _, key, reason = heapq.heappop(self._timers)
            out.append((when, key, reason))
        return out

    def next_due(self) -> float | None:
        return self._timers[0][0] if self._timers else None

    async def wait_for_timers(self, timeout: float) -> None:
        """Sleep until the earliest timer, `timeout` at most, or until an earlier one is added."""
        self._timer_event.clear()
        first = self.next_due()
        delay = timeout if first is None else max(0.0, min(timeout, first - time.time()))
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._timer_event.wait(), delay)
