"""Compile a RuleSet into shared features and evaluator nodes.

Conditions become small node objects with ``holds(state, now, book)`` (fast path) and
``explain(state, now)`` (only when a membership changes, for the change's reason and the CLI).
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Iterable

from . import catalog
from .durations import HOUR, format_duration
from .features import (
    TimerBook,
    AbsenceFeature,
    DistinctFeature,
    Feature,
    LastTimeFeature,
    SequenceFeature,
    SessionsFeature,
    StatsFeature,
    distinct_key,
    stats_key,
)
from .model import (
    Absence,
    Aggregate,
    AllOf,
    AnyOf,
    Comparison,
    Condition,
    EventSelector,
    InSegment,
    Not,
    ProfileField,
    RuleSet,
    Score,
    Segment,
    Sequence,
    Sessions,
    SinceLast,
    segment_references,
)
from .state import CustomerState
from .windows import DEFAULT_HORIZON, LONG_RESOLUTION, TIERS, resolution_for

# How long each resolution keeps buckets for the generic (rule-independent) aggregates.
_GENERIC_RETENTION = {resolution: limit for limit, resolution in TIERS}
# Generic aggregates exist so that a newly published rule over a long window is populated at once
# from state already held. A window of up to 1 h fills from live events within its own length,
# so the 1-second tier (the most expensive to keep) is not kept generically.
_GENERIC_RESOLUTIONS = tuple(resolution for limit, resolution in TIERS if limit > HOUR) + (LONG_RESOLUTION,)


class CompileError(ValueError):
    """The rule set cannot be compiled (the loader normally reports these first)."""


# ---- evaluator nodes ---------------------------------------------------------------------------


class Node(ABC):
    """A compiled condition. ``holds`` is the fast path; a leaf that reads a window may ask
    ``book`` for the timer at which its value can next change."""

    __slots__ = ()

    @abstractmethod
    def holds(self, state: CustomerState, now: int, book: TimerBook | None = None) -> bool:
        """Whether the condition holds at ``now``."""

    @abstractmethod
    def explain(self, state: CustomerState, now: int) -> tuple[bool, str]:
        """(holds, a short reason a person can read)."""


def _fmt(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.4g}"
    return str(value)


def _verdict(ok: bool, what: str, value: object, cmp: Comparison, render=None) -> tuple[bool, str]:
    shown = render(value) if (render and value is not None) else _fmt(value)
    if ok:
        return True, f"{what} = {shown} {cmp.describe(render)}"
    return False, f"{what} = {shown}, needs {cmp.describe(render)}"


def _duration_text(value: object) -> str:
    """Durations in reasons: whole seconds (sub-second values as they are)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _fmt(value)
    ms = int(value)
    if ms >= 1000:
        ms -= ms % 1000
    return format_duration(ms, weeks=False)


def _exit_sensitivity(kind: str, cmp: Comparison) -> bool | None:
    """When can an event leaving the window flip this leaf? Counts only fall as events leave, so
    ``> n`` / ``>= n`` can flip only while true, ``< n`` / ``<= n`` only while false (returned);
    anything else (sums, averages, equality) can flip any time (None)."""
    if kind in ("count", "distinct"):
        if cmp.op in ("greater_than", "at_least"):
            return True
        if cmp.op in ("less_than", "at_most"):
            return False
    return None


class AggNode(Node):
    """An aggregate leaf. Window exits are armed lazily: after each evaluation, a timer for the
    window's next exit is asked for only if that exit could flip the leaf (see
    ``_exit_sensitivity``), so a customer far below ``count > 100`` costs no timers at all."""

    __slots__ = ("feature", "window", "kind", "prop", "cmp", "label", "sensitive_when")

    def __init__(self, feature: Feature, window: int, kind: str, prop: str | None, cmp: Comparison, label: str):
        self.feature, self.window, self.kind, self.prop, self.cmp, self.label = feature, window, kind, prop, cmp, label
        self.sensitive_when = _exit_sensitivity(kind, cmp)

    def value(self, state: CustomerState, now: int) -> float | int | None:
        fs = state.features.get(self.feature.key)
        if self.kind == "distinct":
            return self.feature.value(fs, now, self.window) if fs else 0  # type: ignore[attr-defined]
        if not fs:
            return 0 if self.kind in ("count", "sum") else None
        return self.feature.value(fs, now, self.window, self.kind, self.prop)  # type: ignore[attr-defined]

    def holds(self, state: CustomerState, now: int, book: TimerBook | None = None) -> bool:
        ok = self.cmp.test(self.value(state, now))
        if book is not None and (self.sensitive_when is None or self.sensitive_when == ok):
            fs = state.features.get(self.feature.key)
            if fs:
                at = self.feature.next_exit(fs, now, self.window)  # type: ignore[attr-defined]
                if at is not None:
                    book.want(at)
        return ok

    def explain(self, state: CustomerState, now: int) -> tuple[bool, str]:
        value = self.value(state, now)
        return _verdict(self.cmp.test(value), self.label, value, self.cmp)


class SinceLastNode(Node):
    __slots__ = ("feature", "cmp", "label")

    def __init__(self, feature: LastTimeFeature, cmp: Comparison, label: str):
        self.feature, self.cmp, self.label = feature, cmp, label

    def value(self, state: CustomerState, now: int) -> int | None:
        last = state.features.get(self.feature.key)
        return None if last is None else now - last  # type: ignore[operator]

    def holds(self, state: CustomerState, now: int, book: TimerBook | None = None) -> bool:
        return self.cmp.test(self.value(state, now))

    def explain(self, state: CustomerState, now: int) -> tuple[bool, str]:
        value = self.value(state, now)
        if value is None:
            return False, f"{self.label}: never"
        return _verdict(self.cmp.test(value), self.label, value, self.cmp, _duration_text)


class SessionsNode(Node):
    __slots__ = ("feature", "window", "resolution", "measure", "cmp", "label", "sensitive_when")

    def __init__(self, feature: SessionsFeature, window: int, measure: str, cmp: Comparison, label: str):
        self.feature, self.window, self.measure, self.cmp, self.label = feature, window, measure, cmp, label
        self.resolution = resolution_for(window)
        self.sensitive_when = _exit_sensitivity("count" if measure == "count" else measure, cmp)

    def value(self, state: CustomerState, now: int) -> float | int | None:
        fs = state.features.get(self.feature.key)
        if not fs:
            return 0 if self.measure != "avg_duration" else None
        return self.feature.value(fs, now, self.window, self.resolution, self.measure)  # type: ignore[arg-type]

    def holds(self, state: CustomerState, now: int, book: TimerBook | None = None) -> bool:
        ok = self.cmp.test(self.value(state, now))
        if book is not None and (self.sensitive_when is None or self.sensitive_when == ok):
            fs = state.features.get(self.feature.key)
            if fs:
                at = self.feature.next_exit(fs, now, self.window, self.resolution)
                if at is not None:
                    book.want(at)
        return ok

    def explain(self, state: CustomerState, now: int) -> tuple[bool, str]:
        value = self.value(state, now)
        render = None if self.measure == "count" else _duration_text
        return _verdict(self.cmp.test(value), self.label, value, self.cmp, render)


class AbsenceNode(Node):
    __slots__ = ("feature", "label")

    def __init__(self, feature: AbsenceFeature, label: str):
        self.feature, self.label = feature, label

    def holds(self, state: CustomerState, now: int, book: TimerBook | None = None) -> bool:
        fs = state.features.get(self.feature.key)
        return bool(fs) and self.feature.active(fs, now) is not None  # type: ignore[arg-type]

    def explain(self, state: CustomerState, now: int) -> tuple[bool, str]:
        fs = state.features.get(self.feature.key)
        entry = self.feature.active(fs, now) if fs else None  # type: ignore[arg-type]
        if entry is None:
            return False, f"no {self.label}"
        corr = f" ({self.feature.match_on}={entry[1]})" if self.feature.match_on else ""
        return True, f"{self.label}{corr} since {_duration_text(now - entry[0] - self.feature.within)} ago"


class SequenceNode(Node):
    __slots__ = ("feature", "label")

    def __init__(self, feature: SequenceFeature, label: str):
        self.feature, self.label = feature, label

    def holds(self, state: CustomerState, now: int, book: TimerBook | None = None) -> bool:
        fs = state.features.get(self.feature.key)
        return fs is not None and self.feature.active(fs, now) is not None  # type: ignore[arg-type]

    def explain(self, state: CustomerState, now: int) -> tuple[bool, str]:
        fs = state.features.get(self.feature.key)
        done = self.feature.active(fs, now) if fs is not None else None  # type: ignore[arg-type]
        if done is None:
            return False, f"no {self.label}"
        return True, f"{self.label} completed {_duration_text(now - done)} ago"


class ProfileNode(Node):
    __slots__ = ("prop", "cmp")

    def __init__(self, prop: str, cmp: Comparison):
        self.prop, self.cmp = prop, cmp

    def holds(self, state: CustomerState, now: int, book: TimerBook | None = None) -> bool:
        return self.cmp.test(state.profile.get(self.prop))

    def explain(self, state: CustomerState, now: int) -> tuple[bool, str]:
        value = state.profile.get(self.prop)
        return _verdict(self.cmp.test(value), f"profile {self.prop}", value, self.cmp)


class ScoreNode(Node):
    __slots__ = ("name", "cmp")

    def __init__(self, name: str, cmp: Comparison):
        self.name, self.cmp = name, cmp

    def holds(self, state: CustomerState, now: int, book: TimerBook | None = None) -> bool:
        return self.cmp.test(state.scores.get(self.name))

    def explain(self, state: CustomerState, now: int) -> tuple[bool, str]:
        value = state.scores.get(self.name)
        return _verdict(self.cmp.test(value), f"score {self.name}", value, self.cmp)


class SegmentNode(Node):
    __slots__ = ("segment_id",)

    def __init__(self, segment_id: str):
        self.segment_id = segment_id

    def holds(self, state: CustomerState, now: int, book: TimerBook | None = None) -> bool:
        return self.segment_id in state.members

    def explain(self, state: CustomerState, now: int) -> tuple[bool, str]:
        if self.segment_id in state.members:
            return True, f"in {self.segment_id}"
        return False, f"not in {self.segment_id}"


class AllNode(Node):
    __slots__ = ("children",)

    def __init__(self, children: tuple[Node, ...]):
        self.children = children

    def holds(self, state: CustomerState, now: int, book: TimerBook | None = None) -> bool:
        for child in self.children:
            if not child.holds(state, now, book):
                return False
        return True

    def explain(self, state: CustomerState, now: int) -> tuple[bool, str]:
        parts = []
        for child in self.children:
            ok, text = child.explain(state, now)
            if not ok:
                return False, text
            parts.append(text)
        return True, " and ".join(parts)


class AnyNode(Node):
    __slots__ = ("children",)

    def __init__(self, children: tuple[Node, ...]):
        self.children = children

    def holds(self, state: CustomerState, now: int, book: TimerBook | None = None) -> bool:
        for child in self.children:
            if child.holds(state, now, book):
                return True
        return False

    def explain(self, state: CustomerState, now: int) -> tuple[bool, str]:
        parts = []
        for child in self.children:
            ok, text = child.explain(state, now)
            if ok:
                return True, text
            parts.append(text)
        return False, "none of: " + "; ".join(parts)


class NotNode(Node):
    __slots__ = ("child",)

    def __init__(self, child: Node):
        self.child = child

    def holds(self, state: CustomerState, now: int, book: TimerBook | None = None) -> bool:
        return not self.child.holds(state, now, book)

    def explain(self, state: CustomerState, now: int) -> tuple[bool, str]:
        ok, text = self.child.explain(state, now)
        return (not ok), (f"not ({text})" if ok else text)


# ---- compiled rules ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CompiledSegment:
    segment: Segment
    node: Node
    # The segment's id, interned (see compile_rules): the key of the customer's ``members``.
    id: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", sys.intern(self.segment.id))


@dataclass(frozen=True)
class CompiledRules:
    """Segments in dependency order, the features they read, and the indexes that let the engine
    re-evaluate only the segments whose inputs changed at an instant."""

    rules: RuleSet
    segments: tuple[CompiledSegment, ...]
    features: tuple[Feature, ...]
    by_event_type: dict[str, tuple[Feature, ...]]
    # segment positions (in ``segments``) that read each feature / the profile / the scores
    readers: dict[str, frozenset[int]]
    profile_readers: frozenset[int]
    score_readers: frozenset[int]
    # positions of the segments that read each segment's membership (``segment:`` or ``exclude``)
    dependents: tuple[frozenset[int], ...]
    time_features: tuple[Feature, ...]  # features whose value can change with time alone
    generic_aggregates: bool  # the per-event-type aggregates are among ``features``

    @property
    def version(self) -> str:
        return self.rules.version

    @property
    def state_version(self) -> str:
        """What a customer state kept under these compiled rules records: the rule version, marked
        when the generic aggregates are left out. A state that records another is reconciled, so
        switching them off drops them from every state, and switching them on starts them."""
        return self.version if self.generic_aggregates else f"{self.version}+no-generic"


def _node_inputs(node: Node, keys: set[str], flags: set[str]) -> None:
    if isinstance(node, (AllNode, AnyNode)):
        for child in node.children:
            _node_inputs(child, keys, flags)
    elif isinstance(node, NotNode):
        _node_inputs(node.child, keys, flags)
    elif isinstance(node, (AggNode, SinceLastNode, SessionsNode, AbsenceNode, SequenceNode)):
        keys.add(node.feature.key)
    elif isinstance(node, ProfileNode):
        flags.add("profile")
    elif isinstance(node, ScoreNode):
        flags.add("score")


def _label_agg(a: Aggregate) -> str:
    what = a.selector.describe() if a.kind == "count" else f"{a.prop} of {a.selector.describe()}"
    return f"{a.kind}({what}, {format_duration(a.window, weeks=False)})"


class _Builder:
    def __init__(self, horizon: int, generic: bool) -> None:
        self.horizon = horizon
        self.generic = generic
        # stats: key -> [selector, props set, resolution, retention, windows set]
        self._stats: dict[str, list] = {}
        self._distinct: dict[str, list] = {}
        self._last: dict[str, list] = {}
        self._sessions: dict[int, list] = {}
        self._absence: dict[str, AbsenceFeature] = {}
        self._sequence: dict[str, SequenceFeature] = {}
        if generic:
            for event_type in catalog.EVENT_TYPES:
                selector = EventSelector((event_type,))
                props = set(catalog.numeric_properties(event_type))
                for resolution in _GENERIC_RESOLUTIONS:
                    key = stats_key(selector, resolution)
                    retention = _GENERIC_RETENTION.get(resolution, horizon)
                    self._stats[key] = [selector, props, resolution, retention, set()]

    def stats(self, selector: EventSelector, prop: str | None, window: int) -> str:
        resolution = resolution_for(window)
        key = stats_key(selector, resolution)
        spec = self._stats.get(key)
        if spec is None:
            spec = self._stats[key] = [selector, set(), resolution, window, set()]
        if prop is not None:
            spec[1].add(prop)
        spec[3] = max(spec[3], window)
        spec[4].add(window)
        return key

    def distinct(self, selector: EventSelector, prop: str, window: int) -> str:
        resolution = resolution_for(window)
        key = distinct_key(selector, prop, resolution)
        spec = self._distinct.setdefault(key, [selector, prop, resolution, window, set()])
        spec[3] = max(spec[3], window)
        spec[4].add(window)
        return key

    def last(self, selector: EventSelector, cmp: Comparison) -> str:
        key = f"last|{selector.key()}"
        spec = self._last.setdefault(key, [selector, set()])
        offset = int(cmp.value)  # type: ignore[arg-type]
        # "age <= d" and "age > d" flip one millisecond after last + d; "<" and ">=" flip at it.
        spec[1].add(offset + 1 if cmp.op in ("at_most", "greater_than") else offset)
        return key

    def sessions(self, gap: int, window: int) -> str:
        spec = self._sessions.setdefault(gap, [window, set()])
        spec[0] = max(spec[0], window)
        spec[1].add((window, resolution_for(window)))
        return f"sessions|{gap}"

    def absence(self, a: Absence) -> AbsenceFeature:
        feature = AbsenceFeature(a.first, a.then, a.within, a.keep, a.match_on)
        return self._absence.setdefault(feature.key, feature)

    def sequence(self, s: Sequence) -> SequenceFeature:
        feature = SequenceFeature(s.steps, s.within, s.keep, s.match_on)
        return self._sequence.setdefault(feature.key, feature)

    def build(self) -> dict[str, Feature]:
        built: dict[str, Feature] = {}
        for key, (selector, props, resolution, retention, windows) in sorted(self._stats.items()):
            built[key] = StatsFeature(selector, tuple(sorted(props)), resolution, retention, tuple(sorted(windows)))
        for key, (selector, prop, resolution, retention, windows) in sorted(self._distinct.items()):
            built[key] = DistinctFeature(selector, prop, resolution, retention, tuple(sorted(windows)))
        for key, (selector, flips) in sorted(self._last.items()):
            built[key] = LastTimeFeature(selector, tuple(sorted(flips)))
        for gap, (retention, windows) in sorted(self._sessions.items()):
            f = SessionsFeature(gap, catalog.SESSION_EVENT_TYPES, retention, tuple(sorted(windows)))
            built[f.key] = f
        built.update(sorted(self._absence.items()))
        built.update(sorted(self._sequence.items()))
        return built


class _LazyFeature:
    """Placeholder bound to the real feature once all windows are known."""

    def __init__(self, key: str) -> None:
        self.key = key


def compile_rules(rules: RuleSet, *, horizon: int = DEFAULT_HORIZON, generic_aggregates: bool = True) -> CompiledRules:
    """Compile every segment; raise CompileError on unknown references or cycles."""
    builder = _Builder(horizon, generic_aggregates)
    ordered = _dependency_order(rules.segments)
    lazies: list[Node] = []

    def node_for(c: Condition) -> Node:
        if isinstance(c, AllOf):
            return AllNode(tuple(node_for(x) for x in c.children))
        if isinstance(c, AnyOf):
            return AnyNode(tuple(node_for(x) for x in c.children))
        if isinstance(c, Not):
            return NotNode(node_for(c.child))
        if isinstance(c, Aggregate):
            if c.kind == "distinct":
                key = builder.distinct(c.selector, c.prop or "", c.window)
            else:
                key = builder.stats(c.selector, c.prop, c.window)
            node: Node = AggNode(_LazyFeature(key), c.window, c.kind, c.prop, c.comparison, _label_agg(c))  # type: ignore[arg-type]
            lazies.append(node)
            return node
        if isinstance(c, SinceLast):
            key = builder.last(c.selector, c.comparison)
            node = SinceLastNode(_LazyFeature(key), c.comparison, f"time since last {c.selector.describe()}")  # type: ignore[arg-type]
            lazies.append(node)
            return node
        if isinstance(c, Sessions):
            key = builder.sessions(c.gap, c.window)
            label = f"sessions {c.measure.replace('_', ' ')} ({format_duration(c.window, weeks=False)})"
            node = SessionsNode(_LazyFeature(key), c.window, c.measure, c.comparison, label)  # type: ignore[arg-type]
            lazies.append(node)
            return node
        if isinstance(c, Absence):
            f = builder.absence(c)
            label = (
                f"{c.first.describe()} not followed by {c.then.describe()} within {format_duration(c.within, weeks=False)}"
            )
            return AbsenceNode(f, label)
        if isinstance(c, Sequence):
            f = builder.sequence(c)
            label = " then ".join(s.describe() for s in c.steps) + f" within {format_duration(c.within, weeks=False)}"
            return SequenceNode(f, label)
        if isinstance(c, ProfileField):
            return ProfileNode(c.prop, c.comparison)
        if isinstance(c, Score):
            return ScoreNode(c.name, c.comparison)
        if isinstance(c, InSegment):
            return SegmentNode(c.segment_id)
        raise CompileError(f"unsupported condition {type(c).__name__}")

    compiled = [CompiledSegment(s, node_for(s.condition)) for s in ordered]
    features = builder.build()
    # Every customer state holds these keys (and the segment ids): interned, one string object is
    # shared by all the states in memory instead of one per state (the rules reach a worker
    # unpickled, and marshal.loads interns only what was interned when written), which is 1.7 KB
    # less per decoded state, and fewer scattered objects for each encode to read (16.9-18.4
    # against 23.2-28.8 µs per state, encoded in random order from cold memory; see
    # state.decode_state).
    for feature in features.values():
        feature.key = sys.intern(feature.key)
    for node in lazies:
        node.feature = features[node.feature.key]  # type: ignore[attr-defined]
    index: dict[str, list[Feature]] = {}
    for feature in features.values():
        for event_type in sorted(feature.event_types):
            index.setdefault(event_type, []).append(feature)
    readers: dict[str, set[int]] = {}
    profile_readers: set[int] = set()
    score_readers: set[int] = set()
    position = {c.id: i for i, c in enumerate(compiled)}
    dependents: list[set[int]] = [set() for _ in compiled]
    for i, c in enumerate(compiled):
        keys: set[str] = set()
        flags: set[str] = set()
        _node_inputs(c.node, keys, flags)
        for key in keys:
            readers.setdefault(key, set()).add(i)
        if "profile" in flags:
            profile_readers.add(i)
        if "score" in flags:
            score_readers.add(i)
        for ref in segment_references(c.segment):
            dependents[position[ref]].add(i)
    return CompiledRules(
        rules=rules,
        segments=tuple(compiled),
        features=tuple(features.values()),
        by_event_type={t: tuple(fs) for t, fs in index.items()},
        readers={k: frozenset(v) for k, v in readers.items()},
        profile_readers=frozenset(profile_readers),
        score_readers=frozenset(score_readers),
        dependents=tuple(frozenset(d) for d in dependents),
        time_features=tuple(f for f in features.values() if f.time_driven and f.key in readers),
        generic_aggregates=generic_aggregates,
    )


def _dependency_order(segments: Iterable[Segment]) -> list[Segment]:
    by_id = {s.id: s for s in segments}
    order: list[Segment] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(sid: str, path: list[str]) -> None:
        mark = state.get(sid)
        if mark == 2:
            return
        if mark == 1:
            cycle = " -> ".join([*path[path.index(sid):], sid])
            raise CompileError(f"segment references form a cycle: {cycle}")
        segment = by_id.get(sid)
        if segment is None:
            raise CompileError(f"segment {path[-1]!r} references unknown segment {sid!r}")
        state[sid] = 1
        for ref in segment_references(segment):
            visit(ref, [*path, sid])
        state[sid] = 2
        order.append(segment)

    for sid in sorted(by_id):
        visit(sid, [])
    return order
