"""Shards: which operator process serves which namespace, and when a process may start or must stop.

Pure core (no clock, no API). `engine.shards` feeds it what the Leases say and applies what it
decides.

Each member of the ring keeps one Lease; in it, besides the renewal, it publishes its *view*: the
members it saw alive when it last renewed. A namespace belongs to the member that wins a
rendezvous (highest random weight) hash of the namespace's name over a view: a member joining or
leaving moves only the namespaces it wins or held, about 1/N of them, with no ring of virtual
nodes to balance.

The name, not the UID: every event the operator handles (a SpaceSecrets, a FlowSecretSync, a
target Secret, a RoleBinding, a Deployment) carries its namespace's name and none its UID, so a
process decides by name without a lookup; and the name is what a space's state is keyed by (its
history `history-<namespace>`, its sealed values' binding), so a namespace deleted and created
again under the same name stays with one member while the old one's objects go.

Handover without two servers (`may_serve`): a member serves a namespace only when
1. it wins the namespace in the view it is about to act on, and in the view it has *published*
   (so any other member that reads its Lease from now on sees it claim the namespace), and
2. no other live member's published view gives that member the namespace.
A member publishes a view only after it has stopped serving every namespace that view takes from
it (in-flight reconciles finished), and reads the others' Leases only after publishing. Two
members each publish, then read: whichever reads second sees the other's claim and refrains --
so two never serve one namespace, whatever the order of their renewals. A member that cannot
renew stops serving everything `FENCE_MARGIN` before the others may count it dead (`fenced`), and
the others count it dead only once its Lease has not changed for the lease duration measured on
their own clock (`expired`), so no two clocks need agree.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from spacesecrets.names import SHARD_VIEW_ANNOTATION

View = tuple[str, ...]  # member ids, sorted


def weight(member: str, namespace: str) -> int:
    """The rendezvous weight of `member` for `namespace` (stable across processes and Pythons:
    not `hash()`, which is salted per process)."""
    digest = hashlib.blake2b(f"{member}\0{namespace}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(namespace: str, members: Iterable[str]) -> str | None:
    """The member that `namespace` belongs to among `members` (None when there are none)."""
    best: tuple[int, str] | None = None
    for member in members:
        candidate = (weight(member, namespace), member)
        if best is None or candidate > best:
            best = candidate
    return best[1] if best else None


def view(me: str, live: Iterable[str]) -> View:
    """The view a member acts on: itself and the members it sees alive."""
    return tuple(sorted({me, *live}))


def expired(observed_for: float, duration: float) -> bool:
    """Whether a member whose Lease has not changed for `observed_for` seconds (on the
    observer's clock, since it first saw the Lease as it is) is dead."""
    return observed_for >= duration


def fenced(since_renewal: float, duration: float, margin: float) -> bool:
    """Whether a member must stop serving: its last successful renewal *began* `since_renewal`
    seconds ago, so others may soon count it dead. `margin` covers a reconcile in flight and the
    difference in clock rates."""
    return since_renewal >= duration - margin


@dataclass(frozen=True)
class Ring:
    """What one member knows of the ring at one moment."""

    me: str
    acting: View  # the view it acts on now (computed from the last read of the Leases)
    published: View  # the view its Lease shows (the last renewal that succeeded)
    others: Mapping[str, View] = field(default_factory=dict)  # live others' published views
    fenced: bool = False

    def may_serve(self, namespace: str) -> bool:
        if self.fenced:
            return False
        if owner(namespace, self.acting) != self.me:
            return False
        if owner(namespace, self.published) != self.me:
            return False  # not claimed where others can see it yet
        return all(owner(namespace, v) != m for m, v in self.others.items())

    def wins(self, namespace: str) -> bool:
        """Whether the namespace is this member's by its acting view (it may still wait for
        the previous owner to let go)."""
        return not self.fenced and owner(namespace, self.acting) == self.me

    def stable(self) -> bool:
        """Every live member has published the view this one acts on: nothing is in handover."""
        return self.published == self.acting and all(v == self.acting for v in self.others.values())


@dataclass(frozen=True)
class Handover:
    """What changes for one member between two rings, over the namespaces it knows of."""

    adopt: frozenset[str]
    release: frozenset[str]


def handover(before: Ring | None, after: Ring, namespaces: Iterable[str]) -> Handover:
    """The namespaces to start serving and to stop serving when `before` becomes `after`."""
    adopt, release = set(), set()
    for ns in namespaces:
        was = before.may_serve(ns) if before is not None else False
        now = after.may_serve(ns)
        if now and not was:
            adopt.add(ns)
        elif was and not now:
            release.add(ns)
    return Handover(frozenset(adopt), frozenset(release))


def who_serves(namespace: str, live: Mapping[str, View]) -> tuple[str | None, bool]:
    """As seen from outside (`spacesecrets status`), from the live members' published views:
    the member the namespace belongs to, and whether it serves it now (False while a handover
    waits for the previous owner to let go)."""
    member = owner(namespace, live)
    if member is None:
        return None, False
    others = {m: v for m, v in live.items() if m != member}
    ring = Ring(member, acting=tuple(sorted(live)), published=live[member], others=others)
    return member, ring.may_serve(namespace)


def published_view(lease: Mapping[str, Any]) -> tuple[str, View]:
    """A Lease's member and the view it published."""
    meta = lease.get("metadata") or {}
    member = str((lease.get("spec") or {}).get("holderIdentity") or "")
    text = str((meta.get("annotations") or {}).get(SHARD_VIEW_ANNOTATION) or "")
    return member, tuple(sorted(m for m in text.split(",") if m))
