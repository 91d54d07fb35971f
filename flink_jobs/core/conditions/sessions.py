"""``sessions``: sessions (split by an inactivity gap) that started in the window, by their count or
their durations.

    sessions: count              sessions: avg_duration
    within: 7d                   within: 7d
    greater_than: 5              gap: 30m
                                 greater_than: 4m
"""

from __future__ import annotations

from bisect import insort
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

from yaml.nodes import ScalarNode

from ..durations import MINUTE, format_duration
from ..features import Feature, TimerBook
from ..model import Comparison, Condition, Event, SourceRef
from ..state import CustomerState
from ..syntax.help import NUMBER_RESULT_OPS, Subject, suggest
from ..syntax.nodes import text, word
from ..syntax.reader import Cond, RuleReader
from ..windows import exit_time, first_bucket, resolution_for
from .base import FeatureNode, HistoryView, Node, duration_text, exit_sensitivity, verdict
from .builder import Builder
from .construct import Construct, Keyword
from .logic import leaves

SESSION_MEASURES: tuple[str, ...] = ("count", "avg_duration", "total_duration")
DEFAULT_SESSION_GAP = 30 * MINUTE


@dataclass(frozen=True, slots=True)
class Sessions(Condition):
    """Sessions (split by an inactivity gap) that started in the window: count or durations."""

    measure: str
    window: int
    gap: int
    comparison: Comparison
    source: SourceRef | None = field(default=None, compare=False)


# ---- reading it ------------------------------------------------------------------------------------


def check(r: RuleReader, c: Cond) -> Condition | None:
    measure = word(c.construct.value)
    if measure not in SESSION_MEASURES:
        shown = text(c.construct.value) if isinstance(c.construct.value, ScalarNode) else ""
        r.error(
            r.at_value(c.construct),
            f"unknown session measure '{shown}'" if shown else "'sessions' needs a measure",
            suggest(shown, SESSION_MEASURES, "Measures"),
        )
        measure = None
    window = r.window(c, "how far back to look, e.g. 'within: 7d'")
    gap: int | None = DEFAULT_SESSION_GAP
    if "gap" in c.fields:
        gap = r.duration(c.fields["gap"])
    if measure == "count" or measure is None:
        subject = Subject("the number of sessions", "number", NUMBER_RESULT_OPS)
    else:
        words = "average" if measure == "avg_duration" else "total"
        subject = Subject(f"the {words} session duration", "duration", NUMBER_RESULT_OPS)
    comparisons = r.comparisons(c, subject)
    if measure is None or window is None or gap is None or comparisons is None:
        return None
    if not r.fits_horizon(c, window, gap, "gap", default_note=False):
        return None
    chosen = measure
    return leaves(c, comparisons, lambda cmp: Sessions(chosen, window, gap, cmp, c.source))


# ---- evaluating it ---------------------------------------------------------------------------------


class SessionsFeature(Feature["list[list[int]]"]):
    """Sessions as ``[start, end]`` pairs, split where activity pauses for longer than ``gap``."""

    def __init__(
        self,
        gap: int,
        event_types: Iterable[str],
        retention: int,
        windows: tuple[tuple[int, int], ...],
    ) -> None:
        self.gap = gap
        self.retention = retention
        self.windows = windows  # (window, resolution) pairs in use
        self.key = f"sessions|{gap}"
        self.event_types = frozenset(event_types)

    def init(self) -> list[list[int]]:
        return []

    def apply(self, fs: list[list[int]], events: list[Event], now: int, book: TimerBook) -> list[list[int]]:
        if not events:
            return fs
        if fs and now - fs[-1][1] <= self.gap:
            fs[-1][1] = now
        else:
            fs.append([now, now])
            self._prune(fs, now)
        return fs

    def apply_late(self, fs: list[list[int]], event: Event, now: int, book: TimerBook) -> list[list[int]]:
        t = event.event_time
        for session in fs:
            if session[0] - self.gap <= t <= session[1] + self.gap:
                session[0] = min(session[0], t)
                session[1] = max(session[1], t)
                break
        else:
            insort(fs, [t, t])
        merged: list[list[int]] = []
        for session in fs:
            if merged and session[0] - merged[-1][1] <= self.gap:
                merged[-1][1] = max(merged[-1][1], session[1])
            else:
                merged.append(session)
        fs[:] = merged
        return fs

    def _prune(self, fs: list[list[int]], now: int) -> None:
        horizon = now - self.retention - self.gap
        while len(fs) > 1 and fs[0][1] < horizon:
            fs.pop(0)

    def next_exit(self, fs: list[list[int]], now: int, window: int, resolution: int) -> int | None:
        """When the oldest session that started inside the window leaves it."""
        oldest = now // resolution - window // resolution + 1
        for start, _ in fs:
            if start // resolution >= oldest:
                return exit_time(start // resolution, window, resolution)
        return None

    def flips_at(self, fs: list[list[int]], now: int) -> bool:
        for window, r in self.windows:
            if now % r == 0:
                leaving = now // r - window // r
                for start, _ in fs:
                    if start // r == leaving:
                        return True
        return False

    @property
    def time_driven(self) -> bool:
        return True

    def value(self, fs: list[list[int]], now: int, window: int, resolution: int, measure: str) -> float | int | None:
        oldest = first_bucket(now, window, resolution)
        count = 0
        total = 0
        for start, end in fs:
            if start // resolution >= oldest:
                count += 1
                total += end - start
        if measure == "count":
            return count
        if measure == "total_duration":
            return total
        return total / count if count else None


# ---- absence: A not followed by B within T ------------------------------------------------------------


class _SessionsSpec:
    """One SessionsFeature per gap, kept as long as its longest window needs."""

    def __init__(self, gap: int, activity: frozenset[str]) -> None:
        self.key = f"sessions|{gap}"
        self.order = (3, f"{gap:020d}")
        self.gap = gap
        self.activity = activity
        self.retention = 0
        self.windows: set[tuple[int, int]] = set()

    def build(self) -> SessionsFeature:
        return SessionsFeature(self.gap, self.activity, self.retention, tuple(sorted(self.windows)))


class SessionsNode(FeatureNode[SessionsFeature]):
    __slots__ = ("window", "resolution", "measure", "cmp", "label", "sensitive_when")
    feature_type = SessionsFeature

    def __init__(self, key: str, window: int, measure: str, cmp: Comparison, label: str) -> None:
        super().__init__(key)
        self.window, self.measure, self.cmp, self.label = window, measure, cmp, label
        self.resolution = resolution_for(window)
        self.sensitive_when = exit_sensitivity("count" if measure == "count" else measure, cmp)

    def value(self, state: CustomerState, now: int) -> float | int | None:
        fs = state.features.get(self.key)
        if not fs:
            return 0 if self.measure != "avg_duration" else None
        return self.feature.value(fs, now, self.window, self.resolution, self.measure)

    def holds(self, state: CustomerState, now: int, book: TimerBook | None = None) -> bool:
        ok = self.cmp.test(self.value(state, now))
        if book is not None and (self.sensitive_when is None or self.sensitive_when == ok):
            fs = state.features.get(self.key)
            if fs:
                at = self.feature.next_exit(fs, now, self.window, self.resolution)
                if at is not None:
                    book.want(at)
        return ok

    def explain(self, state: CustomerState, now: int) -> tuple[bool, str]:
        value = self.value(state, now)
        render = None if self.measure == "count" else duration_text
        return verdict(self.cmp.test(value), self.label, value, self.cmp, render)


def compile(c: Condition, b: Builder) -> Node:
    assert isinstance(c, Sessions)
    spec = b.feature(_SessionsSpec(c.gap, b.catalog.activity_types))
    assert isinstance(spec, _SessionsSpec)
    spec.retention = max(spec.retention, c.window)
    spec.windows.add((c.window, resolution_for(c.window)))
    label = f"sessions {c.measure.replace('_', ' ')} ({format_duration(c.window, weeks=False)})"
    return SessionsNode(spec.key, c.window, c.measure, c.comparison, label)


def qualifying(c: Condition, history: HistoryView, now: int) -> list[tuple[Event, str]]:
    assert isinstance(c, Sessions)
    starts = Counter(s for s, _ in history.sessions(c.gap, now))
    out = []
    for e in history.upto(now):
        if starts.pop(e.event_time, 0):
            out.append((e, "<- starts a session"))
    return out


CONSTRUCT = Construct(
    keywords=(Keyword("sessions", check, takes=("within", "gap"), comparisons=True),),
    models=(Sessions,),
    compile=compile,
    qualifying=qualifying,
)


# Pickled rules reach the workers; compiled by mypyc these classes need it (see pickling.py).
from ..pickling import register_dataclasses  # noqa: E402

register_dataclasses(globals(), __name__)
