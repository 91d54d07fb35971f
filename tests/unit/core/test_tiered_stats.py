"""The generic aggregates' one feature per event type (``TieredStatsFeature``) reads exactly what a
StatsFeature per resolution reads: every window's count, sum, average, minimum and maximum, its
next exit and the instants at which one leaves, with events in order, late, and after long gaps;
and it takes over the three StatsFeatures of state format 6."""

from __future__ import annotations

from array import array

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flink_jobs.core.durations import DAY, HOUR, MINUTE, SECOND
from flink_jobs.core.features import StatsFeature, TieredStatsFeature, TimerBook
from flink_jobs.core.model import Event, EventSelector
from flink_jobs.core.windows import DEFAULT_HORIZON

from .helpers import T0

TIERS = ((MINUTE, 2 * DAY), (HOUR, 35 * DAY), (DAY, DEFAULT_HORIZON))
WINDOWS = {MINUTE: (5 * MINUTE, 2 * HOUR, 2 * DAY), HOUR: (3 * DAY, 35 * DAY), DAY: (40 * DAY, 365 * DAY)}
SELECTOR = EventSelector(("purchase",))
PROPS = ("items", "revenue")
GAPS = [0, 1, 30 * SECOND, 59 * SECOND, 5 * MINUTE, 50 * MINUTE, 3 * HOUR, 1 * DAY, 2 * DAY + 7 * MINUTE, 30 * DAY, 200 * DAY]
LATE = [1, 2 * MINUTE, 3 * HOUR, 2 * DAY + HOUR, 20 * DAY, 36 * DAY, 100 * DAY]


def _features() -> tuple[TieredStatsFeature, dict[int, StatsFeature]]:
    windows = tuple(w for ws in WINDOWS.values() for w in ws)
    tiered = TieredStatsFeature(SELECTOR, PROPS, TIERS, windows)
    plain = {r: StatsFeature(SELECTOR, PROPS, r, retention, WINDOWS[r]) for r, retention in TIERS}
    return tiered, plain


@st.composite
def feeds(draw) -> list[tuple[int, int, dict]]:
    """(clock, event time, properties): the clock never goes back; an event is at the clock or,
    late, before it."""
    out, now = [], T0
    for _ in range(draw(st.integers(1, 40))):
        now += draw(st.sampled_from(GAPS))
        t = now - draw(st.sampled_from(LATE)) if draw(st.integers(0, 4)) == 0 else now
        props = {}
        if draw(st.booleans()):
            props["revenue"] = draw(st.sampled_from([0.5, 10, 99.25, -3]))
        if draw(st.booleans()):
            props["items"] = draw(st.integers(1, 4))
        out.append((now, t, props))
    return out


def _check(
    tiered: TieredStatsFeature, fs: array, plain: dict[int, StatsFeature], held: dict[int, array], now: int, flips: bool | None = None
) -> None:
    """Every read of the two alike at ``now``; and a bucket leaving a window at ``now`` is seen.
    ``flips``: whether a bucket of the StatsFeatures left one before this instant's event, which
    may have dropped it (a StatsFeature drops what its windows no longer reach when it adds a
    bucket; the tiered one keeps it for its next tier). The tiered one may see one more: a record
    merged into a coarser one may hide the minute it started in."""
    for r, windows in WINDOWS.items():
        stats = plain[r]
        for window in windows:
            for kind, prop in (("count", None), ("sum", "revenue"), ("avg", "revenue"), ("min", "items"), ("max", "revenue")):
                assert tiered.value(fs, now, window, kind, prop) == stats.value(held[r], now, window, kind, prop), (r, window, kind)
            assert tiered.next_exit(fs, now, window) == stats.next_exit(held[r], now, window), (r, window)
    if flips or any(plain[r].flips_at(held[r], now) for r in plain):
        assert tiered.flips_at(fs, now)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(feed=feeds(), probes=st.lists(st.sampled_from([0, 1, MINUTE, HOUR, DAY, 2 * DAY, 36 * DAY]), max_size=3))
def test_reads_what_a_statsfeature_per_resolution_reads(feed, probes):
    tiered, plain = _features()
    fs = tiered.init()
    held = {r: stats.init() for r, stats in plain.items()}
    for n, (now, t, props) in enumerate(feed):
        event = Event(f"e{n}", "c1", "purchase", t, props)
        book = TimerBook({}, now)
        flips = any(plain[r].flips_at(held[r], now) for r in plain)
        fs = tiered.apply_late(fs, event, now, book) if t < now else tiered.apply(fs, [event], now, book)
        for r, stats in plain.items():
            held[r] = stats.apply_late(held[r], event, now, book) if t < now else stats.apply(held[r], [event], now, book)
        _check(tiered, fs, plain, held, now, flips)
        for later in probes:  # time passes without events: nothing is merged until the next one
            _check(tiered, fs, plain, held, now + later)


def test_an_event_feeds_one_record_that_ages_into_its_hour_and_day():
    tiered, _ = _features()
    fs = tiered.init()
    w = tiered.width

    def add(t: int, now: int, **props) -> None:
        nonlocal fs
        fs = tiered.apply_late(fs, Event(str(t), "c1", "purchase", t, props), now, TimerBook({}, now))

    for minute in (1, 2, 61):  # 00:01, 00:02 and 01:01 of the first day
        add(T0 + minute * MINUTE, T0 + minute * MINUTE, revenue=10.0)
    assert list(fs[::w]) == [T0 + MINUTE, T0 + 2 * MINUTE, T0 + 61 * MINUTE]
    add(T0 + 3 * DAY, T0 + 3 * DAY)  # the first two minutes are an hour now, the third another
    assert list(fs[::w]) == [T0, T0 + HOUR, T0 + 3 * DAY]
    assert list(fs[1::w]) == [2, 1, 1]
    add(T0 + 40 * DAY, T0 + 40 * DAY)  # both hours are the first day now
    assert list(fs[::w]) == [T0, T0 + 3 * DAY, T0 + 40 * DAY]
    assert list(fs[1::w]) == [3, 1, 1]
    add(T0 + 2 * DAY + 5, T0 + 40 * DAY)  # late, into its day: the day's record
    assert list(fs[::w]) == [T0, T0 + 2 * DAY, T0 + 3 * DAY, T0 + 40 * DAY]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(feed=feeds(), minute_from=st.sampled_from([0, 6 * HOUR, 47 * HOUR]))
def test_takes_over_the_statsfeatures_of_format_6(feed, minute_from):
    """A StatsFeature per resolution (the minute one held from ``minute_from`` before the clock,
    as a rule's own shorter retention would), merged into one feature: every window of each
    resolution reads what it read."""
    tiered, plain = _features()
    held = {r: stats.init() for r, stats in plain.items()}
    now = T0
    for n, (now, t, props) in enumerate(feed):
        event = Event(f"e{n}", "c1", "purchase", t, props)
        for r, stats in plain.items():
            book = TimerBook({}, now)
            held[r] = stats.apply_late(held[r], event, now, book) if t < now else stats.apply(held[r], [event], now, book)
    if minute_from:
        oldest = (now - minute_from) // MINUTE
        w = plain[MINUTE].width
        held[MINUTE] = array("d", [x for at in range(0, len(held[MINUTE]), w) if held[MINUTE][at] >= oldest for x in held[MINUTE][at : at + w]])
    features = {plain[r].key: held[r] for r in plain if held[r]}
    tiered.adopt(features, now)
    fs = features.get(tiered.key, tiered.init())
    for r, windows in WINDOWS.items():
        for window in windows:
            if r == MINUTE and minute_from and window > minute_from:
                continue  # beyond what the minute buckets held
            for kind, prop in (("count", None), ("sum", "revenue"), ("min", "items"), ("max", "revenue")):
                got = tiered.value(fs, now, window, kind, prop)
                want = plain[r].value(held[r], now, window, kind, prop)
                assert got == want or abs(got - want) < 1e-9, (r, window, kind)
