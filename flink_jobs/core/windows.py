"""Window resolution: how finely a window of a given length slides.

A window of length W at resolution r holds the events whose bucket ``event_time // r`` is one of
the W/r buckets ending with the bucket of the current time. So ``within: 10m`` (r = 1s) counts
events in the current second and the 599 seconds before it, and ``within: 90d`` (r = 1d) counts
events of today (UTC) and the 89 days before. Rule authors see this table in rules/README.md.
"""

from __future__ import annotations

from .durations import DAY, HOUR, MINUTE, SECOND, format_duration

# (longest window, resolution): the first row whose limit is >= the window applies.
TIERS: tuple[tuple[int, int], ...] = (
    (1 * HOUR, SECOND),
    (2 * DAY, MINUTE),
    (35 * DAY, HOUR),
)
LONG_RESOLUTION = DAY
DEFAULT_HORIZON = 400 * DAY
# The resolutions of the generic (rule-independent) aggregates. They exist so that a newly
# published rule over a long window is populated at once from state already held; a window of up
# to 1 h fills from live events within its own length, so the 1-second tier (the most expensive
# to keep) is not kept generically.
GENERIC_RESOLUTIONS: tuple[int, ...] = tuple(r for limit, r in TIERS if limit > HOUR) + (LONG_RESOLUTION,)


def resolution_for(window: int) -> int:
    for limit, resolution in TIERS:
        if window <= limit:
            return resolution
    return LONG_RESOLUTION


def window_problem(window: int, horizon: int = DEFAULT_HORIZON) -> str | None:
    """Why a window length cannot be used, or None when it can."""
    if window > horizon:
        return (
            f"window {_days(window)} is longer than the state horizon "
            f"{_days(horizon)}; shorten it, or raise the horizon (job.horizon; --horizon for segments)"
        )
    r = resolution_for(window)
    if window % r:
        lower = max(r, window // r * r)
        upper = (window // r + 1) * r
        return (
            f"window {_days(window)} is not a whole number of {_days(r)} "
            f"(windows of this length slide by {_days(r)}); use "
            f"{_days(lower)} or {_days(upper)}"
        )
    return None


def _days(ms: int) -> str:
    # Rule authors write long windows in days (400d), so messages to them should too.
    return format_duration(ms, weeks=False)


def first_bucket(now: int, window: int, resolution: int) -> int:
    """Oldest bucket index still inside the window at time ``now``."""
    return now // resolution - window // resolution + 1


def exit_time(bucket: int, window: int, resolution: int) -> int:
    """The instant at which events of ``bucket`` leave a window of length ``window``."""
    return (bucket + window // resolution) * resolution
