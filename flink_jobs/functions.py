"""Flink functions of the segmentation job: thin adapters between Flink and the core.

No business logic here: parsing is ``serde.parse_event``, evaluation is ``SegmentEngine.step``;
these classes move records, state, timers and outputs between Flink and those functions. State
descriptors and output tags are declared in this one place.

The segment functions are keyed by *batch key* (see ``batching.py``): each call carries many
source records, or is one event-time timer standing for every customer of the key that is due.
Per customer the engine is driven exactly as the per-event runner in ``core/runner.py`` drives
it; ``step`` does not know it is being called from a batch.
"""

from __future__ import annotations

import heapq
import json
import logging
import random
import time
from typing import Iterator, Sequence

from pyflink.common import Row, Types
from pyflink.common.watermark_strategy import TimestampAssigner
from pyflink.datastream import (
    KeyedBroadcastProcessFunction,
    KeyedProcessFunction,
    OutputTag,
    RuntimeContext,
)
from pyflink.datastream.state import MapStateDescriptor
from pyflink.datastream.time_domain import TimeDomain

from . import beam_sampler, gc_policy, metrics
from .batching import batch_key, decode_batch
from .config import MetricsConfig, RedisConfig
from .core.diagnostics import RuleLoadError
from .core.engine import EngineConfig, SegmentEngine
from .core.loader import load_rules_from_texts
from .core.model import Event, RuleSet
from .core.state import NEVER, CustomerState, decode_state, encode_state
from .serde import Invalid, ParseLimits, SourceRecord, encode_change, encode_dlq, encode_late, parse_event
from .sinks.kafka import KEY_VALUE_TYPE
from .sinks.redis import RedisMembershipWriter
from .state_cache import StateCache

_log = logging.getLogger("flink_jobs.functions")

# A batch as the JVM batcher sends it: (batch key, records, the batcher's watermark; see
# batching.decode_batch and jvm/KeyGroupBatcher.java). Records b"": a sync marker (write the
# key's changed states, then the held changes; before every checkpoint barrier). Records null:
# an end marker (a release is complete: write the held changes). The records travel as bytes:
# in thread mode a byte[] reaches Python as bytes, where a String is converted to text first.
BATCH_TYPE = Types.ROW([Types.INT(), Types.PRIMITIVE_ARRAY(Types.BYTE()), Types.LONG()])
# Under each batch key: customer id -> core.state.encode_state bytes. Not PRIMITIVE_ARRAY(BYTE):
# thread mode converts those byte by byte through a Python tuple.
CUSTOMERS = MapStateDescriptor("customers", Types.STRING(), Types.PICKLED_BYTE_ARRAY())
# Rule files from the rules topic (file name -> YAML text), and under ACTIVE_RULES the JSON of
# the files whose rules are in use (the last set that loaded), for restores.
RULE_FILES = MapStateDescriptor("rule_files", Types.STRING(), Types.STRING())
ACTIVE_RULES = "\u0000active"
MAX_TIMESTAMP = 2**63 - 1
# A watermark further than this behind the wall clock means the job is catching up (a backlog,
# a replay, old event times): changed states then wait for the checkpoint (see _finish), and the
# JVM batcher, which is given this bound, applies watermarks at most every
# job.catch_up_release_interval.
CATCH_UP_LAG = 60_000
# Membership changes are held and written to Redis (then emitted to Kafka) for many calls at
# once. Live, the changes of batches wait for the batcher's end marker, which follows each
# release of batches: one pipeline per release instead of one per batch key (at 6,000 events/s
# 18% of the workers' wall time went to per-call pipelines). Catching up, they wait at most this
# long or for this many changes; and always for a sync marker (so before every checkpoint
# barrier). Per-call Redis pipelines were an eighth of the catch-up CPU.
HOLD_SECONDS = 1.0
HOLD_CHANGES = 5_000
DLQ_TAG = OutputTag("invalid-events", KEY_VALUE_TYPE)
LATE_TAG = OutputTag("late-events", KEY_VALUE_TYPE)


class _DueIndex:
    """Customers of one batch key that wait for an instant (buffered events, window exits,
    deadlines): customer -> earliest such instant, with a heap to find who is due. One Flink
    timer per batch key stands for all of them."""

    __slots__ = ("due", "_heap")

    def __init__(self) -> None:
        self.due: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []

    def set(self, customer_id: str, at: int | None) -> None:
        if self.due.get(customer_id) == at:
            return
        if at is None:
            del self.due[customer_id]
            return
        self.due[customer_id] = at
        heapq.heappush(self._heap, (at, customer_id))
        if len(self._heap) > 2 * len(self.due) + 64:
            self._heap = [(t, c) for c, t in self.due.items()]
            heapq.heapify(self._heap)

    def pop_due(self, watermark: int) -> list[str]:
        """Customers whose instant is <= watermark, earliest first; they leave the index."""
        heap, due, out = self._heap, self.due, []
        while heap and heap[0][0] <= watermark:
            at, customer_id = heapq.heappop(heap)
            if due.get(customer_id) == at:
                del due[customer_id]
                out.append(customer_id)
        return out

    def earliest(self) -> int | None:
        heap, due = self._heap, self.due
        while heap and due.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None


def _next_instant(state: CustomerState) -> int | None:
    return min(state.timers) if state.timers else None


class _BatchEngine:
    """What both segment functions share: batches and timers in, per-customer engine steps,
    state in a map under the batch key, one Redis pipeline and the Kafka records out per call."""

    _engine: SegmentEngine

    def __init__(
        self,
        rules: RuleSet,
        engine_config: EngineConfig,
        *,
        limits: ParseLimits,
        redis: RedisConfig,
        batch_keys: int,
        placed_keys: Sequence[int],
        source_topic: str,
        metrics_config: MetricsConfig,
        models: bool = False,
        model_artifacts: str = "",
        cache_memory: int = 768 * 1024 * 1024,
        write_behind: int = 1_000,
        dirty_limit: int = 256_000,
        full_gc_interval: int = 3_600_000,
    ) -> None:
        self._rules = rules
        self._engine_config = engine_config
        self._limits = limits
        self._redis_config = redis
        self._batch_keys = batch_keys
        # The Flink key of each batch key (sources.placed_keys): a timer knows only the Flink key.
        self._batch_key_of = {value: key for key, value in enumerate(placed_keys)}
        self._source_topic = source_topic
        self._cache_memory = cache_memory
        # Changed states held in memory for all batch keys, spread evenly: a key writes its own
        # when it holds its share. A bound per key of its own (2,000 when 128 keys were the
        # default) would write ever more often with fewer, bigger keys: with 32 keys, catching
        # up over 100k customers, each wrote its 2,000 every few seconds instead of once per
        # checkpoint (12,115 events/s against 16,309 with 128).
        self._dirty_limit = max(1, dirty_limit // batch_keys)
        self._write_behind = write_behind / 1000
        self._metrics_config = metrics_config
        self._models = models
        self._model_artifacts = model_artifacts
        self._full_gc_interval = full_gc_interval

    # ---- set-up ------------------------------------------------------------------------------

    def _open_engine(self, runtime_context: RuntimeContext) -> None:
        metrics.start_exporter(self._metrics_config)
        self._m = metrics.job_metrics()
        # The state cache would make Python's full collections pause every call (see gc_policy).
        self._gc = gc_policy.install(self._full_gc_interval / 1000, observer=self._m.observe_gc_pause)
        beam_sampler.install()  # process mode: no sampler thread started and joined per bundle
        self._scorer = _ObservedScorer.load(self._model_artifacts, self._m) if self._models else None
        self._use_rules(self._rules)
        self._customers = runtime_context.get_map_state(CUSTOMERS)
        # Decoded states of recently seen customers: saves reading and decoding (see state_cache).
        self._cache = StateCache(self._cache_memory)
        # The cache's size and memory last reported to the metrics (one update per call).
        self._cache_reported = (0, 0)
        # Per batch key: states changed since they were last written to Flink state, and when to
        # write them. Encoding one costs 20-30 µs, so a state is written once for all its changes
        # within job.state_write_behind of its key's first change, or when a key holds
        # its share of dirty_limit, or when the batcher's sync marker arrives (before every
        # checkpoint barrier and at end of input: see KeyGroupBatcher.java). What is left for the
        # marker, which every event in flight waits for, is what changed in the last
        # write_behind: measured at 1,200 events/s, 30 s checkpoints, thread mode, writing only
        # at the marker paused the job 0.3-0.7 s per checkpoint. Only while live, though: while
        # the job catches up (watermark over CATCH_UP_LAG behind the clock) states wait for the
        # marker, as a 1 s write-behind cost 12-31% of the catch-up throughput.
        # Each key is written at a random point between half and all of write_behind after its
        # first change: with one delay for all, the keys a watermark's release changed came due
        # together and were written in one later release, every 1.2 s (thread mode, parallelism
        # 1, 6,750 events/s: those releases took 80-200 ms against 32 ms, and the events behind
        # them waited; p99 latency followed).
        self._dirty: dict[int, dict[str, CustomerState]] = {}
        self._sync_at: dict[int, float] = {}
        # Per batch key: who is due when (rebuilt from the map on a key's first call), the timer
        # known to be registered, and whether its customers are on the current rules.
        self._due: dict[int, _DueIndex] = {}
        # Per batch key: the customers its map holds (read on the key's first call, then kept by
        # _sync: this instance is the map's only writer). A customer not in it is new, which
        # _load then knows without a state read: in process mode a read that misses PyFlink's
        # cache waits for a round trip to the JVM (measured live at 6,000 events/s with 16
        # batch keys: 43% of the workers' time was spent waiting on such reads).
        self._stored: dict[int, set[str]] = {}
        self._armed: dict[int, int] = {}
        self._current: set[int] = set()
        c = self._redis_config
        self._redis = RedisMembershipWriter(c.url, c.key_prefix, c.default_ttl)
        self._held = _Held()
        # A processing-time timer is armed while changes are held: it flushes them should no
        # call come (a quiet source, checkpoints off).
        self._hold_timer = False

    def close(self) -> None:
        if hasattr(self, "_cache"):
            # The lookups not reported yet, and this instance's states off the process's gauges
            # (the process may host a next instance).
            self._cache.clear()
            self._report_cache()
        redis = getattr(self, "_redis", None)
        if redis is not None:
            redis.close()

    def _use_rules(self, rules: RuleSet) -> None:
        # Compiled here, not in the client: compiled rules hold closures that need not travel.
        self._engine = SegmentEngine(rules, self._engine_config, scorer=self._scorer)
        self._ttl = {s.id: s.ttl for s in rules.segments}
        self._m.rules_loaded(rules.version, len(rules.segments))
        # Every batch key moves its customers to the new rules on its next call.
        self._current = set()

    # ---- per call ----------------------------------------------------------------------------

    def _batch(self, value: Row, ctx) -> Iterator:
        key: int = value[0]
        self._gc.tick()
        if value[1] is None:
            if self._held.at_end:
                yield from self._flush()
            return
        if not value[1]:
            self._sync(key)
            yield from self._flush()
            return
        timers = ctx.timer_service()
        # The batcher's watermark: every event of this batch key up to it has arrived (the
        # batcher sends the batch just before it forwards that watermark to this function).
        watermark = max(timers.current_watermark(), value[2])
        call = self._prepare(key, watermark)
        now_ms = int(time.time() * 1000)
        limits, batch_keys = self._limits, self._batch_keys
        records = decode_batch(value[1])
        m = self._m
        m.events_received(len(records))
        valid = 0
        events: dict[str, list[Event]] = {}
        for record in records:
            parsed = parse_event(record.value, now_ms=now_ms, limits=limits, ingest_ms=record.timestamp)
            if not isinstance(parsed, Invalid) and batch_key(parsed.customer_id, batch_keys) != key:
                parsed = Invalid(
                    "routing",
                    "customer_id could not be read the same way by the JVM (jvm/EventKeys.java) and by the parser; "
                    "check the record for duplicate 'customer_id' keys",
                )
            if isinstance(parsed, Invalid):
                yield self._dead_letter(parsed, record)
                continue
            valid += 1
            mine = events.get(parsed.customer_id)
            if mine is None:
                events[parsed.customer_id] = [parsed]
            else:
                mine.append(parsed)
        m.events_valid(valid)
        # A customer's events of the batch are taken in together, then its instants up to the
        # watermark are processed; the model scoring of all of them goes out in batches.
        work = []
        for customer_id, mine in events.items():
            state = call.states.get(customer_id) or self._load(customer_id, key)
            call.note_ingest(state, watermark, mine)
            work.append((state, mine[0] if len(mine) == 1 else mine))
        for (state, item), result in zip(work, self._engine.step_many(work, watermark)):
            given = 1 if type(item) is Event else len(item)
            if result.duplicates == given and not result.instants:  # nothing but duplicates: unchanged
                call.duplicates += result.duplicates
                continue
            call.take(state, result)
        yield from self._finish(key, call, timers, watermark, end_follows=True)

    def _timer(self, ctx) -> Iterator:
        if ctx.time_domain() == TimeDomain.PROCESSING_TIME:
            self._hold_timer = False
            yield from self._flush()
            return
        key: int = self._batch_key_of[ctx.get_current_key()]
        self._gc.tick()
        timers = ctx.timer_service()
        watermark = timers.current_watermark()
        if self._armed.get(key, MAX_TIMESTAMP) <= watermark:
            # Not there when an earlier timer already took it, and the final watermark (the
            # largest timestamp) fires an older one.
            self._armed.pop(key, None)
        call = self._prepare(key, watermark)
        engine = self._engine
        due = call.index.pop_due(watermark)
        work = []
        for customer_id in due:
            state = call.states.get(customer_id) or self._load(customer_id, key)
            call.note_ingest(state, watermark)
            work.append((state, None))
        # Side by side: the model scoring of all these customers goes out in batches.
        for (state, _), result in zip(work, engine.step_many(work, watermark)):
            call.take(state, result)
        self._m.timers_fired(len(due))
        yield from self._finish(key, call, timers, watermark)

    def _prepare(self, key: int, watermark: int) -> "_Call":
        """A call's collector. On a batch key's first call in this instance (start, restore,
        rescale) the due index is rebuilt from the map; on its first call under new rules every
        customer still on older rules is stepped, so a rule change also reaches customers who
        send nothing new."""
        index = self._due.get(key)
        if index is not None and key in self._current:
            return _Call(index)
        fresh = index is None
        if fresh:
            index = self._due[key] = _DueIndex()
            stored = self._stored[key] = set()
        call = _Call(index)
        self._current.add(key)
        engine = self._engine
        version = engine.state_version
        cache = self._cache
        dirty = self._dirty.get(key, {})
        entries = ((c, d) for c, d in self._customers.items() if c not in dirty)
        behind = []
        for customer_id, data in [*((c, None) for c in dirty), *entries]:
            state = dirty.get(customer_id) or cache.peek(customer_id) or decode_state(data)
            if fresh and data is not None:
                stored.add(customer_id)
            if state.rule_version != version:
                behind.append((state, None))
            elif fresh:
                index.set(customer_id, _next_instant(state))
        # Brought up to the rules at their own clock, not advanced: this call's records (event
        # times up to the watermark) must find them before those instants, or they would be
        # taken as late (a cart add then starts no deadline). _finish advances them.
        for (state, _), result in zip(behind, engine.step_many(behind, NEVER)):
            call.take(state, result)
        call.behind = [state for state, _ in behind]
        return call

    def _finish(self, key: int, call: "_Call", timers, watermark: int, end_follows: bool = False) -> Iterator:
        if call.behind:
            # The call's records are in: every event of this batch key up to the watermark has
            # arrived, so the customers reconciled in _prepare advance to it (those with records
            # in this call are there already; for them this step does nothing).
            work = [(state, None) for state in call.behind]
            for state in call.behind:
                call.note_ingest(state, watermark)
            for (state, _), result in zip(work, self._engine.step_many(work, watermark)):
                call.take(state, result)
        index = call.index
        dirty = self._dirty.setdefault(key, {})
        for customer_id in call.dirty:
            state = call.states[customer_id]
            dirty[customer_id] = state
            index.set(customer_id, _next_instant(state))
        wall = time.time()
        live = wall * 1000 - watermark < CATCH_UP_LAG
        if dirty:
            now = time.monotonic()
            due = self._sync_at.get(key)
            if due is None:
                due = self._sync_at[key] = now + self._write_behind * random.uniform(0.5, 1.0)
            if len(dirty) > self._dirty_limit:
                self._sync(key)
            elif now >= due and live:
                # Live (the watermark near the wall clock): keep the checkpoint's share small.
                # Catching up, nobody waits on a checkpoint pause, and states coalesce.
                self._sync(key)
        earliest = index.earliest()
        if earliest is not None and earliest < self._armed.get(key, MAX_TIMESTAMP):
            # Earlier timers are not deleted: one firing with nobody due costs less than a delete.
            timers.register_event_time_timer(earliest)
            self._armed[key] = earliest
        self._report_cache()
        m = self._m
        if call.late:
            m.events_late(len(call.late))
            allowed = self._engine_config.allowed_lateness
            for event in call.late:
                late = encode_late(event, clock=call.states[event.customer_id].clock, allowed_lateness=allowed)
                yield LATE_TAG, Row(event.customer_id, late)
        if call.duplicates:
            m.events_duplicate(call.duplicates)
        if call.late_applied:
            m.events_late_applied(call.late_applied)
        if call.forced:
            m.forced_instants(call.forced)
        if call.changes:
            held = self._held
            held.take(call)
            if len(held.changes) >= HOLD_CHANGES or time.monotonic() - held.since >= HOLD_SECONDS:
                yield from self._flush()
            elif live and not end_follows:
                # A timer: the end marker that follows its watermark may have come already.
                yield from self._flush()
            else:
                held.at_end = held.at_end or live
            if self._held.changes and not self._hold_timer:
                timers.register_processing_time_timer(int(wall * 1000) + int(HOLD_SECONDS * 1000))
                self._hold_timer = True

    def _flush(self) -> Iterator:
        """Write the held changes to Redis, then emit their Kafka records: a change on the topic
        is already in Redis."""
        held = self._held
        if held.changes:
            self._held = _Held()
            self._write_redis(held)
            yield from held.rows

    def _write_redis(self, held: "_Held") -> None:
        ttl, m, changes = self._ttl, self._m, held.changes
        start = time.perf_counter()
        try:
            applied = self._redis.write(
                [(c.customer_id, c.segment_id, c.kind, c.event_time, ttl.get(c.segment_id)) for c in changes]
            )
        except Exception as exc:
            # The job fails and restarts from its last checkpoint; the writes are idempotent.
            m.redis_error(metrics.redis_error_kind(exc))
            raise
        done = time.perf_counter()
        m.observe_redis_write(done - start, applied, len(changes) - applied)
        now_ms = time.time() * 1000
        ingest = held.ingest
        m.observe_latencies(
            [(now_ms - c.event_time) / 1000 for c in changes],
            [(now_ms - ingest[(c.customer_id, c.event_time)]) / 1000 for c in changes if (c.customer_id, c.event_time) in ingest],
        )
        m.changes((c.segment_id, c.kind) for c in changes)

    def _dead_letter(self, invalid: Invalid, record) -> tuple:
        self._m.events_invalid(invalid.code)
        raw = record.value.encode("utf-8") if isinstance(record.value, str) else record.value
        key = record.key.encode("utf-8") if isinstance(record.key, str) else record.key
        source = SourceRecord(self._source_topic, record.partition, record.offset, record.timestamp, key)
        text_key = key.decode("utf-8", "replace") if key is not None else None
        return DLQ_TAG, Row(text_key, encode_dlq(invalid, raw, source, max_payload_bytes=self._limits.max_bytes))

    # ---- state -------------------------------------------------------------------------------

    def _sync(self, key: int) -> None:
        """Write the key's changed states to Flink state (the current key must be ``key``)."""
        dirty = self._dirty.pop(key, None)
        self._sync_at.pop(key, None)
        if dirty:
            # One put per customer: PyFlink 2.2's put_all iterates the dict's keys as pairs in
            # process mode (ValueError), and saved nothing measurable in thread mode.
            customers = self._customers
            for customer_id, state in dirty.items():
                customers.put(customer_id, encode_state(state))
            self._stored[key].update(dirty)

    def _load(self, customer_id: str, key: int) -> CustomerState:
        cache = self._cache
        state = cache.get(customer_id)
        if state is not None:
            return state
        dirty = self._dirty.get(key)
        state = dirty.get(customer_id) if dirty else None
        if state is not None:  # evicted, but not written yet: still decoded
            cache.hit()
            return state
        data = self._customers.get(customer_id) if customer_id in self._stored[key] else None
        if data is None:
            state = self._engine.new_state(customer_id)
        else:
            state = decode_state(data)
            self._gc.long_lived()  # a cached state, or soon dirty: not for the young collections
        cache.add(customer_id, state, new=data is None)
        return state

    def _report_cache(self) -> None:
        """The state cache metrics: the lookups since the last report, and the size changes."""
        cache = self._cache
        size, memory = len(cache), cache.bytes
        if cache.hits or cache.misses or cache.new or (size, memory) != self._cache_reported:
            last_size, last_memory = self._cache_reported
            self._m.state_cache(cache.hits, cache.misses, cache.new, cache.evictions, size - last_size, memory - last_memory)
            cache.hits = cache.misses = cache.new = cache.evictions = 0
            self._cache_reported = (size, memory)


class _Call:
    """What one call collects: the customers it changed and their outputs, in order."""

    __slots__ = ("index", "states", "dirty", "changes", "late", "duplicates", "late_applied", "forced", "ingest", "behind")

    def __init__(self, index: _DueIndex) -> None:
        self.index = index
        self.states: dict[str, CustomerState] = {}
        self.dirty: set[str] = set()
        self.changes: list = []
        self.late: list[Event] = []
        self.duplicates = 0
        self.late_applied = 0
        self.forced = 0
        # (customer, instant) -> latest ingestion time of the events applied at that instant
        self.ingest: dict[tuple[str, int], int] = {}
        # customers brought up to new rules at their own clock (_prepare), to advance in _finish
        self.behind: list[CustomerState] = []

    def note_ingest(self, state: CustomerState, watermark: int, events: list[Event] = ()) -> None:
        """Before a step: remember when the events it will apply (buffered, or given) were ingested."""
        ingest = self.ingest
        for event in state.buffer:  # sorted by time; live nearly always empty (the JVM holds events)
            if event.event_time > watermark:
                break
            _note_ingest(ingest, event)
        for event in events:
            if event.event_time <= watermark:
                _note_ingest(ingest, event)

    def take(self, state: CustomerState, result) -> None:
        self.states[state.customer_id] = state
        self.dirty.add(state.customer_id)
        if result.changes:
            self.changes.extend(result.changes)
        if result.late:
            self.late.extend(result.late)
        self.duplicates += result.duplicates
        self.late_applied += result.late_applied
        self.forced += result.forced


def _note_ingest(ingest: dict[tuple[str, int], int], event: Event) -> None:
    """Keep the latest ingestion time of the events of a (customer, instant)."""
    k = (event.customer_id, event.event_time)
    ingested = event.ingest_time
    if ingested is not None and ingested > ingest.get(k, 0):
        ingest[k] = ingested


class _Held:
    """Changes waiting for Redis, their Kafka records, and what the latency metric needs."""

    __slots__ = ("changes", "rows", "ingest", "since", "at_end")

    def __init__(self) -> None:
        self.changes: list = []
        self.rows: list[Row] = []
        self.ingest: dict[tuple[str, int], int] = {}
        self.since = 0.0
        self.at_end = False  # written at the batcher's next end marker (live), not after a while

    def take(self, call: _Call) -> None:
        if not self.changes:
            self.since = time.monotonic()
        states = call.states
        self.changes.extend(call.changes)
        self.rows.extend(Row(c.customer_id, encode_change(c, states[c.customer_id].scores)) for c in call.changes)
        ingest = self.ingest
        for k, t in call.ingest.items():
            if t > ingest.get(k, 0):
                ingest[k] = t


class _ObservedScorer:
    """The ONNX scorer as the engine sees it, feeding the model metrics: inference time and
    scores (through the scorer's observer), and input drift (PSI against each model card's
    reference) over a sample of the feature vectors scored."""

    PSI_EVERY = 10.0  # seconds between PSI updates
    SAMPLE = 8  # one feature vector in SAMPLE goes into the drift window

    def __init__(self, scorer, drift, m: metrics.JobMetrics) -> None:
        self._scorer, self._drift, self._m = scorer, drift, m
        self.names = scorer.names
        self._n = 0
        self._next_psi = time.monotonic() + self.PSI_EVERY

    @classmethod
    def load(cls, artifacts: str, m: metrics.JobMetrics) -> "_ObservedScorer":
        from .ml.drift import DriftMonitor  # onnxruntime only where models are on
        from .ml.serving import OnnxScorer

        def observe(model: str, seconds: float, scores) -> None:
            m.observe_inference(model, (seconds,))
            m.observe_scores(model, scores)

        scorer = OnnxScorer(artifacts or None, observer=observe)
        return cls(scorer, DriftMonitor(scorer.cards.values()), m)

    def score(self, customer_id: str, features):
        return self.score_batch([features])[0]

    def _update_psi(self) -> None:
        if time.monotonic() >= self._next_psi:
            self._next_psi = time.monotonic() + self.PSI_EVERY
            for model, psi in self._drift.psi_by_model().items():
                self._m.set_feature_psi(model, psi)

    def score_batch(self, rows):
        """Scores for many feature mappings, in one inference call per model."""
        # The same one-in-SAMPLE as score(), counted across calls (batches are often small).
        first = -self._n % self.SAMPLE
        for features in rows[first :: self.SAMPLE]:
            self._drift.observe(features)
        self._n += len(rows)
        if first < len(rows):
            self._update_psi()
        return self._scorer.score_batch(rows)


class SegmentFunction(_BatchEngine, KeyedProcessFunction):
    """Keyed by batch key: batches of source records in, membership changes out (Kafka records
    of ``KEY_VALUE_TYPE``; Redis written first), invalid records to ``DLQ_TAG``, late
    events to ``LATE_TAG``. Rules fixed at start."""

    def open(self, runtime_context: RuntimeContext) -> None:
        self._open_engine(runtime_context)

    def process_element(self, value, ctx: KeyedProcessFunction.Context):
        yield from self._batch(value, ctx)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext):
        yield from self._timer(ctx)


class SegmentBroadcastFunction(_BatchEngine, KeyedBroadcastProcessFunction):
    """``SegmentFunction`` with hot rule reload: the broadcast input carries rule files (name,
    YAML text; None = file deleted) from the rules topic. Once the topic holds any file, exactly
    its files are the rules; a set of files that does not load is rejected (logged, counted) and
    the last good rules stay in use. Each batch key moves all its customers to new rules on its
    next call (``SegmentEngine`` reconciles a state without a replay)."""

    def open(self, runtime_context: RuntimeContext) -> None:
        self._open_engine(runtime_context)
        self._active_checked = False

    def process_element(self, value, ctx: KeyedBroadcastProcessFunction.ReadOnlyContext):
        if not self._active_checked:
            self._restore_active(ctx)
        yield from self._batch(value, ctx)

    def on_timer(self, timestamp: int, ctx: KeyedBroadcastProcessFunction.OnTimerContext):
        if not self._active_checked:
            self._restore_active(ctx)
        yield from self._timer(ctx)

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
            if self._engine.rule_version != self._rules.version:
                self._use_rules(self._rules)
            return
        try:
            rules = load_rules_from_texts(texts)
        except RuleLoadError as exc:
            self._m.rules_rejected()
            _log.error(
                "rules from the rules topic rejected, still using %s:\n%s", self._engine.rule_version, exc
            )
            return
        files.put(ACTIVE_RULES, json.dumps(texts))
        if rules.version != self._engine.rule_version:
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


__all__ = [
    "ACTIVE_RULES",
    "BATCH_TYPE",
    "CUSTOMERS",
    "DLQ_TAG",
    "LATE_TAG",
    "RULE_FILES",
    "BroadcastTimeAssigner",
    "SegmentBroadcastFunction",
    "SegmentFunction",
]
