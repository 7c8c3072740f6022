"""The shards' decisions (core.sharding) and the gate in front of the controller (engine.shards),
with no cluster: who owns a namespace, when a member may begin, when it must stop."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import Counter
from typing import Any

import pytest

from spacesecrets.core import sharding
from spacesecrets.core.settings import Settings, SettingsError
from spacesecrets.core.sharding import Ring, handover, owner, published_view
from spacesecrets.engine.shards import ShardConfig, Shards, lease_body

NAMESPACES = [f"team-{i}" for i in range(2000)]


def test_owner_is_stable_and_spread() -> None:
    members = ["a", "b", "c", "d"]
    counts = Counter(owner(ns, members) for ns in NAMESPACES)
    assert set(counts) == set(members)
    assert all(350 < n < 650 for n in counts.values()), counts  # about a quarter each
    assert owner("x", reversed(members)) == owner("x", members)  # order does not matter
    assert owner("x", []) is None


def test_a_member_joining_moves_only_what_it_wins() -> None:
    before = {ns: owner(ns, ["a", "b", "c"]) for ns in NAMESPACES}
    after = {ns: owner(ns, ["a", "b", "c", "d"]) for ns in NAMESPACES}
    moved = [ns for ns in NAMESPACES if before[ns] != after[ns]]
    assert all(after[ns] == "d" for ns in moved)
    assert 350 < len(moved) < 650
    # and one leaving moves only its own, spread over the rest
    gone = {ns: owner(ns, ["a", "c", "d"]) for ns in NAMESPACES}
    assert all(gone[ns] == after[ns] for ns in NAMESPACES if after[ns] != "b")


def test_weights_do_not_depend_on_the_process() -> None:
    # blake2b, not hash(): every process, every Python agrees (a fixed expectation)
    assert sharding.weight("a", "team-1") == sharding.weight("a", "team-1")
    assert owner("team-1", ["a", "b"]) == owner("team-1", ["b", "a"])
    assert sharding.weight("a", "team-1") != sharding.weight("b", "team-1")


def _ns_moving(src: str, dst: str, before: list[str], after: list[str]) -> str:
    return next(ns for ns in NAMESPACES if owner(ns, before) == src and owner(ns, after) == dst)


def test_a_joining_member_waits_for_the_owner_to_let_go() -> None:
    ns = _ns_moving("a", "b", ["a"], ["a", "b"])
    # b has published its view with itself in it; a has not seen b yet
    b = Ring("b", acting=("a", "b"), published=("a", "b"), others={"a": ("a",)})
    assert not b.may_serve(ns)  # a's published view still gives a the namespace
    # a reads b's Lease: it stops at once, before it publishes anything
    a_before = Ring("a", acting=("a",), published=("a",), others={})
    a_after = Ring("a", acting=("a", "b"), published=("a",), others={"b": ("a", "b")})
    assert a_before.may_serve(ns) and not a_after.may_serve(ns)
    assert ns in handover(a_before, a_after, [ns]).release
    # a publishes the view it acts on: now b may begin
    b_next = Ring("b", acting=("a", "b"), published=("a", "b"), others={"a": ("a", "b")})
    assert b_next.may_serve(ns)
    assert ns in handover(b, b_next, [ns]).adopt


def test_a_member_serves_only_what_it_has_claimed_where_others_see_it() -> None:
    ns = _ns_moving("a", "b", ["a"], ["a", "b"])
    # b acts on a view with itself, but its Lease does not show that view yet
    b = Ring("b", acting=("a", "b"), published=(), others={"a": ("a", "b")})
    assert not b.may_serve(ns)


def test_a_dead_members_namespaces_move_once_its_lease_expired() -> None:
    ns = _ns_moving("c", "a", ["a", "b", "c"], ["a", "b"])
    alive = Ring(
        "a", ("a", "b", "c"), ("a", "b", "c"), {"b": ("a", "b", "c"), "c": ("a", "b", "c")}
    )
    assert not alive.may_serve(ns)
    # c's Lease expired: a no longer counts it; it serves after publishing the smaller view
    waiting = Ring("a", ("a", "b"), ("a", "b", "c"), {"b": ("a", "b", "c")})
    assert not waiting.may_serve(ns)
    serving = Ring("a", ("a", "b"), ("a", "b"), {"b": ("a", "b", "c")})
    assert serving.may_serve(ns)  # b's stale view gives ns to c, not to b
    assert sharding.expired(15.0, 15.0) and not sharding.expired(14.9, 15.0)


def test_a_member_that_cannot_renew_stops_before_the_others_may_begin() -> None:
    duration, margin = 15.0, 5.0
    assert not sharding.fenced(9.9, duration, margin)
    assert sharding.fenced(10.0, duration, margin)
    ring = Ring("a", ("a",), ("a",), fenced=True)
    assert not any(ring.may_serve(ns) for ns in NAMESPACES[:50])
    # the others count it dead only after the full duration on their own clock, which began
    # no earlier than its renewal did
    assert not sharding.expired(duration - margin, duration)


def _rings(views: dict[str, tuple[str, ...]], acting: dict[str, tuple[str, ...]]) -> list[Ring]:
    """Each member's ring when each published `views[m]` and acts on `acting[m]`."""
    return [Ring(m, acting[m], views[m], {o: v for o, v in views.items() if o != m}) for m in views]


@pytest.mark.parametrize("members", [("a", "b"), ("a", "b", "c")])
def test_no_namespace_has_two_servers_whatever_the_views(members: tuple[str, ...]) -> None:
    """Every combination of published and acting views (each member sees some subset of the
    others): at most one member may serve any namespace."""
    subsets = {
        m: [
            tuple(sorted({m, *others}))
            for r in range(len(members))
            for others in itertools.combinations([o for o in members if o != m], r)
        ]
        for m in members
    }
    for published in itertools.product(*(subsets[m] for m in members)):
        for acting in itertools.product(*(subsets[m] for m in members)):
            views = dict(zip(members, published, strict=True))
            rings = _rings(views, dict(zip(members, acting, strict=True)))
            for ns in NAMESPACES[:40]:
                assert sum(r.may_serve(ns) for r in rings) <= 1, (ns, published, acting)


def test_once_the_views_agree_every_namespace_has_exactly_one_server() -> None:
    members = ("a", "b", "c")
    rings = _rings(dict.fromkeys(members, members), dict.fromkeys(members, members))
    assert all(r.stable() for r in rings)
    for ns in NAMESPACES[:200]:
        assert sum(r.may_serve(ns) for r in rings) == 1


def test_the_lease_publishes_the_view() -> None:
    import datetime as dt

    config = ShardConfig("op-1", "spacesecrets-system", duration=6.0, renew=1.0, margin=2.0)
    body = lease_body(config, ("op-1", "op-2"), dt.datetime(2026, 1, 2, 3, 4, 5, 6, dt.UTC))
    assert body["metadata"]["name"] == "spacesecrets-shard-op-1"
    assert body["spec"] == {
        "holderIdentity": "op-1",
        "leaseDurationSeconds": 6,
        "renewTime": "2026-01-02T03:04:05.000006Z",
    }
    assert published_view(body) == ("op-1", ("op-1", "op-2"))


def test_settings_for_shards() -> None:
    settings = Settings.from_env({"SPACESECRETS_SHARD_MEMBER": "op-0"})
    assert (settings.shard_member, settings.shard_lease, settings.shard_renew) == ("op-0", 15, 3)
    with pytest.raises(SettingsError, match="exclude each other"):
        Settings.from_env({"SPACESECRETS_SHARD_MEMBER": "op-0", "SPACESECRETS_PEERING": "x"})
    with pytest.raises(SettingsError, match="DNS name"):
        Settings.from_env({"SPACESECRETS_SHARD_MEMBER": "Op_0"})
    with pytest.raises(SettingsError, match="a third"):
        Settings.from_env({"SPACESECRETS_SHARD_MEMBER": "a", "SPACESECRETS_SHARD_RENEW": "10s"})


# -- the gate ------------------------------------------------------------------------------------


class FakeController:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.released: list[str] = []

    def space_event(self, event_type: str, body: Any) -> None:
        self.events.append(("space", body["metadata"]["name"]))

    def flow_event(self, event_type: str, body: Any) -> None:
        self.events.append(("flow", body["metadata"]["name"]))

    def release(self, namespace: str) -> None:
        self.released.append(namespace)

    def queue_depth(self) -> int:
        return 0


class FakeKube:
    def __init__(self, spaces: dict[str, list[dict[str, Any]]]) -> None:
        self.spaces = spaces

    def iter_custom(self, plural: str) -> list[dict[str, Any]]:
        if plural != "spacesecrets":
            return []
        return [body for bodies in self.spaces.values() for body in bodies]


def _obj(ns: str, name: str, rv: int) -> dict[str, Any]:
    return {"metadata": {"namespace": ns, "name": name, "resourceVersion": str(rv)}}


def _shards(kube: Any = None) -> Shards:
    return Shards(ShardConfig("a", "ops", duration=6.0, renew=1.0, margin=2.0), kube)


def test_events_of_namespaces_not_served_are_dropped() -> None:
    shards = _shards()
    mine = next(ns for ns in NAMESPACES if owner(ns, ["a", "b"]) == "a")
    theirs = next(ns for ns in NAMESPACES if owner(ns, ["a", "b"]) == "b")
    assert not shards.admit("space", _obj(mine, "s", 1))  # nothing published yet
    shards.ring = Ring("a", ("a", "b"), ("a", "b"), {"b": ("a", "b")})
    assert shards.admit("space", _obj(mine, "s", 1))
    assert not shards.admit("space", _obj(theirs, "s", 1))
    assert shards.served() == 1  # of the two namespaces it knows


def test_a_release_waits_for_the_reconcile_in_flight() -> None:
    async def scenario() -> None:
        shards, controller = _shards(), FakeController()
        shards.controller = controller
        ns = NAMESPACES[0]
        shards.ring = Ring("a", ("a",), ("a",))
        shards.note(ns)
        entered, leave = threading.Event(), threading.Event()

        def reconcile() -> None:
            with shards.serving(ns) as ours:
                assert ours
                entered.set()
                leave.wait(5)

        worker = threading.Thread(target=reconcile)
        worker.start()
        entered.wait(5)
        b_wins = Ring("a", ("a", "b"), ("a",), {"b": ("a", "b")})
        if owner(ns, ("a", "b")) != "b":
            b_wins = Ring("a", ("a",), ("a",), {"b": ("a",)}, fenced=True)
        task = asyncio.create_task(shards.apply(b_wins))
        await asyncio.sleep(0.2)
        assert not task.done() and controller.released == []  # still in flight
        with shards.serving(ns) as ours:
            assert not ours  # a new reconcile is refused at once
        leave.set()
        change = await task
        worker.join()
        assert change.release == {ns} and controller.released == [ns]

    asyncio.run(scenario())


class LeaseKube:
    """The Lease calls of a Kube, recording what each renewal publishes."""

    def __init__(self) -> None:
        self.published: list[tuple[str, ...]] = []

    def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.replace_lease(namespace, body)

    def replace_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self.published.append(published_view(body)[1])
        return {"metadata": {"resourceVersion": str(len(self.published))}}


def test_a_reconcile_outlasting_the_release_keeps_its_namespace_claimed() -> None:
    """Under load (20,000 spaces on 2 cores) a reconcile's writes can take longer than a release
    waits for them. The renewal must then go on publishing the view that still claims the
    namespace, or the next owner begins while our last write is on its way (the bench saw
    A A B B B A). The reconcile that outlasts the wait is held here by hand: an API server slow
    enough to provoke it for real takes thousands of spaces."""
    ns = next(ns for ns in NAMESPACES if owner(ns, ["a", "b"]) == "b")

    async def scenario() -> None:
        kube, controller = LeaseKube(), FakeController()
        shards = Shards(ShardConfig("a", "ops", duration=6.0, renew=1.0, margin=1.0), kube)
        shards.controller = controller
        shards.ring = Ring("a", ("a",), ("a",))
        shards.note(ns)
        assert shards._renew() == ("a",)
        entered, leave = threading.Event(), threading.Event()

        def reconcile() -> None:
            with shards.serving(ns) as ours:
                assert ours
                entered.set()
                leave.wait(10)

        worker = threading.Thread(target=reconcile)
        worker.start()
        assert entered.wait(5)
        b_joined = Ring("a", ("a", "b"), ("a",), {"b": ("a", "b")})
        change = await shards.apply(b_joined)  # gives up waiting after the margin
        assert change.release == {ns}
        assert shards._renew() == ("a",)  # still claimed: b may not begin
        assert controller.released == []
        leave.set()
        worker.join()
        await shards.apply(Ring("a", ("a", "b"), ("a",), {"b": ("a", "b")}))
        assert controller.released == [ns]
        assert shards._renew() == ("a", "b")  # now b may begin
        assert kube.published == [("a",), ("a",), ("a", "b")]

    asyncio.run(scenario())


def test_an_adoption_lists_and_skips_what_the_watch_delivered_meanwhile() -> None:
    ns = next(ns for ns in NAMESPACES if owner(ns, ["a"]) == "a")
    kube = FakeKube({ns: [_obj(ns, "secrets", 10), _obj(ns, "other", 12)]})

    async def scenario() -> None:
        shards, controller = _shards(kube), FakeController()
        shards.controller = controller
        shards.note(ns)
        real_list = shards._list

        def slow_list(namespaces: frozenset[str]) -> Any:
            # the watch delivers "other" (newer) while the listing is on its way
            assert shards.admit("space", _obj(ns, "other", 13))
            return real_list(namespaces)

        shards._list = slow_list  # type: ignore[method-assign]
        change = await shards.apply(Ring("a", ("a",), ("a",)))
        assert change.adopt == {ns}
        assert controller.events == [("space", "secrets")]
        # a watch event older than what the adoption listed is stale: dropped, once
        assert not shards.admit("space", _obj(ns, "secrets", 9))
        assert shards.admit("space", _obj(ns, "secrets", 11))
        assert shards.admit("space", _obj(ns, "secrets", 10))

    asyncio.run(scenario())
