"""Flink functions of the segmentation job: thin adapters between Flink and the core.

No business logic here: parsing is ``serde.parse_event``, evaluation is ``SegmentEngine.step``;
these classes move records, state and timers between Flink and those functions. State
descriptors and output tags are declared in this one place.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict

from pyflink.common import Row, Types
from pyflink.common.watermark_strategy import TimestampAssigner
from pyflink.datastream import (
    KeyedBroadcastProcessFunction,
    KeyedProcessFunction,
    OutputTag,
    ProcessFunction,
    RuntimeContext,
)
from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor

from .core.diagnostics import RuleLoadError
from .core.engine import EngineConfig, SegmentEngine, StepResult
from .core.loader import load_rules_from_texts
from .core.model import Event, RuleSet
from .core.state import CustomerState, decode_state, encode_state
from .serde import Invalid, ParseLimits, SourceRecord, encode_dlq, encode_late, parse_event
from .sinks.kafka import KEY_VALUE_TYPE

_log = logging.getLogger("flink_jobs.functions")

# A membership change as it leaves the engine operator; ttl: the segment's TTL in ms, or None.
CHANGE_TYPE = Types.ROW_NAMED(
    ["customer_id", "segment", "kind", "event_time", "rule_version", "reason", "ttl"],
    [Types.STRING(), Types.STRING(), Types.STRING(), Types.LONG(), Types.STRING(), Types.STRING(), Types.LONG()],
)
# Rule files from the rules topic (file name -> YAML text), and under ACTIVE_RULES the JSON of
# the files whose rules are in use (the last set that loaded), for restores.
RULE_FILES = MapStateDescriptor("rule_files", Types.STRING(), Types.STRING())
ACTIVE_RULES = "\u0000active"
MAX_TIMESTAMP = 2**63 - 1
DLQ_TAG = OutputTag("invalid-events", KEY_VALUE_TYPE)
LATE_TAG = OutputTag("late-events", KEY_VALUE_TYPE)
# Bytes from core.state.encode_state. Not PRIMITIVE_ARRAY(BYTE): thread mode converts those byte by
# byte through a Python tuple, and fails on a missing value.
CUSTOMER_STATE = ValueStateDescriptor("customer", Types.PICKLED_BYTE_ARRAY())


class ParseEventFunction(ProcessFunction):
    """Source rows (topic, partition, offset, timestamp, key, value) -> ``Event`` objects;
    records that are not valid events go to ``DLQ_TAG`` with the reason and where they came from."""

    def __init__(self, limits: ParseLimits) -> None:
        self._limits = limits

    def open(self, runtime_context: RuntimeContext) -> None:
        self._invalid = runtime_context.get_metrics_group().counter("events_invalid_total")

    def process_element(self, value, ctx: ProcessFunction.Context):
        raw = value[5]
        parsed = parse_event(raw, now_ms=int(time.time() * 1000), limits=self._limits)
        if isinstance(parsed, Invalid):
            self._invalid.inc()
            source = SourceRecord(value[0], value[1], value[2], _epoch_ms(value[3]), value[4])
            key = value[4].decode("utf-8", "replace") if value[4] is not None else None
            yield DLQ_TAG, Row(key, encode_dlq(parsed, raw, source, max_payload_bytes=self._limits.max_bytes))
        else:
            yield parsed


def _epoch_ms(ts: object) -> int | None:
    return ts if isinstance(ts, int) else None


def customer_key(event: Event) -> str:
    return event.customer_id


class _EngineAdapter:
    """What both segment functions share: per-customer state in and out of Flink, timers as the
    engine asks, outputs. ``self._engine`` is the engine in use."""

    _engine: SegmentEngine
    _engine_config: EngineConfig
    _cache_size: int

    def _open_adapter(self, runtime_context: RuntimeContext, rules: RuleSet) -> None:
        self._use_rules(rules)
        self._state = runtime_context.get_state(CUSTOMER_STATE)
        # Decoded states of recently seen customers. Flink state stays the source of truth (it is
        # written on every change, so checkpoints hold it); the cache only saves reading and
        # unpickling it. Valid because this instance is the only writer of its keys, and a
        # restore from a checkpoint creates a new instance (and so an empty cache).
        self._cache: OrderedDict[str, CustomerState] = OrderedDict()
        group = runtime_context.get_metrics_group()
        self._late = group.counter("events_late_total")
        self._duplicates = group.counter("events_duplicate_total")
        self._changes = group.counter("segment_changes_total")

    def _use_rules(self, rules: RuleSet) -> None:
        # Compiled here, not in the client: compiled rules hold closures that need not travel.
        self._engine = SegmentEngine(rules, self._engine_config)
        self._ttl = {s.id: s.ttl for s in rules.segments}

    def _load(self, customer_id: str) -> CustomerState:
        cache = self._cache
        state = cache.get(customer_id)
        if state is not None:
            cache.move_to_end(customer_id)
            return state
        data = self._state.value()
        state = decode_state(data) if data is not None else self._engine.new_state(customer_id)
        cache[customer_id] = state
        if len(cache) > self._cache_size:
            cache.popitem(last=False)
        return state

    def _step(self, item: Event | int, ctx):
        state = self._load(ctx.get_current_key())
        version = state.rule_version
        timers = ctx.timer_service()
        result: StepResult = self._engine.step(state, item, timers.current_watermark())
        for t in result.timers_to_delete:
            timers.delete_event_time_timer(t)
        for t in result.timers_to_register:
            timers.register_event_time_timer(t)
        unchanged = (
            not result.instants
            and not result.changes
            and not result.timers_to_register
            and not result.timers_to_delete
            and version == state.rule_version
            and (not isinstance(item, Event) or result.duplicates)
        )
        # Skipped when the step changed nothing: a duplicate, or a timer whose instant an earlier
        # step at the same watermark already processed.
        if not unchanged:
            self._state.update(encode_state(result.state))
        if result.duplicates:
            self._duplicates.inc(result.duplicates)
        for event in result.late:
            self._late.inc()
            late = encode_late(event, clock=state.clock, allowed_lateness=self._engine_config.allowed_lateness)
            yield LATE_TAG, Row(event.customer_id, late)
        if result.changes:
            self._changes.inc(len(result.changes))
            ttl = self._ttl
            for c in result.changes:
                yield Row(c.customer_id, c.segment_id, c.kind, c.event_time, c.rule_version, c.reason, ttl.get(c.segment_id))


class SegmentFunction(_EngineAdapter, KeyedProcessFunction):
    """Keyed by customer id: one pickled ``CustomerState`` per customer, ``SegmentEngine.step``
    per event and per fired timer (exactly what ``core/runner.py`` simulates). Emits changes as
    ``CHANGE_TYPE`` rows, late events to ``LATE_TAG``. Rules fixed at start."""

    def __init__(self, rules: RuleSet, engine_config: EngineConfig, cache_size: int = 10_000) -> None:
        self._rules = rules
        self._engine_config = engine_config
        self._cache_size = cache_size

    def open(self, runtime_context: RuntimeContext) -> None:
        self._open_adapter(runtime_context, self._rules)

    def process_element(self, value: Event, ctx: KeyedProcessFunction.Context):
        yield from self._step(value, ctx)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext):
        yield from self._step(timestamp, ctx)


class SegmentBroadcastFunction(_EngineAdapter, KeyedBroadcastProcessFunction):
    """``SegmentFunction`` with hot rule reload: the broadcast input carries rule files (name,
    YAML text; None = file deleted) from the rules topic. Once the topic holds any file, exactly
    its files are the rules; a set of files that does not load is rejected (logged, counted) and
    the last good rules stay in use. Customers move to new rules at their next step
    (``SegmentEngine`` reconciles their state without a replay)."""

    def __init__(self, rules: RuleSet, engine_config: EngineConfig, cache_size: int = 10_000) -> None:
        self._rules = rules
        self._engine_config = engine_config
        self._cache_size = cache_size

    def open(self, runtime_context: RuntimeContext) -> None:
        self._open_adapter(runtime_context, self._rules)
        self._active_checked = False
        group = runtime_context.get_metrics_group()
        self._rejected = group.counter("rules_rejected_total")
        self._applied = group.counter("rules_applied_total")

    def process_element(self, value: Event, ctx: KeyedBroadcastProcessFunction.ReadOnlyContext):
        if not self._active_checked:
            self._restore_active(ctx)
        yield from self._step(value, ctx)

    def on_timer(self, timestamp: int, ctx: KeyedBroadcastProcessFunction.OnTimerContext):
        if not self._active_checked:
            self._restore_active(ctx)
        yield from self._step(timestamp, ctx)

    def _restore_active(self, ctx) -> None:
        """After a restore, the rules in use are in broadcast state, not in the instance."""
        self._active_checked = True
        active = ctx.get_broadcast_state(RULE_FILES).get(ACTIVE_RULES)
        if active is not None:
            rules = load_rules_from_texts(json.loads(active))
            if rules.version != self._engine.rule_version:
                self._use_rules(rules)

    def process_broadcast_element(self, value, ctx: KeyedBroadcastProcessFunction.Context):
        name, text = value[0], value[1]
        files = ctx.get_broadcast_state(RULE_FILES)
        if not name or name == ACTIVE_RULES:
            return
        if text is None:
            if files.contains(name):
                files.remove(name)
        else:
            files.put(name, text)
        texts = {k: v for k, v in files.items() if k != ACTIVE_RULES}
        self._active_checked = True
        if not texts:
            # The topic holds no rule file (any more): back to the rules the job started with.
            if files.contains(ACTIVE_RULES):
                files.remove(ACTIVE_RULES)
            self._use_rules(self._rules)
            return
        try:
            rules = load_rules_from_texts(texts)
        except RuleLoadError as exc:
            self._rejected.inc()
            _log.error(
                "rules from the rules topic rejected, still using %s:\n%s", self._engine.rule_version, exc
            )
            return
        files.put(ACTIVE_RULES, json.dumps(texts))
        if rules.version != self._engine.rule_version:
            self._applied.inc()
            _log.info("rules %s in use (%d segments, from the rules topic)", rules.version, len(rules.segments))
            self._use_rules(rules)
        return
        yield


class BroadcastTimeAssigner(TimestampAssigner):
    """Rule records carry no event time. The largest timestamp keeps the rules input from holding
    back the watermark of the connected operator (it takes the minimum of its inputs); idleness
    covers the time before the first rule record."""

    def extract_timestamp(self, value, record_timestamp: int) -> int:
        return MAX_TIMESTAMP - 1
