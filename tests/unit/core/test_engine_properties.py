"""The incremental engine agrees with the brute-force reference on random rules and histories,
whatever the arrival order within the out-of-orderness bound and with duplicates injected."""

from __future__ import annotations

import dataclasses
import marshal
from array import array

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flink_jobs.core.durations import DAY, HOUR, MINUTE, SECOND
from flink_jobs.core.engine import EngineConfig, SegmentEngine
from flink_jobs.core.features import StatsFeature, distinct_hash
from flink_jobs.core.model import EventSelector, RuleSet
from flink_jobs.core.reference import reference_changes
from flink_jobs.core.runner import LocalRunner
from flink_jobs.core.scoring import FixedScorer
from flink_jobs.core.state import STATE_SLOTS, CustomerState, decode_state, encode_state
from flink_jobs.core.windows import DEFAULT_HORIZON, first_bucket

from .helpers import CATALOG
from .strategies import PROPS, T0, arrivals, histories, rule_sets

SCORER = FixedScorer({"alice": {"purchase_propensity": 0.9}}, default={"purchase_propensity": 0.3})
BOUND = 5 * SECOND


class _StoredStateEngine:
    """A SegmentEngine that encodes and decodes the state around every step, as a state backend
    does. A wrapper, not a subclass: interpreted code cannot subclass a class mypyc compiled."""

    encode = staticmethod(encode_state)

    def __init__(self, *args, **kwargs) -> None:
        self._engine = SegmentEngine(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def step(self, state, item, watermark):
        result = self._engine.step(decode_state(self.encode(state)), item, watermark)
        result.state = decode_state(self.encode(result.state))
        return result


_TIERS = ((MINUTE, 2 * DAY), (HOUR, 35 * DAY), (DAY, DEFAULT_HORIZON))  # the generic aggregates


def _features_before_format_7(state: CustomerState) -> dict:
    """The features as formats 1-6 held them: the generic aggregates of an event type as a
    StatsFeature per resolution (bucket indexes, each kept for its tier's retention), where
    format 7 keeps one TieredStatsFeature (records keyed by their start in ms)."""
    out = {}
    for key, fs in state.features.items():
        base, _, props = key.rpartition("|")
        if not base.endswith("|tiered"):
            out[key] = fs
            continue
        selector = EventSelector((base.split("|")[1],))
        for r, retention in _TIERS:
            stats = StatsFeature(selector, tuple(p for p in props.split(",") if p), r, retention)
            oldest = first_bucket(state.clock, retention, r) * r
            held = array("d")
            for at in range(0, len(fs), stats.width):
                if fs[at] >= oldest:
                    held.extend(fs[at : at + stats.width])
            if held:
                out[stats.key] = stats._rebucketed(held)
    return out


# Formats 1-5 end with rule_version: format 6 appended held_until (a segment's hold), which no
# state of theirs can have needed (see _OLD_FORMAT_RULES).
_SLOTS_BEFORE_FORMAT_6 = STATE_SLOTS[: STATE_SLOTS.index("held_until")]


def _values_before_format_4(state: CustomerState) -> list:
    """The slots as formats 1-3 wrote them: buffered events as tuples, and ``seen`` a dict of
    event id hash -> event time."""
    values = [getattr(state, name) for name in _SLOTS_BEFORE_FORMAT_6]
    values[STATE_SLOTS.index("buffer")] = [
        (e.event_id, e.customer_id, e.event_type, e.event_time, dict(e.properties), e.ingest_time) for e in state.buffer
    ]
    ids, times = state.seen
    values[STATE_SLOTS.index("seen")] = dict(zip(ids, times))
    return values


def encode_format_1(state: CustomerState) -> bytes:
    """A state as state format 1 wrote it (until 2026-11-25): each StatsFeature's buckets as a
    dict ``bucket -> [count, n0, sum0, min0, max0, ...]`` under a key without its properties."""
    values = _values_before_format_4(state)
    features = {}
    for key, fs in _features_before_format_7(state).items():
        if key.startswith("stats|") and not isinstance(fs, dict):  # (a dict: still format 1)
            base, _, props = key.rpartition("|")
            w = 2 + 4 * len([p for p in props.split(",") if p])
            fs = {int(fs[at]): [int(fs[at + 1]), *fs[at + 2 : at + w]] for at in range(0, len(fs), w)}
            key = base
        features[key] = _distinct_as_dicts(key, fs)
    values[STATE_SLOTS.index("features")] = features
    return marshal.dumps((1, *values))


# Format 5 keeps a distinct value as its hash; the older formats kept the values themselves. The
# histories draw their values from PROPS, so each hash is one of theirs.
_VALUES = {distinct_hash(v): v for props in PROPS.values() for values in props.values() for v in values}


def _distinct_as_dicts(key: str, fs: object, kind: type = set) -> object:
    """A DistinctFeature's buckets as formats 1-4 held them: ``bucket -> values``, the values a
    set (formats 1 and 2) or a list (3 and 4)."""
    if key.startswith("distinct|"):
        out, at = {}, 0
        while at < len(fs):  # type: ignore[arg-type]
            n = int(fs[at + 1])  # type: ignore[index]
            out[int(fs[at])] = kind(_VALUES[h] for h in fs[at + 2 : at + 2 + n])  # type: ignore[index]
            at += 2 + n
        return out
    return fs


def encode_format_2(state: CustomerState) -> bytes:
    """A state as state format 2 wrote it (until 2026-12-05): as format 4, but with each
    DistinctFeature bucket's values a set and ``seen`` a dict, in marshal's default version."""
    values = _values_before_format_4(state)
    values[STATE_SLOTS.index("features")] = {
        key: _distinct_as_dicts(key, fs) for key, fs in _features_before_format_7(state).items()
    }
    return marshal.dumps((2, *values))


class _Format1StateEngine(_StoredStateEngine):
    """Every step reads a state of format 1: each is converted (and reconciled) on its step."""

    encode = staticmethod(encode_format_1)


class _Format2StateEngine(_StoredStateEngine):
    """Every step reads a state of format 2: its distinct buckets become lists again."""

    encode = staticmethod(encode_format_2)


def _features_before_format_5(state: CustomerState) -> dict:
    """The features as formats 3 and 4 wrote them: each DistinctFeature's buckets a dict of value
    lists."""
    return {key: _distinct_as_dicts(key, fs, list) for key, fs in _features_before_format_7(state).items()}


def encode_format_3(state: CustomerState) -> bytes:
    """A state as state format 3 wrote it (2026-12-05, one session): as format 4, but with
    ``seen`` a dict."""
    values = _values_before_format_4(state)
    values[STATE_SLOTS.index("features")] = _features_before_format_5(state)
    return marshal.dumps((3, *values), 2)


def encode_format_4(state: CustomerState) -> bytes:
    """A state as state format 4 wrote it (until 2026-12-06): as format 5, but with each
    DistinctFeature's buckets a dict of value lists."""
    values = list(marshal.loads(encode_state(state)))[: 1 + len(_SLOTS_BEFORE_FORMAT_6)]
    values[0] = 4
    values[1 + STATE_SLOTS.index("features")] = _features_before_format_5(state)
    return marshal.dumps(tuple(values), 2)


def encode_format_5(state: CustomerState) -> bytes:
    """A state as state format 5 wrote it (until 2026-12-07): as format 6, without ``held_until``."""
    values = list(marshal.loads(encode_format_6(state)))[: 1 + len(_SLOTS_BEFORE_FORMAT_6)]
    values[0] = 5
    return marshal.dumps(tuple(values), 2)


def encode_format_6(state: CustomerState) -> bytes:
    """A state as state format 6 wrote it (until 2026-12-07): as format 7, but with the generic
    aggregates of each event type as three StatsFeatures (minute, hour, day)."""
    values = list(marshal.loads(encode_state(state)))
    values[0] = 6
    values[1 + STATE_SLOTS.index("features")] = _features_before_format_7(state)
    return marshal.dumps(tuple(values), 2)


class _Format3StateEngine(_StoredStateEngine):
    """Every step reads a state of format 3: its dedup dict becomes two arrays again."""

    encode = staticmethod(encode_format_3)


class _Format4StateEngine(_StoredStateEngine):
    """Every step reads a state of format 4: its distinct buckets become flat arrays again."""

    encode = staticmethod(encode_format_4)


class _Format5StateEngine(_StoredStateEngine):
    """Every step reads a state of format 5: it holds no segment's hold."""

    encode = staticmethod(encode_format_5)


class _Format6StateEngine(_StoredStateEngine):
    """Every step reads a state of format 6: its generic aggregates become one feature per event
    type again."""

    encode = staticmethod(encode_format_6)


_ENGINES = {
    "in memory": SegmentEngine,
    "stored": _StoredStateEngine,
    "stored in format 1": _Format1StateEngine,
    "stored in format 2": _Format2StateEngine,
    "stored in format 3": _Format3StateEngine,
    "stored in format 4": _Format4StateEngine,
    "stored in format 5": _Format5StateEngine,
    "stored in format 6": _Format6StateEngine,
}


def _of_their_time(rules: RuleSet, stored: str) -> RuleSet:
    """The rules as states of an older format can have met them: no segment had a hold before
    format 6."""
    if not stored.startswith("stored in format") or stored == "stored in format 6":
        return rules
    return dataclasses.replace(rules, segments=tuple(dataclasses.replace(s, hold=None) for s in rules.segments))


def _engine_changes(rules, arrived, until, generic, stored="in memory"):
    engine_type = _ENGINES[stored]
    engine = engine_type(rules, EngineConfig(generic_aggregates=generic), scorer=SCORER)
    runner = LocalRunner(engine, out_of_orderness=BOUND)
    runner.feed_all(arrived)
    runner.advance(until)
    assert runner.late_events == [], "no event within the bound may be treated as late"
    per_customer: dict[str, list[tuple[int, str, str]]] = {}
    for c in runner.changes:
        assert c.event_time <= until
        per_customer.setdefault(c.customer_id, []).append((c.event_time, c.segment_id, c.kind))
    return per_customer, runner


def _reference(rules, events, until):
    out = {}
    members = {}
    for cid in sorted({e.customer_id for e in events}):
        changes, final = reference_changes(rules, cid, [e for e in events if e.customer_id == cid], until, SCORER)
        if changes:
            out[cid] = [(c.event_time, c.segment_id, c.kind) for c in changes]
        members[cid] = final
    return out, members


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(rules=rule_sets(), events=histories(), data=st.data(), generic=st.booleans(), stored=st.sampled_from(sorted(_ENGINES)), tail=st.sampled_from([0, 1 * DAY, 50 * DAY]))
def test_engine_matches_reference_under_disorder_and_duplicates(rules, events, data, generic, stored, tail):
    rules = _of_their_time(rules, stored)
    arrived = data.draw(arrivals(events, BOUND))
    until = (max((e.event_time for e in events), default=0) + tail) if events else 0
    got, runner = _engine_changes(rules, arrived, until, generic, stored)
    want, want_members = _reference(rules, events, until)
    # Changes at one instant have no inherent order between segments: compare per instant as sets.
    assert {c: sorted(v) for c, v in got.items()} == {c: sorted(v) for c, v in want.items()}
    for cid, state in runner.states.items():
        assert state.members == want_members[cid]
    assert runner.stats.duplicates == len(arrived) - len(events)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules=rule_sets(max_segments=3), events=histories(customers=("alice",)), data=st.data())
def test_two_arrival_orders_give_the_same_change_sequence(rules, events, data):
    until = max((e.event_time for e in events), default=0) + DAY
    a, _ = _engine_changes(rules, data.draw(arrivals(events, BOUND)), until, True)
    b, _ = _engine_changes(rules, data.draw(arrivals(events, BOUND)), until, True)
    assert a == b


class _InputScorer:
    """Scores that follow the model inputs, so an answer sent to the wrong step would show; records
    the size of every batch it is asked for."""

    names = ("purchase_propensity",)

    def __init__(self) -> None:
        self.batches: list[int] = []

    def score(self, customer_id, features):
        return {"purchase_propensity": (sum(features.values()) * 0.37) % 1.0}

    def score_batch(self, rows):
        self.batches.append(len(rows))
        return [self.score("", f) for f in rows]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    rules=rule_sets(),
    events=histories(customers=("alice", "bob", "carol")),
    data=st.data(),
)
def test_stepping_customers_together_gives_what_stepping_each_alone_gives(rules, events, data):
    """step_many (the job's timer path: scoring batched across customers) against step."""
    last = max((e.event_time for e in events), default=T0)
    watermarks = sorted(data.draw(st.lists(st.integers(T0, last + 2 * DAY), min_size=1, max_size=5)))
    arrived = data.draw(arrivals(events, BOUND))
    outcomes = []
    for together in (False, True):
        scorer = _InputScorer()
        engine = SegmentEngine(rules, EngineConfig(), scorer=scorer)
        states = {}
        changes = []
        for event in arrived:  # all buffered: the watermark is before every event
            state = states.setdefault(event.customer_id, engine.new_state(event.customer_id))
            changes += engine.step(state, event, T0 - 1).changes
        for w in watermarks:
            if together:
                results = engine.step_many([(s, None) for s in states.values()], w)
            else:
                results = [engine.step(s, None, w) for s in states.values()]
            for r in results:
                changes += r.changes
        outcomes.append((changes, {c: encode_state(s) for c, s in states.items()}, scorer.batches))
    (alone, alone_states, _), (together, together_states, batches) = outcomes
    assert together == alone
    assert together_states == alone_states


def test_step_many_sends_one_batch_per_round_of_requests():
    from flink_jobs.core.loader import load_rules_from_texts
    from flink_jobs.core.model import Event

    text = (
        "version: 1\nsegments:\n  - id: likely\n    description: Likely buyers.\n    owner: tests\n"
        "    when:\n      score: purchase_propensity\n      at_least: 0.5\n"
    )
    rules = load_rules_from_texts({"r.yaml": text}, catalog=CATALOG)
    scorer = _InputScorer()
    engine = SegmentEngine(rules, EngineConfig(), scorer=scorer)
    states = [engine.new_state(c) for c in ("a", "b", "c")]
    for i, state in enumerate(states):
        for k in range(2):  # two instants each: two rounds
            engine.step(state, Event(f"{i}-{k}", state.customer_id, "page_view", T0 + k * SECOND, {}), T0 - 1)
    engine.step_many([(s, None) for s in states], T0 + DAY)
    assert scorer.batches == [3, 3]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(rules=rule_sets(), events=histories(), data=st.data(), tail=st.sampled_from([0, 1 * DAY]))
def test_events_taken_in_groups_at_a_watermark_that_passed_them_match_the_reference(rules, events, data, tail):
    """What the job's batcher does: it holds each event until the watermark passes it, then sends a
    customer's held events together with that watermark (in arrival order, which need not be time
    order), and the job steps the customer once with all of them."""
    arrived = data.draw(arrivals(events, BOUND))
    until = (max((e.event_time for e in events), default=0) + tail) if events else 0
    engine = SegmentEngine(rules, EngineConfig(), scorer=SCORER)
    cuts = sorted(data.draw(st.lists(st.sampled_from([e.event_time for e in events] or [0]), max_size=6)))
    states, changes, sent = {}, {}, set()
    for w in [*cuts, until]:
        groups: dict[str, list] = {}
        for i, event in enumerate(arrived):
            if i not in sent and event.event_time <= w:
                sent.add(i)
                groups.setdefault(event.customer_id, []).append(event)
        work = [(states.setdefault(c, engine.new_state(c)), group) for c, group in groups.items()]
        work += [(s, None) for c, s in states.items() if c not in groups]
        for result in engine.step_many(work, w):
            assert result.late == []
            for c in result.changes:
                changes.setdefault(c.customer_id, []).append((c.event_time, c.segment_id, c.kind))
    want, want_members = _reference(rules, events, until)
    assert {c: sorted(v) for c, v in changes.items()} == {c: sorted(v) for c, v in want.items()}
    for cid, state in states.items():
        assert state.members == want_members[cid]
