"""A brute-force reference evaluator: the definition of what the rules mean.

It recomputes every condition from a customer's full event history at every instant where a
condition could change, with none of the engine's state, buckets, or timers. It is slow on
purpose and exists so that property tests can check the incremental engine against it, and so
``segments explain`` can show the qualifying events.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Iterable, Mapping

from .catalog import Catalog
from .conditions import (
    Absence,
    Aggregate,
    AllOf,
    AnyOf,
    InSegment,
    Not,
    ProfileField,
    Score,
    Sequence,
    Sessions,
    SinceLast,
)
from .model import Condition, Event, EventSelector, RuleSet, Segment, segment_references, walk
from .scoring import Scorer
from .windows import resolution_for


@dataclass(frozen=True)
class RefChange:
    segment_id: str
    kind: str
    event_time: int


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _in_window(event_time: int, now: int, window: int) -> bool:
    r = resolution_for(window)
    return now // r - event_time // r < window // r


class History:
    """One customer's deduplicated events in (event_time, event_id) order, read at instant ``now``."""

    def __init__(self, customer_id: str, events: Iterable[Event], catalog: Catalog, scorer: Scorer | None = None) -> None:
        unique: dict[str, Event] = {}
        for event in events:
            unique.setdefault(event.event_id, event)
        self.customer_id = customer_id
        self.events = sorted(unique.values(), key=Event.sort_key)
        self.catalog = catalog
        self.scorer = scorer

    def upto(self, now: int) -> list[Event]:
        return [e for e in self.events if e.event_time <= now]

    # ---- conditions ------------------------------------------------------------------------------

    def holds(self, c: Condition, now: int, members: set[str]) -> bool:
        if isinstance(c, AllOf):
            return all(self.holds(x, now, members) for x in c.children)
        if isinstance(c, AnyOf):
            return any(self.holds(x, now, members) for x in c.children)
        if isinstance(c, Not):
            return not self.holds(c.child, now, members)
        if isinstance(c, InSegment):
            return c.segment_id in members
        if isinstance(c, Aggregate):
            return c.comparison.test(self.aggregate(c, now))
        if isinstance(c, SinceLast):
            last = self.last_time(c.selector, now)
            return last is not None and c.comparison.test(now - last)
        if isinstance(c, Sessions):
            return c.comparison.test(self.sessions_measure(c, now))
        if isinstance(c, Absence):
            return bool(self.missed_follow_ups(c, now))
        if isinstance(c, Sequence):
            return self.completed_sequence(c, now) is not None
        if isinstance(c, ProfileField):
            return c.comparison.test(self.profile(now).get(c.prop))
        if isinstance(c, Score):
            scores = self.scorer.score(self.customer_id, {}) if self.scorer else {}
            return c.comparison.test(scores.get(c.name))
        raise TypeError(f"unknown condition {type(c).__name__}")

    def matching_in_window(self, selector: EventSelector, window: int, now: int) -> list[Event]:
        return [e for e in self.upto(now) if selector.matches(e) and _in_window(e.event_time, now, window)]

    def aggregate(self, a: Aggregate, now: int) -> float | int | None:
        events = self.matching_in_window(a.selector, a.window, now)
        if a.kind == "count":
            return len(events)
        prop = a.prop
        assert prop is not None  # every aggregate but count names its property
        if a.kind == "distinct":
            return len({e.properties[prop] for e in events if e.properties.get(prop) is not None})
        values = [v for v in (_number(e.properties.get(prop)) for e in events) if v is not None]
        if a.kind == "sum":
            return sum(values)
        if not values:
            return None
        if a.kind == "avg":
            return sum(values) / len(values)
        return min(values) if a.kind == "min" else max(values)

    def last_time(self, selector: EventSelector, now: int) -> int | None:
        times = [e.event_time for e in self.upto(now) if selector.matches(e)]
        return max(times) if times else None

    def sessions(self, gap: int, now: int) -> list[tuple[int, int]]:
        out: list[list[int]] = []
        for e in self.upto(now):
            if e.event_type not in self.catalog.activity_types:
                continue
            if out and e.event_time - out[-1][1] <= gap:
                out[-1][1] = e.event_time
            else:
                out.append([e.event_time, e.event_time])
        return [(s, t) for s, t in out]

    def sessions_measure(self, c: Sessions, now: int) -> float | int | None:
        inside = [(s, t) for s, t in self.sessions(c.gap, now) if _in_window(s, now, c.window)]
        total = sum(t - s for s, t in inside)
        if c.measure == "count":
            return len(inside)
        if c.measure == "total_duration":
            return total
        return total / len(inside) if inside else None

    def missed_follow_ups(self, c: Absence, now: int) -> list[Event]:
        """First events whose deadline has passed, still within ``keep``, never followed up."""
        history = self.upto(now)
        out = []
        for a in history:
            if not c.first.matches(a):
                continue
            corr = a.properties.get(c.match_on) if c.match_on else None
            if c.match_on and corr is None:
                continue
            deadline = a.event_time + c.within
            if not (deadline <= now < deadline + c.keep):
                continue
            followed = any(
                c.then.matches(b)
                and b.event_time >= a.event_time
                and (c.match_on is None or b.properties.get(c.match_on) == corr)
                for b in history
            )
            if not followed:
                out.append(a)
        return out

    def completed_sequence(self, c: Sequence, now: int) -> list[Event] | None:
        """The most recently completed run of the steps still within ``keep``, or None."""
        candidates = [
            e
            for e in self.upto(now)
            if now - e.event_time < c.keep + c.within and any(s.matches(e) for s in c.steps)
        ]
        best: list[Event] | None = None

        def extend(chain: list[Event]) -> None:
            nonlocal best
            step = len(chain)
            if step == len(c.steps):
                last = chain[-1].event_time
                if now - last < c.keep and (best is None or last > best[-1].event_time):
                    best = list(chain)
                return
            for e in candidates:
                if e in chain or not c.steps[step].matches(e):
                    continue
                if chain:
                    if e.event_time < chain[-1].event_time or e.event_time - chain[0].event_time > c.within:
                        continue
                    if c.match_on and e.properties.get(c.match_on) != chain[0].properties.get(c.match_on):
                        continue
                elif c.match_on and e.properties.get(c.match_on) is None:
                    continue
                chain.append(e)
                extend(chain)
                chain.pop()

        extend([])
        return best

    def profile(self, now: int) -> dict[str, object]:
        out: dict[str, object] = {}
        for e in self.upto(now):
            if e.event_type in self.catalog.profile_types:
                for name in self.catalog.profile_fields:
                    if e.properties.get(name) is not None:
                        out[name] = e.properties[name]
        return out

    # ---- candidate instants ----------------------------------------------------------------------

    def instants(self, segments: Iterable[Segment]) -> set[int]:
        """Every instant at which some condition could change (TTL expiries are added as found)."""
        times = {e.event_time for e in self.events}
        out = set(times)
        for segment in segments:
            for c in walk(segment.condition):
                if isinstance(c, (Aggregate, Sessions)):
                    r = resolution_for(c.window)
                    out.update((t // r + c.window // r) * r for t in times)
                elif isinstance(c, SinceLast):
                    d = int(c.comparison.value)  # type: ignore[arg-type]
                    out.update(t + d for t in times)
                    out.update(t + d + 1 for t in times)
                elif isinstance(c, Absence):
                    out.update(t + c.within for t in times)
                    out.update(t + c.within + c.keep for t in times)
                elif isinstance(c, Sequence):
                    out.update(t + c.keep for t in times)
        return out


def _order(rules: RuleSet) -> list[Segment]:
    by_id = rules.by_id()
    done: list[Segment] = []
    seen: set[str] = set()

    def visit(segment: Segment) -> None:
        if segment.id in seen:
            return
        seen.add(segment.id)
        for ref in segment_references(segment):
            visit(by_id[ref])
        done.append(segment)

    for segment in sorted(rules.segments, key=lambda s: s.id):
        visit(segment)
    return done


def reference_changes(
    rules: RuleSet,
    customer_id: str,
    events: Iterable[Event],
    until: int,
    scorer: Scorer | None = None,
) -> tuple[list[RefChange], dict[str, int]]:
    """All membership changes up to ``until`` and the memberships then (segment -> entered at)."""
    history = History(customer_id, events, rules.catalog, scorer)
    order = _order(rules)
    queue = sorted(t for t in history.instants(order) if t <= until)
    heapq.heapify(queue)
    members: dict[str, int] = {}
    eligible_since: dict[str, int] = {}
    held_until: dict[str, int] = {}
    changes: list[RefChange] = []
    last = None
    while queue:
        now = heapq.heappop(queue)
        if now == last:
            continue
        last = now
        for segment in order:
            current = set(members)
            eligible = history.holds(segment.condition, now, current) and not any(
                x in current for x in segment.exclude
            )
            if segment.ttl is not None:
                if eligible:
                    if segment.id not in eligible_since:
                        eligible_since[segment.id] = now
                        if now + segment.ttl <= until:
                            heapq.heappush(queue, now + segment.ttl)
                    member = now < eligible_since[segment.id] + segment.ttl
                else:
                    eligible_since.pop(segment.id, None)
                    member = False
            else:
                member = eligible
            if segment.hold is not None:
                # A member stays one until `hold` after the instant its condition stopped holding.
                if member:
                    held_until.pop(segment.id, None)
                elif segment.id in members:
                    if segment.id not in held_until:
                        held_until[segment.id] = now + segment.hold
                        if now + segment.hold <= until:
                            heapq.heappush(queue, now + segment.hold)
                    member = now < held_until[segment.id]
                    if not member:
                        del held_until[segment.id]
            if member and segment.id not in members:
                members[segment.id] = now
                changes.append(RefChange(segment.id, "enter", now))
            elif not member and segment.id in members:
                del members[segment.id]
                changes.append(RefChange(segment.id, "exit", now))
    return changes, members


def reference_members(rules: RuleSet, histories: Mapping[str, list[Event]], at: int, scorer: Scorer | None = None) -> dict[str, set[str]]:
    """customer -> segments, as of ``at``."""
    return {cid: set(reference_changes(rules, cid, evs, at, scorer)[1]) for cid, evs in histories.items()}
