"""``event`` + ``not_followed_by``: something that did not happen after something else, within a
deadline; the condition holds from the deadline for ``keep``.

    event: cart_add
    not_followed_by: [checkout, purchase]
    within: 15m
    match_on: cart_id
    keep: 24h
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..durations import format_duration
from ..features import Feature, TimerBook
from ..model import Condition, Event, EventSelector, PropertyValue, SourceRef
from ..state import CustomerState
from ..syntax.help import types_text
from ..syntax.nodes import is_null, item_named, text
from ..syntax.reader import Cond, RuleReader
from .base import FeatureNode, HistoryView, Node, duration_text
from .builder import Builder, Built
from .construct import Construct, Keyword, usage


@dataclass(frozen=True, slots=True)
class Absence(Condition):
    """``first`` not followed by ``then`` within ``within``; holds for ``keep`` after the deadline."""

    first: EventSelector
    then: EventSelector
    within: int
    keep: int
    match_on: str | None
    source: SourceRef | None = field(default=None, compare=False)


# ---- reading it ------------------------------------------------------------------------------------

_TAKES = ("where", "not_followed_by", "within", "match_on", "keep")


def check(r: RuleReader, c: Cond) -> Condition | None:
    first = r.selector(c.construct)
    follow = c.fields.get("not_followed_by")
    if follow is None:
        if c.keys_ok:
            shown = text(c.construct.value)
            within_entry = c.fields.get("within")
            period = "7d" if within_entry is None or is_null(within_entry.value) else text(within_entry.value)
            r.error(
                c.construct.key_node,
                "'event' needs 'not_followed_by'",
                "'event:' starts a condition on something that did not happen next; "
                f"to test that an event happened, write 'count: {shown}' with "
                f"'within: {period}' and 'at_least: 1'",
            )
        return None
    extra = c.fields.get("where")
    if extra is not None and first is not None:
        filters = r.where(extra, first.event_types)
        first = None if filters is None else EventSelector(first.event_types, first.where + filters)
    then = r.selector(follow)
    if first is not None and then is not None:
        shared = [t for t in then.event_types if t in first.event_types]
        if shared:
            r.error(
                item_named(follow.value, shared[0]) or r.at_value(follow),
                f"{types_text(tuple(shared))} is both the first event and a follow-up",
                "the follow-up must be a different event type; remove "
                f"{types_text(tuple(shared))} from 'not_followed_by'",
            )
            then = None
    within = r.deadline(c, "add the deadline, counted from the first event, e.g. 'within: 15m'")
    keep = r.keep(c)
    match_on = r.match_on(c, [first, then])
    if first is None or then is None or within is None or keep is None or match_on is False:
        return None
    if not r.fits_horizon(c, within, keep, "keep"):
        return None
    return Absence(first, then, within, keep, match_on, source=c.source)


# ---- evaluating it ---------------------------------------------------------------------------------


class AbsenceFeature(Feature["list[list[Any]]"]):
    """Pending and missed follow-ups: entries ``[first_time, correlation, resolved_at | None]``."""

    def __init__(
        self,
        first: EventSelector,
        then: EventSelector,
        within: int,
        keep: int,
        match_on: str | None,
    ) -> None:
        self.first = first
        self.then = then
        self.within = within
        self.keep = keep
        self.match_on = match_on
        self.key = f"absence|{first.key()}|{then.key()}|{within}|{keep}|{match_on}"
        self.event_types = frozenset(first.event_types) | frozenset(then.event_types)

    def init(self) -> list[list[Any]]:
        return []

    def _corr(self, event: Event) -> tuple[bool, PropertyValue | None]:
        if self.match_on is None:
            return True, None
        value = event.properties.get(self.match_on)
        return value is not None, value

    def apply(self, fs: list[list[Any]], events: list[Event], now: int, book: TimerBook) -> list[list[Any]]:
        within, keep = self.within, self.keep
        # Expired entries can no longer matter; their last timer has fired.
        if fs and fs[0][0] + within + keep <= now:
            fs[:] = [e for e in fs if e[0] + within + keep > now]
        # Firsts before follow-ups: a follow-up at the same instant cancels (follow-up time >= first time).
        for event in events:
            if self.first.matches(event):
                ok, corr = self._corr(event)
                if ok:
                    fs.append([now, corr, None])
                    book.want(now + within)
                    book.want(now + within + keep)
        for event in events:
            if self.then.matches(event):
                ok, corr = self._corr(event)
                if ok:
                    self._resolve(fs, corr, now, book)
        return fs

    def _resolve(self, fs: list[list[Any]], corr: PropertyValue | None, at: int, book: TimerBook) -> None:
        for entry in fs:
            if entry[2] is None and entry[0] <= at and (self.match_on is None or entry[1] == corr):
                entry[2] = at
                book.release(entry[0] + self.within)
                book.release(entry[0] + self.within + self.keep)

    def apply_late(self, fs: list[list[Any]], event: Event, now: int, book: TimerBook) -> list[list[Any]]:
        # A late follow-up still cancels (from now on); a late first event is not started, since
        # the follow-ups before it are no longer known.
        if self.then.matches(event):
            ok, corr = self._corr(event)
            if ok:
                self._resolve(fs, corr, event.event_time, book)
        return fs

    def rearm(self, fs: list[list[Any]], now: int, book: TimerBook) -> None:
        for first_time, _, resolved in fs:
            if resolved is None:
                book.want(first_time + self.within)
                book.want(first_time + self.within + self.keep)

    def flips_at(self, fs: list[list[Any]], now: int) -> bool:
        within, keep = self.within, self.keep
        for first_time, _, resolved in fs:
            if resolved is None and (now - first_time == within or now - first_time == within + keep):
                return True
        return False

    @property
    def time_driven(self) -> bool:
        return True

    def active(self, fs: list[list[Any]], now: int) -> list[Any] | None:
        """The most recent missed follow-up in effect at ``now``, or None."""
        found = None
        for entry in fs:
            deadline = entry[0] + self.within
            if entry[2] is None and deadline <= now < deadline + self.keep:
                found = entry
        return found


# ---- sequences: A then B then C within T --------------------------------------------------------------


class AbsenceNode(FeatureNode[AbsenceFeature]):
    __slots__ = ("label",)
    feature_type = AbsenceFeature

    def __init__(self, key: str, label: str) -> None:
        super().__init__(key)
        self.label = label

    def holds(self, state: CustomerState, now: int, book: TimerBook | None = None) -> bool:
        fs = state.features.get(self.key)
        if not fs:
            return False
        return self.feature.active(fs, now) is not None

    def explain(self, state: CustomerState, now: int) -> tuple[bool, str]:
        fs = state.features.get(self.key)
        entry = self.feature.active(fs, now) if fs else None
        if entry is None:
            return False, f"no {self.label}"
        corr = f" ({self.feature.match_on}={entry[1]})" if self.feature.match_on else ""
        return True, f"{self.label}{corr} since {duration_text(now - entry[0] - self.feature.within)} ago"


def compile(c: Condition, b: Builder) -> Node:
    assert isinstance(c, Absence)
    spec = b.feature(Built(AbsenceFeature(c.first, c.then, c.within, c.keep, c.match_on), kind=4))
    label = f"{c.first.describe()} not followed by {c.then.describe()} within {format_duration(c.within, weeks=False)}"
    return AbsenceNode(spec.key, label)


def qualifying(c: Condition, history: HistoryView, now: int) -> list[tuple[Event, str]]:
    assert isinstance(c, Absence)
    return [(e, "<- not followed up in time") for e in history.missed_follow_ups(c, now)]


CONSTRUCT = Construct(
    keywords=(
        Keyword(
            "event",
            check,
            takes=_TAKES,
            no_comparison_help=f"'event' holds or not, it has nothing to compare; {usage('event', _TAKES, False)}",
        ),
    ),
    models=(Absence,),
    compile=compile,
    qualifying=qualifying,
)


# Pickled rules reach the workers; compiled by mypyc these classes need it (see pickling.py).
from ..pickling import register_dataclasses  # noqa: E402

register_dataclasses(globals(), __name__)
