"""Drive the engine over a stream of events in one process, the way Flink would.

Keeps per-customer state, a bounded-out-of-orderness watermark (``max event time - bound - 1``,
as Flink's ``for_bounded_out_of_orderness``) and an event-time timer service that honours the
engine's register/delete requests. Used by ``segments preview``, the property tests and the
plain-Python baseline benchmark; the Flink job replaces it with Flink's own machinery.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Callable, Iterable

from .engine import SegmentEngine, StepResult
from .model import Change, Event
from .state import NEVER, CustomerState


@dataclass
class RunStats:
    events: int = 0
    duplicates: int = 0
    late: int = 0
    late_applied: int = 0
    timers_fired: int = 0
    instants: int = 0


@dataclass
class LocalRunner:
    engine: SegmentEngine
    out_of_orderness: int = 0
    on_change: Callable[[Change], None] | None = None
    states: dict[str, CustomerState] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)
    late_events: list[Event] = field(default_factory=list)
    stats: RunStats = field(default_factory=RunStats)
    watermark: int = NEVER
    _max_seen: int = NEVER
    _heap: list[tuple[int, str]] = field(default_factory=list)
    _registered: set[tuple[str, int]] = field(default_factory=set)

    def feed(self, event: Event) -> None:
        """One event, as it arrives; advances the watermark afterwards."""
        self.stats.events += 1
        state = self.states.get(event.customer_id)
        if state is None:
            state = self.states[event.customer_id] = self.engine.new_state(event.customer_id)
        result = self.engine.step(state, event, self.watermark)
        self.states[event.customer_id] = result.state
        self._collect(event.customer_id, result)
        if event.event_time > self._max_seen:
            self._max_seen = event.event_time
            self.advance(self._max_seen - self.out_of_orderness - 1)

    def feed_all(self, events: Iterable[Event]) -> None:
        for event in events:
            self.feed(event)

    def advance(self, watermark: int) -> None:
        """Move the watermark forward, firing due timers in time order (as Flink does)."""
        if watermark <= self.watermark:
            return
        self.watermark = watermark
        heap = self._heap
        while heap and heap[0][0] <= watermark:
            t, customer_id = heapq.heappop(heap)
            if (customer_id, t) not in self._registered:
                continue  # deleted by the engine
            self._registered.discard((customer_id, t))
            self.stats.timers_fired += 1
            result = self.engine.step(self.states[customer_id], t, watermark)
            self.states[customer_id] = result.state
            self._collect(customer_id, result)

    def _collect(self, customer_id: str, result: StepResult) -> None:
        for t in result.timers_to_delete:
            self._registered.discard((customer_id, t))
        for t in result.timers_to_register:
            if (customer_id, t) not in self._registered:
                self._registered.add((customer_id, t))
                heapq.heappush(self._heap, (t, customer_id))
        self.stats.duplicates += result.duplicates
        self.stats.late += len(result.late)
        self.stats.late_applied += result.late_applied
        self.stats.instants += result.instants
        self.late_events.extend(result.late)
        for change in result.changes:
            self.changes.append(change)
            if self.on_change is not None:
                self.on_change(change)

    def members(self) -> dict[str, dict[str, int]]:
        """customer -> {segment: entered at}."""
        return {cid: dict(s.members) for cid, s in self.states.items() if s.members}
