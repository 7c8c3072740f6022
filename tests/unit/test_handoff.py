"""Handing a feed's events to the event loop (`engine.feeds.Handoff`): in order, on the loop, the
feed not waiting for each event, and waiting while the backlog is full. No cluster."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from typing import Any

from spacesecrets.engine.feeds import Handoff


def _event(i: int) -> tuple[str, dict[str, Any]]:
    return "MODIFIED", {"metadata": {"name": f"s{i}"}}


def test_events_are_handled_in_order_on_the_loop_thread() -> None:
    async def main() -> tuple[list[str], set[int]]:
        loop, names, threads, done = asyncio.get_running_loop(), [], set(), asyncio.Event()

        def handle(type_: str, obj: Mapping[str, Any]) -> None:
            names.append(obj["metadata"]["name"])
            threads.add(threading.get_ident())
            if len(names) == 1000:
                done.set()

        handoff = Handoff(loop, handle, limit=10)

        def feed() -> None:
            for i in range(1000):
                handoff([_event(i)])

        thread = threading.Thread(target=feed)
        thread.start()
        await asyncio.wait_for(done.wait(), 30)
        thread.join()
        return names, threads

    names, threads = asyncio.run(main())
    assert names == [f"s{i}" for i in range(1000)]
    assert threads == {threading.get_ident()}  # the loop's thread, not the feed's


def test_the_feed_does_not_wait_for_a_busy_loop_until_its_backlog_is_full() -> None:
    """While the loop is busy, events under the limit are taken without waiting; the event that
    fills the backlog waits for the loop, and one wake-up of the loop handles them all."""

    async def main() -> None:
        loop, handled = asyncio.get_running_loop(), []
        two, filled = threading.Event(), threading.Event()
        handoff = Handoff(loop, lambda t, o: handled.append(o["metadata"]["name"]), limit=3)
        drains = 0
        schedule = loop.call_soon_threadsafe

        def counted(callback: Any, *args: Any, **kwargs: Any) -> Any:
            nonlocal drains
            drains += callback == handoff._drain
            return schedule(callback, *args, **kwargs)

        loop.call_soon_threadsafe = counted  # type: ignore[method-assign]

        def feed() -> None:
            handoff([_event(0)])
            handoff([_event(1)])
            two.set()
            handoff([_event(2)])  # fills the backlog
            filled.set()

        thread = threading.Thread(target=feed)
        thread.start()
        # the loop is busy (blocked here): the first two were taken without it
        assert two.wait(10), "the feed waited for a busy loop"
        assert not filled.wait(0.5), "a full backlog did not wait for the loop"
        assert handled == []
        await asyncio.to_thread(filled.wait, 10)  # the loop is free: it drains, the feed goes on
        thread.join()
        assert handled == ["s0", "s1", "s2"]
        assert drains == 1

    asyncio.run(main())


def test_a_failing_event_does_not_stop_the_others() -> None:
    async def main() -> list[str]:
        loop, handled, done = asyncio.get_running_loop(), [], asyncio.Event()

        def handle(type_: str, obj: Mapping[str, Any]) -> None:
            name = obj["metadata"]["name"]
            if name == "s1":
                raise RuntimeError("a bug")
            handled.append(name)
            if name == "s2":
                done.set()

        handoff = Handoff(loop, handle)
        await asyncio.to_thread(handoff, [_event(0), _event(1), _event(2)])
        await asyncio.wait_for(done.wait(), 10)
        return handled

    assert asyncio.run(main()) == ["s0", "s2"]
