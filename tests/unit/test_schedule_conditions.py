"""Derived autosync ticks and condition bookkeeping: pure."""

from __future__ import annotations

from spacesecrets.core import conditions, schedule


def test_ticks_are_periodic_and_phase_is_stable() -> None:
    period = 60.0
    t = schedule.next_tick("uid-a", period, 1_000_000.0)
    assert 1_000_000.0 < t <= 1_000_060.0
    assert schedule.next_tick("uid-a", period, t) == t + period
    assert schedule.last_tick("uid-a", period, t) == t
    # derived from the uid alone: a restarted operator computes the same ticks
    assert schedule.next_tick("uid-a", period, 1_000_000.0) == t


def test_phases_spread_over_the_period() -> None:
    phases = [schedule.phase(f"uid-{i}", 60.0) for i in range(1000)]
    buckets = [0] * 6
    for p in phases:
        assert 0 <= p < 60
        buckets[int(p // 10)] += 1
    assert min(buckets) > 100  # roughly uniform, not all at once


def test_autosync_periods() -> None:
    assert [schedule.period_seconds(a) for a in ("1m", "30m", "60m", "12h", "24h")] == [
        60,
        1800,
        3600,
        43200,
        86400,
    ]
    assert schedule.period_seconds("1m", 0.05) == 3.0


def test_transition_time_kept_when_status_does_not_flip() -> None:
    c1 = conditions.set_condition([], "Ready", True, "Unsealed", "v1", now="t1")
    c2 = conditions.set_condition(c1, "Ready", True, "Unsealed", "v2", now="t2")
    assert c2[0]["lastTransitionTime"] == "t1" and c2[0]["message"] == "v2"
    c3 = conditions.set_condition(c2, "Ready", False, "CannotOpen", "bad", now="t3")
    assert c3[0]["lastTransitionTime"] == "t3"
    assert conditions.set_condition(c3, "Ready", False, "CannotOpen", "bad", now="t4") == c3


def test_conditions_keyed_by_type() -> None:
    c = conditions.set_condition([], "Synced", True, "Synced", "ok", now="t")
    c = conditions.set_condition(c, "ConfigMapTarget", True, "X", "y", now="t")
    c = conditions.set_condition(c, "Synced", False, "MissingKey", "z", now="t2")
    assert [x["type"] for x in c] == ["Synced", "ConfigMapTarget"]
    assert conditions.get_condition(c, "Synced")["reason"] == "MissingKey"


def test_every_autosync_choice_of_the_api_has_a_period() -> None:
    from spacesecrets.schema.models import Autosync

    assert set(schedule.AUTOSYNC_SECONDS) == {choice.value for choice in Autosync}
