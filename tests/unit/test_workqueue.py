"""The work queue: each key queued once, never held twice, ranks first, timers in order."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import types

import pytest

from spacesecrets.core.projection import SpaceView
from spacesecrets.engine.controller import (
    MAX_BUG_RETRIES,
    MAX_RETRY_SECONDS,
    Controller,
    _outranked,
)
from spacesecrets.engine.index import SpaceIndex
from spacesecrets.engine.state import SpaceOwners, State
from spacesecrets.engine.workqueue import WorkQueue
from spacesecrets.kube import NotFound, Permanent, Temporary
from spacesecrets.names import QueueReason, stronger

SPACE = ("space", "ns", "secrets")
FLOW = ("flow", "ns", "f")


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_a_key_added_twice_is_handed_out_once_with_the_stronger_reason() -> None:
    async def go() -> None:
        q = WorkQueue()
        q.add(FLOW, "autosync")
        q.add(FLOW, "drift")
        q.add(FLOW, "autosync")
        assert len(q) == 1
        assert await q.get() == (FLOW, "drift")
        assert len(q) == 0

    run(go())


def test_a_key_added_while_held_runs_again_after_release_not_before() -> None:
    async def go() -> None:
        q = WorkQueue()
        q.add(FLOW, "create")
        key, _ = await q.get()
        q.add(FLOW, "save")
        assert len(q) == 0  # not handed to a second worker while the first holds it
        with pytest.raises(TimeoutError):  # a held key is not handed out twice
            await asyncio.wait_for(q.get(), 0.05)
        q.done(key)
        assert await asyncio.wait_for(q.get(), 1) == (FLOW, "save")

    run(go())


def test_lower_ranks_first() -> None:
    async def go() -> None:
        q = WorkQueue(rank=lambda k: 0 if k[0] == "space" else 1, ranks=2)
        q.add(FLOW, "create")
        q.add(SPACE, "change")
        assert (await q.get())[0] == SPACE
        assert (await q.get())[0] == FLOW

    run(go())


def test_a_key_whose_rank_fell_moves_ahead_and_is_handed_out_once() -> None:
    async def go() -> None:
        ready: set[str] = set()
        q = WorkQueue(rank=lambda k: 1 if k[0] == "space" else 0 if k[1] in ready else 2, ranks=3)
        flows = [("flow", f"ns{i}", "f") for i in range(3)]
        spaces = [("space", f"ns{i}", "secrets") for i in range(3)]
        for key in [*flows, *spaces]:
            q.add(key, "create")
        assert await q.get() == (spaces[0], "create")
        ready.add("ns0")  # its space is ready: its flow goes ahead of the other spaces
        q.rerank(flows[0])
        q.add(flows[1], "space ready")  # not ready yet: stays where it is
        assert await q.get() == (flows[0], "create")
        ready.add("ns2")
        q.add(flows[2], "space ready")  # an add moves it up too, keeping the stronger reason
        assert await q.get() == (flows[2], "create")
        q.rerank(("flow", "elsewhere", "f"))  # not queued: nothing
        assert [(await q.get())[0] for _ in range(3)] == [spaces[1], spaces[2], flows[1]]
        assert len(q) == 0
        with pytest.raises(TimeoutError):  # the stale entries left behind hand nothing out
            await asyncio.wait_for(q.get(), 0.05)

    run(go())


def test_a_key_moved_up_then_forgotten_is_not_handed_out() -> None:
    async def go() -> None:
        rank = {"f": 1}
        q = WorkQueue(rank=lambda k: rank.get(k[2], 0), ranks=2)
        q.add(FLOW, "create")
        rank["f"] = 0
        q.rerank(FLOW)
        q.forget(FLOW)
        q.add(SPACE, "change")
        assert await q.get() == (SPACE, "change")
        assert len(q) == 0
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(q.get(), 0.05)

    run(go())


def test_forget_drops_a_queued_key() -> None:
    async def go() -> None:
        q = WorkQueue()
        q.add(FLOW, "create")
        q.add(SPACE, "change")
        q.forget(FLOW)
        assert await q.get() == (SPACE, "change")
        assert len(q) == 0

    run(go())


def test_timers_fire_in_order_and_an_earlier_one_wakes_the_sleeper() -> None:
    async def go() -> None:
        q = WorkQueue()
        now = time.time()
        q.add_at(now + 3600, SPACE, "retry")
        sleeper = asyncio.ensure_future(q.wait_for_timers(3600))
        await asyncio.sleep(0)
        q.add_at(now - 1, FLOW, "autosync")
        await asyncio.wait_for(sleeper, 1)  # woken by the earlier deadline, not after an hour
        assert q.due(time.time()) == [(now - 1, FLOW, "autosync")]
        assert q.next_due() == now + 3600
        assert q.due(now + 3600) == [(now + 3600, SPACE, "retry")]

    run(go())


def test_reasons_merge_toward_the_one_with_consequences() -> None:
    assert stronger(None, "autosync") == "autosync"
    assert stronger("autosync", "drift") == "drift"
    assert stronger("save", "autosync") == "save"
    assert stronger("resume", "space ready") == "resume"
    assert stronger("owners binding drift", "deleted") == "deleted"  # a deleted space is deleted
    assert stronger("space ready", "owners changed") == "owners changed"
    assert stronger("change", "change") == "change"
    # a Sync now request is neither a resume (which may keep the issued version) nor "space
    # ready" (which skips a synced flow); a drift still says it restored the target
    assert stronger("resume", "sync now") == "sync now"
    assert stronger("sync now", "space ready") == "sync now"
    assert stronger("sync now", "drift") == "drift"
    ranks = list(QueueReason)
    assert ranks[0] is QueueReason.DELETED and ranks[-1] is QueueReason.SPACE_READY


def test_a_live_peer_of_higher_priority_outranks_us_a_dead_one_does_not() -> None:
    now = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)

    def peering(priority: int, seconds_ago: int) -> dict[str, object]:
        seen = (now - dt.timedelta(seconds=seconds_ago)).isoformat()
        return {"status": {"peer-a": {"priority": priority, "lifetime": 15, "lastseen": seen}}}

    assert _outranked(peering(200, 5), 100, now)
    assert not _outranked(peering(200, 60), 100, now)  # its lifetime ran out
    assert not _outranked(peering(50, 5), 100, now)
    assert not _outranked(peering(100, 5), 100, now)  # that is us
    assert not _outranked({"status": {"peer-a": "garbage"}}, 100, now)


def test_a_retry_fires_only_while_its_key_is_still_failing() -> None:
    engine = types.SimpleNamespace(state=State())  # no reconcile runs: only the queue's ranks
    controller = Controller(engine=engine, workers=1)  # type: ignore[arg-type]
    controller._retry_after(30, FLOW, "create")
    when = controller._retries[FLOW]
    controller._succeeded(FLOW, None)  # e.g. its space arrived first and woke it
    controller._fire(when, FLOW, "create")
    assert len(controller.queue) == 0  # the stale retry costs nothing
    controller._retry_after(30, FLOW, "create")
    controller._fire(controller._retries[FLOW], FLOW, "create")
    assert len(controller.queue) == 1
    controller.executor.shutdown()


def test_the_space_index_starts_empty_when_the_crd_is_not_served_yet() -> None:
    class NoCrdYet:  # what the API answers in the seconds before a new CRD is established
        def list_custom_metadata(self, plural: str, namespace: str | None = None) -> None:
            raise NotFound(f"list {plural}")

        def list_namespace_uids(self) -> tuple[dict[str, str], int]:
            return {}, 1

    state = State()
    SpaceIndex(NoCrdYet(), state).seed()  # type: ignore[arg-type]
    assert state.live_spaces("anywhere") == {}


def test_a_permanent_failure_waits_for_a_change_not_a_timer() -> None:
    controller = Controller(engine=None, workers=1)  # type: ignore[arg-type]  # no reconcile runs
    for exc in (
        Permanent("replace Secret ns/t: field is immutable", 422),
        Permanent("patch flowsecretsyncs ns/f status: forbidden", 403),
        NotFound("get Secret ns/t"),
    ):
        controller._failed(FLOW, "autosync", exc)
        assert FLOW not in controller._retries, exc
        assert controller.queue.next_due() is None, exc
    controller.executor.shutdown()


def test_temporary_failures_back_off_with_a_cap() -> None:
    controller = Controller(engine=None, workers=1)  # type: ignore[arg-type]
    delays = []
    for _ in range(10):
        before = time.time()
        controller._failed(FLOW, "create", Temporary("HTTP 409 Conflict", delay=0.1))
        delays.append(round(controller._retries[FLOW] - before))
    assert delays == sorted(delays)
    assert delays[0] <= 1 and delays[-1] == MAX_RETRY_SECONDS
    controller.executor.shutdown()


def test_a_bug_is_retried_a_few_times_and_its_traceback_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    controller = Controller(engine=None, workers=1)  # type: ignore[arg-type]
    retried = 0
    for _ in range(MAX_BUG_RETRIES + 3):
        controller._retries.pop(FLOW, None)
        controller._failed(FLOW, "create", KeyError("nobody expected this"))
        retried += FLOW in controller._retries
    assert retried == MAX_BUG_RETRIES
    assert sum(1 for r in caplog.records if r.exc_info) == 1
    controller.executor.shutdown()


def test_a_space_reconciled_sends_its_queued_flows_ahead_of_the_spaces_still_queued() -> None:
    """The cold start's pipeline, in the controller: flows queued behind every space (their
    spaces unknown yet) move to the front once their own space is recorded, and only then."""

    async def go() -> None:
        state = State()
        engine = types.SimpleNamespace(
            state=state, flows=types.SimpleNamespace(to_recheck=lambda ns: [])
        )
        controller = Controller(engine=engine, workers=1)  # type: ignore[arg-type]
        spaces = [("space", f"ns{i}", "secrets") for i in range(3)]
        flows = [("flow", f"ns{i}", "f") for i in range(3)]
        for i, key in enumerate(flows):
            body = {"metadata": {"namespace": f"ns{i}", "name": "f", "uid": f"u{i}"}, "spec": {}}
            state.register_flow(body)
            controller.queue.add(key, "create")
        for key in spaces:
            controller.queue.add(key, "change")
        taken, _ = await controller.queue.get()
        assert taken == spaces[0]  # spaces first: no flow's space is known
        # ns0's reconcile recorded its version (what `remember` does after the history write)
        view = SpaceView.of("ns0", version=1, created_at="t", updated_at="t", keys={}, values={})
        state.remember_space(view, SpaceOwners("secrets", "s0", ()))
        packed = b"{}"
        controller._bodies[taken] = packed
        controller._succeeded(taken, packed)
        controller.queue.done(taken)
        assert await controller.queue.get() == (flows[0], "create")  # ahead of ns1 and ns2
        assert [(await controller.queue.get())[0] for _ in range(4)] == [*spaces[1:], *flows[1:]]
        controller.executor.shutdown()

    run(go())
