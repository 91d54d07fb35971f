"""The GC policy of the Python workers: long-lived objects frozen, cycles still found."""

from __future__ import annotations

import gc
import weakref

import pytest

from flink_jobs.runtime import gc_policy
from flink_jobs.runtime.gc_policy import QuietCollector


class _Node:
    """A weak-referenceable object that can sit in a reference cycle."""

    def __init__(self) -> None:
        self.other: object = None


def _cycle() -> weakref.ref:
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def _unfrozen(*objects: object) -> int:
    """How many of ``objects`` are in generations 0-2, which collections scan."""
    tracked = {id(o) for o in gc.get_objects()}
    return sum(id(o) in tracked for o in objects)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def installed():
    """A collector on gc.callbacks for the test only; Python's own collector afterwards."""
    made: list[QuietCollector] = []

    def install(full_interval: float, **kwargs) -> QuietCollector:
        collector = QuietCollector(full_interval, **kwargs)
        gc.callbacks.append(collector._on_gc)
        made.append(collector)
        return collector

    gc.collect()
    yield install
    for collector in made:
        collector.uninstall()
    gc.collect()


def test_survivors_of_a_middle_generation_collection_are_frozen(installed):
    installed(3600.0)
    kept = [[i] for i in range(1000)]
    gc.collect(1)
    assert gc.get_freeze_count() >= len(kept)
    # Frozen objects are still freed by reference counting.
    node = _Node()
    ref = weakref.ref(node)
    gc.collect(1)
    del node
    assert ref() is None


def test_young_cycles_are_still_collected(installed):
    installed(3600.0)
    gc.collect(1)
    ref = _cycle()
    gc.collect(0)
    assert ref() is None


def test_a_cycle_that_was_frozen_is_found_by_the_periodic_full_collection(installed):
    clock = _Clock()
    seen: list[tuple[str, float, int]] = []
    collector = installed(60.0, observer=lambda g, s, n: seen.append((g, s, n)), clock=clock)
    holder = [_Node()]
    holder[0].other = _Node()
    holder[0].other.other = holder[0]
    ref = weakref.ref(holder[0])
    gc.collect(1)  # the cycle survives (still referenced) and is frozen
    holder.clear()  # now it is garbage, but only a cycle
    gc.collect()
    assert ref() is not None, "a frozen cycle is not collected by ordinary collections"
    assert collector.tick() is None, "not due yet"
    clock.now = 61.0
    pause = collector.tick()
    assert pause is not None and pause >= 0
    assert ref() is None
    assert collector.full_collections == 1
    full = [(s, n) for g, s, n in seen if g == "full"]
    assert len(full) == 1 and full[0][0] == pause
    assert full[0][1] >= 2, "the full collection reports what it found: at least the two objects of the cycle"
    assert collector.tick() is None, "the next one is a full interval away"


def test_what_a_collection_found_is_reported_with_its_pause(installed):
    seen: list[tuple[str, float, int]] = []
    collector = installed(3600.0, observer=lambda g, s, n: seen.append((g, s, n)))
    gc.collect(0)
    collector.tick()
    seen.clear()
    ref = _cycle()
    gc.collect(0)
    collector.tick()
    assert ref() is None
    assert [(g, n) for g, _, n in seen] == [("0", 2)]


def test_long_lived_objects_are_frozen_at_the_next_tick(installed):
    collector = installed(3600.0)
    gc.collect(1)
    kept = [[i] for i in range(1000)]  # a decoded state: young containers that will live long
    collector.long_lived()
    assert _unfrozen(kept, *kept) == 1001, "not in the middle of a call"
    collector.tick()
    assert _unfrozen(kept, *kept) == 0
    again = [[i] for i in range(10)]
    collector.tick()
    assert _unfrozen(again, *again) == 11, "once per long_lived"


def test_long_lived_freezes_nothing_under_pythons_collector(installed):
    collector = installed(0)
    kept = [[i] for i in range(100)]
    collector.long_lived()
    collector.tick()
    assert _unfrozen(kept, *kept) == 101


def test_pauses_are_reported_from_tick_by_generation(installed):
    seen: list[tuple[str, float, int]] = []
    collector = installed(3600.0, observer=lambda g, s, n: seen.append((g, s, n)))
    gc.collect(0)
    gc.collect(1)
    gc.collect(2)
    assert seen == [], "nothing is reported from inside the collector"
    collector.tick()
    assert [g for g, _, _ in seen] == ["0", "1", "2"]
    assert all(s >= 0 for _, s, _ in seen)


def test_interval_zero_leaves_pythons_collector_alone(installed):
    seen: list[tuple[str, float, int]] = []
    collector = installed(0, observer=lambda g, s, n: seen.append((g, s, n)))
    before = gc.get_freeze_count()
    gc.collect(1)
    assert gc.get_freeze_count() == before
    assert collector.tick() is None
    assert [g for g, _, _ in seen] == ["1"], "still observed"


def test_install_is_once_per_process():
    first = gc_policy.install(3600.0)
    try:
        assert gc_policy.install(0) is first
        assert first.freezing
    finally:
        first.uninstall()
    second = gc_policy.install(0)
    try:
        assert second is not first and not second.freezing
    finally:
        second.uninstall()


def test_negative_interval_is_refused():
    with pytest.raises(ValueError, match="full_interval"):
        QuietCollector(-1)
