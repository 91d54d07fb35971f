"""``sequence``: steps in order (ties allowed), the last within ``within`` of the first; the
condition holds for ``keep`` after the sequence completed.

    sequence: [product_view, cart_add, purchase]
    within: 1h
    match_on: product_id
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import permutations
from typing import Any

from yaml import nodes as yaml_nodes

from ..durations import format_duration
from ..features import Feature, TimerBook
from ..model import Condition, Event, EventSelector, SourceRef
from ..state import CustomerState
from ..syntax.nodes import Entry, shape
from ..syntax.reader import Cond, RuleReader
from .base import FeatureNode, HistoryView, Node, duration_text
from .builder import Builder, Built
from .construct import Construct, Keyword, usage


@dataclass(frozen=True, slots=True)
class Sequence(Condition):
    """Steps in order (ties allowed) with the last within ``within`` of the first; holds ``keep``."""

    steps: tuple[EventSelector, ...]
    within: int
    keep: int
    match_on: str | None
    source: SourceRef | None = field(default=None, compare=False)


# ---- reading it ------------------------------------------------------------------------------------

_TAKES = ("within", "match_on", "keep")


def check(r: RuleReader, c: Cond) -> Condition | None:
    value = c.construct.value
    steps: list[EventSelector | None] = []
    if not isinstance(value, yaml_nodes.SequenceNode) or len(value.value) < 2:
        shown = "one step" if isinstance(value, yaml_nodes.SequenceNode) else shape(value)
        r.error(
            r.at_value(c.construct),
            f"'sequence' needs a list of at least two steps, not {shown}",
            "e.g. 'sequence: [product_view, cart_add, purchase]'",
        )
        steps = [None]
    else:
        key = c.construct.key_node
        steps = [r.selector(Entry("sequence", key, item)) for item in value.value]
    within = r.deadline(c, "add the time allowed from the first step to the last, e.g. 'within: 1h'")
    keep = r.keep(c)
    match_on = r.match_on(c, steps)
    if any(s is None for s in steps) or within is None or keep is None or match_on is False:
        return None
    if not r.fits_horizon(c, within, keep, "keep"):
        return None
    return Sequence(tuple(s for s in steps if s is not None), within, keep, match_on, source=c.source)


# ---- evaluating it ---------------------------------------------------------------------------------


class SequenceFeature(Feature["list[Any]"]):
    """Funnel progress per correlation value and the last completion.

    State: ``[prefixes, last_completion]`` where ``prefixes[corr][k]`` is the latest start time of
    a run of the first k+1 steps (the latest start is always the best one to extend).
    """

    def __init__(
        self,
        steps: tuple[EventSelector, ...],
        within: int,
        keep: int,
        match_on: str | None,
    ) -> None:
        self.steps = steps
        self.within = within
        self.keep = keep
        self.match_on = match_on
        inner = ">".join(s.key() for s in steps)
        self.key = f"sequence|{inner}|{within}|{keep}|{match_on}"
        self.event_types = frozenset(t for s in steps for t in s.event_types)

    def init(self) -> list[Any]:
        return [{}, None]

    def empty(self, fs: list[Any]) -> bool:
        return not fs[0] and fs[1] is None

    def apply(self, fs: list[Any], events: list[Event], now: int, book: TimerBook) -> list[Any]:
        prefixes: dict[Any, list[int | None]] = fs[0]
        n = len(self.steps)
        by_corr: dict[Any, list[tuple[int, ...]]] = {}
        for event in events:
            matched = tuple(i for i, s in enumerate(self.steps) if s.matches(event))
            if not matched:
                continue
            if self.match_on is None:
                corr = None
            else:
                corr = event.properties.get(self.match_on)
                if corr is None:
                    continue
            by_corr.setdefault(corr, []).append(matched)
        completed = False
        for corr, matches in by_corr.items():
            old = prefixes.get(corr) or [None] * (n - 1)
            new = list(old)
            # Starts of a run: earlier runs of k steps (k >= 1), or a new run starting now (k = 0).
            starts = [(k, start) for k, start in enumerate(old, 1) if start is not None]
            starts.append((0, now))
            for k, start in starts:
                if now - start > self.within:
                    continue
                for m in range(k + 1, n + 1):
                    if not _fillable(range(k, m), matches):
                        break
                    if m == n:
                        completed = True
                        continue
                    held = new[m - 1]
                    if held is None or held < start:
                        new[m - 1] = start
            prefixes[corr] = new
        if completed:
            if fs[1] is not None:
                book.release(fs[1] + self.keep)
            fs[1] = now
            book.want(now + self.keep)
        # Runs that started too long ago can never complete.
        for corr in [c for c, p in prefixes.items() if all(s is None or now - s > self.within for s in p)]:
            del prefixes[corr]
        return fs

    def rearm(self, fs: list[Any], now: int, book: TimerBook) -> None:
        if fs[1] is not None:
            book.want(fs[1] + self.keep)

    def flips_at(self, fs: list[Any], now: int) -> bool:
        return fs[1] is not None and fs[1] + self.keep == now

    @property
    def time_driven(self) -> bool:
        return True

    def active(self, fs: list[Any], now: int) -> int | None:
        done = fs[1]
        return done if done is not None and now - done < self.keep else None


def _fillable(steps: range, matches: list[tuple[int, ...]]) -> bool:
    """Can distinct events (each with the steps it matches) fill every step in ``steps``?"""
    needed = list(steps)
    if len(needed) > len(matches):
        return False
    if len(needed) == 1:
        return any(needed[0] in m for m in matches)
    # Tiny sizes (steps of one instant): brute force is clearest.
    for chosen in permutations(range(len(matches)), len(needed)):
        if all(step in matches[j] for step, j in zip(needed, chosen)):
            return True
    return False


class SequenceNode(FeatureNode[SequenceFeature]):
    __slots__ = ("label",)
    feature_type = SequenceFeature

    def __init__(self, key: str, label: str) -> None:
        super().__init__(key)
        self.label = label

    def holds(self, state: CustomerState, now: int, book: TimerBook | None = None) -> bool:
        fs = state.features.get(self.key)
        return fs is not None and self.feature.active(fs, now) is not None

    def explain(self, state: CustomerState, now: int) -> tuple[bool, str]:
        fs = state.features.get(self.key)
        done = self.feature.active(fs, now) if fs is not None else None
        if done is None:
            return False, f"no {self.label}"
        return True, f"{self.label} completed {duration_text(now - done)} ago"


def compile(c: Condition, b: Builder) -> Node:
    assert isinstance(c, Sequence)
    spec = b.feature(Built(SequenceFeature(c.steps, c.within, c.keep, c.match_on), kind=5))
    label = " then ".join(s.describe() for s in c.steps) + f" within {format_duration(c.within, weeks=False)}"
    return SequenceNode(spec.key, label)


def qualifying(c: Condition, history: HistoryView, now: int) -> list[tuple[Event, str]]:
    assert isinstance(c, Sequence)
    return [(e, "<- step of the sequence") for e in history.completed_sequence(c, now) or []]


CONSTRUCT = Construct(
    keywords=(
        Keyword(
            "sequence",
            check,
            takes=_TAKES,
            no_comparison_help=f"'sequence' holds or not, it has nothing to compare; {usage('sequence', _TAKES, False)}",
        ),
    ),
    models=(Sequence,),
    compile=compile,
    qualifying=qualifying,
)


# Pickled rules reach the workers; compiled by mypyc these classes need it (see pickling.py).
from ..pickling import register_dataclasses  # noqa: E402

register_dataclasses(globals(), __name__)
