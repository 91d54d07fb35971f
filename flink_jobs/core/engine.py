"""The incremental evaluator: ``step(state, event | timer, watermark)`` for one customer.

Events are buffered until the watermark passes them and then applied one event-time instant at a
time, in (event_time, event_id) order, so results depend on when things happened and not on
arrival order. After each instant every segment is evaluated; entering and leaving are reported
as ``Change`` records stamped with that instant. Time-driven changes (a window sliding past an
event, a deadline, a TTL) happen at instants the features asked for as timers; the Flink adapter
registers those with its timer service and calls ``step`` again when they fire.
"""

from __future__ import annotations

import hashlib
from bisect import insort
from dataclasses import dataclass, replace
from typing import Any, Callable, Generator, Mapping, Sequence

from .compiler import CompiledRules, CompiledSegment, compile_rules
from .durations import DAY, format_duration
from .features import Feature, FeatureState, TimerBook
from .model import Change, Event, RuleSet
from .model_inputs import ModelInputReader
from .scoring import Scorer
from .state import NEVER, CustomerState, seen_add, seen_contains, seen_since
from .windows import DEFAULT_HORIZON


@dataclass(frozen=True)
class EngineConfig:
    """Engine settings; the job fills them from its configuration."""

    dedup_horizon: int = DAY  # how long event ids are remembered, in event time
    allowed_lateness: int = 0  # events this far behind a customer's clock are still applied
    horizon: int = DEFAULT_HORIZON  # longest window a rule may use
    generic_aggregates: bool = True  # keep per-event-type aggregates so new rules need no backfill
    max_buffered: int = 10_000  # events waiting for the watermark, per customer

    def __post_init__(self) -> None:
        problem = lateness_problem(self.dedup_horizon, self.allowed_lateness)
        if problem is not None:
            raise ValueError(f"dedup_horizon {problem}")


def lateness_problem(dedup_horizon: int, allowed_lateness: int, lateness: str = "allowed_lateness") -> str | None:
    """Why ``dedup_horizon`` is too short for ``allowed_lateness`` (named ``lateness`` in the
    message), or None: an event id forgotten before a late duplicate of it arrives would let the
    duplicate count twice."""
    if dedup_horizon >= allowed_lateness:
        return None
    return (
        f"must be at least {lateness} ({format_duration(allowed_lateness)}), "
        "or a late duplicate could be counted twice"
    )


class StepResult:
    """What one step produced, besides the updated state.

    A plain class, not a dataclass: compiled, a dataclass with default factories is built
    through Python's generic ``__init__`` slot, about 4,700 instructions a result, two results
    an event (bench/HISTORY.md, session 33); this constructor is native."""

    def __init__(self, state: CustomerState) -> None:
        self.state = state
        self.changes: list[Change] = []
        self.timers_to_register: list[int] = []
        self.timers_to_delete: list[int] = []
        self.late: list[Event] = []  # beyond allowed lateness: for the late topic
        self.duplicates = 0
        self.late_applied = 0
        self.instants = 0
        self.forced = 0  # instants processed ahead of the watermark because the buffer overflowed

    def __repr__(self) -> str:
        return (
            f"StepResult(changes={self.changes}, timers_to_register={self.timers_to_register}, "
            f"timers_to_delete={self.timers_to_delete}, late={len(self.late)}, duplicates={self.duplicates}, "
            f"late_applied={self.late_applied}, instants={self.instants}, forced={self.forced})"
        )


# What the step generators yield (the model inputs of a customer at an instant) and are sent back
# (the scores for them); their return value is the StepResult.
Steps = Generator[Mapping[str, float], Mapping[str, float], StepResult]


# An empty 8-byte BLAKE2b, copied for each id: a copy costs less than a new hasher's keyword
# arguments (about 650 against 800-870 ns a hash; bench/HISTORY.md, session 33).
_BLAKE2B_8 = hashlib.blake2b(digest_size=8)


def event_id_hash(event_id: str) -> int:
    """Stable 64-bit hash (Python's hash() is salted per process; state outlives processes)."""
    h = _BLAKE2B_8.copy()
    h.update(event_id.encode())
    return int.from_bytes(h.digest(), "little")


class SegmentEngine:
    """Evaluates a rule set for one customer at a time; holds no per-customer data itself."""

    def __init__(
        self,
        rules: RuleSet | CompiledRules,
        config: EngineConfig | None = None,
        scorer: Scorer | None = None,
    ) -> None:
        self.config = config or EngineConfig()
        if isinstance(rules, RuleSet):
            rules = compile_rules(
                rules, horizon=self.config.horizon, generic_aggregates=self.config.generic_aggregates
            )
        self.compiled = rules
        self.scorer = scorer
        # Looked up once: a getattr with a default raises and catches inside for a scorer without
        # it, every round (bench/HISTORY.md, session 33).
        self._score_batch: Callable[[list[Mapping[str, float]]], list[Mapping[str, float]]] | None = getattr(
            scorer, "score_batch", None
        )
        self._feature_keys = frozenset(f.key for f in rules.features)
        self._segment_ids = frozenset(s.id for s in rules.segments)
        self._ttl = {c.id: (i, c.segment.ttl) for i, c in enumerate(rules.segments) if c.segment.ttl is not None}
        self._hold = {c.id: i for i, c in enumerate(rules.segments) if c.segment.hold is not None}
        # When these rules took effect, in event time, for the states being brought up to them
        # (the batch engine sets it to the watermark of the call that does): a segment removed by
        # them ends then, not at the customer's last instant, which may be long before.
        self.reconcile_at = NEVER
        catalog = rules.rules.catalog
        self._profile_types = catalog.profile_types  # events whose properties update the profile
        self._profile_fields = tuple(catalog.profile_fields)
        self._model_inputs = self._resolve_model_inputs()

    @property
    def rule_version(self) -> str:
        return self.compiled.version

    @property
    def state_version(self) -> str:
        """What this engine's states record as their rule version (``CompiledRules.state_version``):
        a state that records another is reconciled before its next step."""
        return self.compiled.state_version

    def new_state(self, customer_id: str) -> CustomerState:
        state = CustomerState(customer_id)
        state.rule_version = self.state_version
        return state

    # ---- the step ----------------------------------------------------------------------------

    def step(self, state: CustomerState, item: Event | list[Event] | int | None, watermark: int) -> StepResult:
        """Take an event, several events of the customer (all taken in before any instant is
        processed, so their order does not matter), or a timer (an int instant, or None for a
        plain watermark advance).

        Mutates and returns ``state`` (in the result). ``watermark``: every event with
        ``event_time <= watermark`` has arrived, so instants up to it can be processed.
        """
        if type(item) is Event and state.rule_version == self.state_version:
            quick = self._arrive(state, item, watermark)
            if quick is not None:
                return quick
        steps = self.steps(state, item, watermark)
        try:
            request = next(steps)
            while True:
                request = steps.send(self._score_many([(state.customer_id, request)])[0])
        except StopIteration as done:
            result: StepResult = done.value
            return result

    def step_many(
        self, work: Sequence[tuple[CustomerState, Event | list[Event] | int | None]], watermark: int
    ) -> list[StepResult]:
        """``step`` for several customers (each at most once), with their model scoring batched:
        the steps run side by side, and each round of scoring requests goes to the scorer in one
        call. Results are exactly those of stepping each customer alone."""
        results: list[StepResult | None] = [None] * len(work)
        pending: list[tuple[int, Steps, str, Mapping[str, float]]] = []
        for i, (state, item) in enumerate(work):
            steps = self.steps(state, item, watermark)
            try:
                pending.append((i, steps, state.customer_id, next(steps)))
            except StopIteration as done:
                results[i] = done.value
        while pending:
            scores = self._score_many([(customer_id, request) for _, _, customer_id, request in pending])
            waiting = []
            for (i, steps, customer_id, _), sent in zip(pending, scores):
                try:
                    waiting.append((i, steps, customer_id, steps.send(sent)))
                except StopIteration as done:
                    results[i] = done.value
            pending = waiting
        return results  # type: ignore[return-value]

    def _arrive(self, state: CustomerState, event: Event, watermark: int) -> StepResult | None:
        """``step`` for an event ahead of the watermark for a customer with nothing due (the
        commonest call of the per-event runner; in the job the JVM holds events for the watermark,
        so only those it could not time arrive early): it is only deduplicated, buffered and given
        a timer (``_accept``'s work), without the generator chain of the general path, which costs
        a sixth more (bench/HISTORY.md). None when the call is not that simple."""
        t = event.event_time
        timers = state.timers
        if t <= watermark or t <= state.clock or len(state.buffer) >= self.config.max_buffered:
            return None
        if timers and min(timers) <= watermark:
            return None
        result = StepResult(state)
        key = event_id_hash(event.event_id)
        if seen_contains(state.seen, key):
            result.duplicates = 1
            return result
        book = TimerBook(timers, state.clock)
        self._buffer(state, event, key, watermark, book)
        result.timers_to_register = sorted(book.added)
        return result

    def steps(self, state: CustomerState, item: Event | list[Event] | int | None, watermark: int) -> Steps:
        """``step`` as a generator: it yields the model inputs whenever it needs scores (only with
        a scorer) and expects the scores sent back; it returns the StepResult."""
        result = StepResult(state)
        book = TimerBook(state.timers, state.clock)
        if state.rule_version != self.state_version:
            self._reconcile(state, book, result)
        if isinstance(item, Event):
            yield from self._accept(state, item, watermark, book, result)
        elif isinstance(item, list):
            for event in item:
                yield from self._accept(state, event, watermark, book, result)
        yield from self._advance(state, watermark, book, result)
        result.timers_to_register = sorted(book.added)
        result.timers_to_delete = sorted(book.removed)
        return result

    def _score_many(self, requests: list[tuple[str, Mapping[str, float]]]) -> list[Mapping[str, float]]:
        scorer = self.scorer
        assert scorer is not None  # only a scorer makes the steps ask
        batch = self._score_batch
        if batch is not None and len(requests) > 1:
            scores: list[Mapping[str, float]] = batch([features for _, features in requests])
            return scores
        return [scorer.score(customer_id, features) for customer_id, features in requests]

    def _accept(self, state: CustomerState, event: Event, watermark: int, book: TimerBook, result: StepResult) -> Steps:
        key = event_id_hash(event.event_id)
        if seen_contains(state.seen, key):
            result.duplicates += 1
            return result
        t = event.event_time
        if t <= state.clock:
            if state.clock - t > self.config.allowed_lateness:
                result.late.append(event)
                return result
            seen_add(state.seen, key, t)
            self._apply_late(state, event, book, result)
            return result
        self._buffer(state, event, key, watermark, book)
        if len(state.buffer) > self.config.max_buffered:
            # The watermark is stuck (an idle or broken source): process the oldest rather than
            # grow without bound.
            before = result.instants
            yield from self._advance(state, state.buffer[0].event_time, book, result)
            result.forced += result.instants - before
        return result

    def _buffer(self, state: CustomerState, event: Event, key: int, watermark: int, book: TimerBook) -> None:
        """Remember an event ahead of the customer's clock (for dedup) and buffer it for its
        instant, with a timer unless the watermark already passed it."""
        t = event.event_time
        seen_add(state.seen, key, t)
        if len(state.seen[0]) > state.seen_limit:
            self._prune_seen(state)
        buffer = state.buffer
        if buffer:
            insort(buffer, event, key=Event.sort_key)
        else:  # the usual case, without insort's keyword call
            buffer.append(event)
        if t > watermark:
            book.want(t)

    def _prune_seen(self, state: CustomerState) -> None:
        oldest = state.clock - self.config.dedup_horizon
        if state.clock != NEVER:
            state.seen = seen_since(state.seen, oldest)
        state.seen_limit = max(64, 2 * len(state.seen[0]))

    def _advance(self, state: CustomerState, watermark: int, book: TimerBook, result: StepResult) -> Steps:
        buffer = state.buffer
        timers = state.timers
        while True:
            t_event = buffer[0].event_time if buffer else None
            t_timer = min(timers) if timers else None
            if t_event is None:
                if t_timer is None:
                    return result
                now = t_timer
            elif t_timer is None or t_event <= t_timer:
                now = t_event
            else:
                now = t_timer
            if now > watermark:
                return result
            n = 0
            while n < len(buffer) and buffer[n].event_time == now:
                n += 1
            events = buffer[:n]
            del buffer[:n]
            yield from self._instant(state, now, events, book, result)

    def _instant(self, state: CustomerState, now: int, events: list[Event], book: TimerBook, result: StepResult) -> Steps:
        # A segment's value changes only when one of its inputs does: a feature fed by an event,
        # a time-driven flip a feature asked a timer for, the profile, the scores, or another
        # segment's membership. So only those segments are evaluated; the first instant of a
        # customer evaluates all (conditions such as "count < 2" hold before any input arrives).
        dirty: set[int] | None = None if state.clock == NEVER else set()
        state.clock = now
        book.now = now
        fired = state.timers.pop(now, None) is not None
        if fired:
            book.added.discard(now)
        result.instants += 1
        compiled = self.compiled
        if events:
            yield from self._apply(state, now, events, book, dirty)
        if fired and dirty is not None:
            readers = compiled.readers
            features = state.features
            for feature in compiled.time_features:
                fs = features.get(feature.key)
                if fs is not None and feature.flips_at(fs, now):
                    dirty.update(readers[feature.key])
            for sid, since in state.eligible_since.items():
                position, ttl = self._ttl[sid]
                if since + ttl == now:
                    dirty.add(position)
            for sid, until in state.held_until.items():
                if until == now:
                    dirty.add(self._hold[sid])
        self._evaluate(state, now, book, result, dirty)
        return result

    def _apply(
        self, state: CustomerState, now: int, events: list[Event], book: TimerBook, dirty: set[int] | None
    ) -> Generator[Mapping[str, float], Mapping[str, float], None]:
        compiled = self.compiled
        index = compiled.by_event_type
        readers = compiled.readers
        features = state.features
        profile_changed = False
        if len(events) == 1:
            event = events[0]
            if event.event_type in self._profile_types:
                profile_changed = self._update_profile(state, event)
            for feature in index.get(event.event_type, ()):
                self._feed(features, feature, events, now, book)
                if dirty is not None:
                    dirty.update(readers.get(feature.key, ()))
        else:
            grouped: dict[str, tuple[Feature[Any], list[Event]]] = {}
            for event in events:
                if event.event_type in self._profile_types:
                    profile_changed = self._update_profile(state, event) or profile_changed
                for feature in index.get(event.event_type, ()):
                    grouped.setdefault(feature.key, (feature, []))[1].append(event)
            for feature, batch in grouped.values():
                self._feed(features, feature, batch, now, book)
                if dirty is not None:
                    dirty.update(readers.get(feature.key, ()))
        if profile_changed and dirty is not None:
            dirty.update(compiled.profile_readers)
        if self.scorer is not None:
            scores = dict((yield self.model_features(state, now)))
            if scores != state.scores:
                state.scores = scores
                if dirty is not None:
                    dirty.update(compiled.score_readers)

    @staticmethod
    def _feed(features: dict[str, FeatureState], feature: Feature[Any], events: list[Event], now: int, book: TimerBook) -> None:
        fs = features.get(feature.key)
        if fs is None:
            fs = feature.init()
        fs = feature.apply(fs, events, now, book)
        if not feature.empty(fs):
            features[feature.key] = fs

    def _update_profile(self, state: CustomerState, event: Event) -> bool:
        changed = False
        for name in self._profile_fields:
            value = event.properties.get(name)
            if value is not None and state.profile.get(name) != value:
                state.profile[name] = value
                changed = True
        return changed

    def _apply_late(self, state: CustomerState, event: Event, book: TimerBook, result: StepResult) -> None:
        """An event behind the clock but within the allowed lateness: update what can be updated
        exactly (aggregates, sessions, recency; a late follow-up still cancels) and re-evaluate now."""
        result.late_applied += 1
        for feature in self.compiled.by_event_type.get(event.event_type, ()):
            fs = state.features.get(feature.key)
            if fs is None:
                fs = feature.init()
            fs = feature.apply_late(fs, event, state.clock, book)
            if not feature.empty(fs):
                state.features[feature.key] = fs
        self._evaluate(state, state.clock, book, result)

    # ---- evaluation ---------------------------------------------------------------------------

    def _evaluate(
        self, state: CustomerState, now: int, book: TimerBook, result: StepResult, dirty: set[int] | None = None
    ) -> None:
        """Evaluate the segments in ``dirty`` (all when None), in dependency order; a membership
        change makes the segments that read it dirty too."""
        members = state.members
        segments = self.compiled.segments
        if dirty is None:
            start = 0
        elif not dirty:
            return
        else:
            start = min(dirty)
        for position in range(start, len(segments)):
            if dirty is not None and position not in dirty:
                continue
            compiled = segments[position]
            segment = compiled.segment
            sid = compiled.id  # interned (a key of every state's members)
            eligible = compiled.node.holds(state, now, book)
            if eligible and segment.exclude:
                for other in segment.exclude:
                    if other in members:
                        eligible = False
                        break
            if segment.ttl is not None:
                since = state.eligible_since.get(sid)
                if eligible:
                    if since is None:
                        since = state.eligible_since[sid] = now
                        book.want(now + segment.ttl)
                    member = now < since + segment.ttl
                else:
                    if since is not None:
                        del state.eligible_since[sid]
                        book.release(since + segment.ttl)
                    member = False
            else:
                member = eligible
            was = sid in members
            held = False
            if segment.hold is not None:
                until = state.held_until.get(sid)
                if member:
                    if until is not None:  # it holds again: the hold is over
                        del state.held_until[sid]
                        book.release(until)
                elif was:
                    if until is None:  # it stopped holding now: stay a member until now + hold
                        until = state.held_until[sid] = now + segment.hold
                        book.want(until)
                    if now < until:
                        member = True
                    else:
                        del state.held_until[sid]
                        held = True
            if member == was:
                continue
            if member:
                members[sid] = now
                _, reason = compiled.node.explain(state, now)
                kind = "enter"
            else:
                del members[sid]
                reason = self._exit_reason(state, compiled, now)
                if held:
                    assert segment.hold is not None
                    reason = f"hold of {format_duration(segment.hold, weeks=False)} after it stopped matching ran out: {reason}"
                kind = "exit"
            result.changes.append(
                Change(state.customer_id, sid, kind, now, self.rule_version, _short(reason), state.scores)  # type: ignore[arg-type]
            )
            if dirty is not None:
                dirty.update(self.compiled.dependents[position])

    def _exit_reason(self, state: CustomerState, compiled: CompiledSegment, now: int) -> str:
        segment = compiled.segment
        holds, text = compiled.node.explain(state, now)
        if not holds:
            return text
        excluded = [x for x in segment.exclude if x in state.members]
        if excluded:
            return f"excluded while in {', '.join(excluded)}"
        assert segment.ttl is not None  # it holds, nothing excludes it: only its TTL can end it
        return f"ttl {format_duration(segment.ttl, weeks=False)} ran out"

    def _reconcile(self, state: CustomerState, book: TimerBook, result: StepResult) -> None:
        """Bring a state written under another rule version up to this one, without a replay:
        features still in use keep their data (and re-announce their timers for the new windows;
        an aggregate whose rules now read other properties of its events keeps its counts and the
        properties it still has: ``Feature.adopt``), segments that no longer exist are left, and
        everything is re-evaluated at the clock."""
        for feature in self.compiled.features:
            if feature.key not in state.features:
                feature.adopt(state.features, state.clock)
        for key in [k for k in state.features if k not in self._feature_keys]:
            del state.features[key]
        for feature in self.compiled.features:
            fs = state.features.get(feature.key)
            if fs is not None:
                feature.rearm(fs, state.clock, book)
        effective_at = max(state.clock, self.reconcile_at)
        for sid in sorted(set(state.members) - self._segment_ids):
            del state.members[sid]
            result.changes.append(
                Change(
                    state.customer_id, sid, "exit", effective_at, self.rule_version,
                    f"segment removed from the rules (version {self.rule_version})", state.scores,
                )
            )
        for sid in [s for s in state.eligible_since if s not in self._segment_ids]:
            del state.eligible_since[sid]
        for sid in [s for s in state.held_until if s not in self._hold]:  # removed, or no longer held
            book.release(state.held_until.pop(sid))
        state.rule_version = self.state_version
        if state.clock != NEVER:
            first = len(result.changes)
            self._evaluate(state, state.clock, book, result)
            # The state agreed with the old rules at its clock: whatever changes now is the rule
            # change's doing. An enter keeps the clock (the new rules, backdated over the history
            # the state holds); an exit happens when the change took effect, since the customer
            # was a member under the old rules until then.
            for n in range(first, len(result.changes)):
                change = result.changes[n]
                if change.kind == "exit":
                    result.changes[n] = replace(
                        change, event_time=effective_at,
                        reason=_short(f"rules changed (version {self.rule_version}): {change.reason}"),
                    )

    # ---- reading ----------------------------------------------------------------------------

    def explain(self, state: CustomerState, now: int | None = None) -> list[tuple[str, bool, str]]:
        """(segment id, is member, why) for every segment, evaluated at ``now`` (default: clock)."""
        at = state.clock if now is None else now
        out = []
        for compiled in self.compiled.segments:
            holds, text = compiled.node.explain(state, at)
            member = compiled.id in state.members
            if holds and not member:
                text = self._exit_reason(state, compiled, at)
            out.append((compiled.id, member, text))
        return out

    def model_features(self, state: CustomerState, now: int) -> Mapping[str, float]:
        """Inputs for the scorer at ``now``, as defined in ``model_inputs.py`` (empty if the
        generic aggregates are off)."""
        return self._model_inputs.read(state.features, now)

    def _resolve_model_inputs(self) -> ModelInputReader:
        if not self.config.generic_aggregates:
            return ModelInputReader.empty()
        return ModelInputReader.resolve(self.compiled.features, self.compiled.rules.catalog)


def _short(text: str, limit: int = 240) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# Pickled rules reach the workers; compiled by mypyc these classes need it (see pickling.py).
from .pickling import register_dataclasses  # noqa: E402

register_dataclasses(globals(), __name__)
