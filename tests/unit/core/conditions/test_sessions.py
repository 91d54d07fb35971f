"""``sessions``: how it is read, counts and durations over a window."""

from __future__ import annotations

from flink_jobs.core.conditions import AllOf, Sessions
from flink_jobs.core.durations import DAY, MINUTE
from flink_jobs.core.model import Comparison

from ..helpers import changes, ev, rules, run, seg
from ..helpers import condition as _condition

# ---- reading it -----------------------------------------------------------------------------------


def test_sessions_count_compares_numbers_and_durations_compare_milliseconds():
    assert _condition("sessions: count\nwithin: 7d\ngreater_than: 5") == Sessions(
        "count", 7 * DAY, 30 * MINUTE, Comparison("greater_than", 5)
    )
    assert _condition(
        "sessions: avg_duration\nwithin: 7d\ngap: 20m\ngreater_than: 4m"
    ) == Sessions("avg_duration", 7 * DAY, 20 * MINUTE, Comparison("greater_than", 4 * MINUTE))


# ---- evaluating it --------------------------------------------------------------------------------


def test_more_than_five_sessions_averaging_over_four_minutes_in_a_week():
    engaged = seg(
        "high_engagement",
        AllOf((
            Sessions("count", 7 * DAY, 30 * MINUTE, Comparison("greater_than", 5)),
            Sessions("avg_duration", 7 * DAY, 30 * MINUTE, Comparison("greater_than", 4 * MINUTE)),
        )),
    )
    events = []
    n = 0
    for day in range(6):  # six sessions of 5 minutes, one a day
        for minute in (0, 5):
            events.append(ev(n, "page_view", day * DAY + minute * MINUTE))
            n += 1
    r = run(rules(engaged), events, until=10 * DAY)
    # The sixth session starts on day 5 (0 minutes so far: average 25m / 6 = 4m10s, still > 4m);
    # the first session started on day 0 and leaves the 7-day window (1 h steps) at day 7.
    assert changes(r) == [("c1", "high_engagement", "enter", 5 * DAY), ("c1", "high_engagement", "exit", 7 * DAY)]
    assert r.changes[0].reason == "sessions count (7d) = 6 > 5 and sessions avg duration (7d) = 4m10s > 4m"
