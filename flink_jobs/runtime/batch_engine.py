"""The segment function's work, without Flink: batches of source records and timers in,
per-customer engine steps, customer states kept under their batch key, membership changes out to
Redis and as Kafka records.

The job keys the segment function by *batch key* (``batching.py``): each call carries many source
records of one batch key, or is one event-time timer standing for every customer of the key that
is due. Per customer the engine is driven exactly as the per-event runner in ``core/runner.py``
drives it; ``SegmentEngine.step`` does not know it is called from a batch. This module holds the
policies around it: when a changed state is written back (write-behind), when changes are written
to Redis (held for a release), how customers move to new rules, and which rule files are the
rules (``rule_files``). The Flink functions (``flink/functions.py``) only hand it Flink's state,
timers and records, and emit what it returns; unit tests hand it dicts and a fake timer service.
"""

from __future__ import annotations

import heapq
import json
import logging
import random
import time
from typing import Callable, Iterable, Iterator, Mapping, Protocol, Sequence

from ..core.diagnostics import RuleLoadError
from ..core.engine import EngineConfig, SegmentEngine, StepResult
from ..core.model import Change, Event, RuleSet
from ..core.scoring import Scorer
from ..core.state import NEVER, CustomerState, decode_state, encode_state
from . import gc_policy
from .batching import BatchRecord, batch_key, decode_batch
from .metrics import JobMetrics, MetricsConfig, job_metrics, redis_error_kind, start_exporter
from .redis_writer import MembershipWriter, RedisConfig, RedisMembershipWriter
from .rule_files import (
    RULE_SET_KEY,
    RuleFileStore,
    active_rules,
    is_model_key,
    is_rule_file,
    take_rule_file,
    take_rule_set,
)
from .serde import (
    EventSchema,
    Invalid,
    ParseLimits,
    SourceRecord,
    encode_change,
    encode_dlq,
    encode_late,
    gate_spec_data,
    parse_event,
)
from .state_cache import StateCache

_log = logging.getLogger(__name__)

MAX_TIMESTAMP = 2**63 - 1  # Java's Long.MAX_VALUE: Flink's end of time
# A watermark further than this behind the wall clock means the job is catching up (a backlog,
# a replay, old event times): changed states then wait for the checkpoint (see _finish), and the
# JVM batcher, which is given this bound, applies watermarks at most every
# job.catch_up_release_interval.
CATCH_UP_LAG = 60_000
# Membership changes are held and written to Redis (then emitted to Kafka) for many calls at
# once: live, until the batcher's end marker that follows each release of batches (one pipeline
# per release, not per batch key); catching up, at most this long or this many changes; always
# until a sync marker (so before every checkpoint barrier). Per-call pipelines were a large share
# of the workers' time (bench/HISTORY.md, "Figures the code's comments carried").
HOLD_SECONDS = 1.0
HOLD_CHANGES = 5_000

# Side outputs: invalid records (the dead-letter topic), events beyond the allowed lateness, and
# the catalogue in use announced to the sources' event gate (the rules status topic).
DLQ = "dlq"
LATE = "late"
GATE = "gate"
# What the engine emits: (side output or None for a membership change, record key, record value).
Output = tuple["str | None", "str | None", str]


class CustomerStore(Protocol):
    """Customer id -> encoded state, under the current batch key (Flink's keyed ``MapState``)."""

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, value: bytes) -> None: ...

    def items(self) -> Iterable[tuple[str, bytes]]: ...


class Timers(Protocol):
    """The current key's timer service (Flink's ``TimerService``)."""

    def current_watermark(self) -> int: ...

    def register_event_time_timer(self, timestamp: int) -> None: ...

    def register_processing_time_timer(self, timestamp: int) -> None: ...


class LiveScorer(Scorer, Protocol):
    """The models as the batch engine runs them (``ml.observed.ObservedScorer``): scores, the
    versions in use, and models published on the rules topic (``ml/published.py``)."""

    @property
    def versions(self) -> Mapping[str, str]: ...

    def take_record(self, key: str, text: str | None, known_scores: Sequence[str]) -> str:
        """Use the published model (``text`` None: stop using it); what was done, for the status
        topic. ``ValueError`` saying why when it is rejected: the models in use stay."""
        ...


# Loads the model scorer in the worker, given the metrics it reports to (``ml.observed``).
ScorerLoader = Callable[[JobMetrics], LiveScorer]


class DueIndex:
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


class Call:
    """What one call collects: the customers it changed and their outputs, in order."""

    __slots__ = ("index", "states", "dirty", "changes", "late", "duplicates", "late_applied", "forced", "ingest", "behind")

    def __init__(self, index: DueIndex) -> None:
        self.index = index
        self.states: dict[str, CustomerState] = {}
        self.dirty: set[str] = set()
        self.changes: list[Change] = []
        self.late: list[Event] = []
        self.duplicates = 0
        self.late_applied = 0
        self.forced = 0
        # (customer, instant) -> latest ingestion time of the events applied at that instant
        self.ingest: dict[tuple[str, int], int] = {}
        # customers brought up to new rules at their own clock (_prepare), to advance in _finish
        self.behind: list[CustomerState] = []

    def note_ingest(self, state: CustomerState, watermark: int, events: Sequence[Event] = ()) -> None:
        """Before a step: remember when the events it will apply (buffered, or given) were ingested."""
        ingest = self.ingest
        for event in state.buffer:  # sorted by time; live nearly always empty (the JVM holds events)
            if event.event_time > watermark:
                break
            _note_ingest(ingest, event)
        for event in events:
            if event.event_time <= watermark:
                _note_ingest(ingest, event)

    def take(self, state: CustomerState, result: StepResult) -> None:
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


class Held:
    """Changes waiting for Redis, their Kafka records, and what the latency metric needs."""

    __slots__ = ("changes", "records", "ingest", "since", "at_end", "model_versions")

    def __init__(self, model_versions: Mapping[str, str] | None = None) -> None:
        # The versions of the models scoring now: a change record with scores names them.
        self.model_versions = model_versions
        self.changes: list[Change] = []
        self.records: list[tuple[str, str]] = []  # (key, value) of each change's Kafka record
        self.ingest: dict[tuple[str, int], int] = {}
        self.since = 0.0
        self.at_end = False  # written at the batcher's next end marker (live), not after a while

    def take(self, call: Call) -> None:
        if not self.changes:
            self.since = time.monotonic()
        self.changes.extend(call.changes)
        versions = self.model_versions
        self.records.extend((c.customer_id, encode_change(c, versions)) for c in call.changes)
        ingest = self.ingest
        for k, t in call.ingest.items():
            if t > ingest.get(k, 0):
                ingest[k] = t


class BatchEngine:
    """Batches and timers of batch keys in, per-customer engine steps, state in a store under the
    batch key, one Redis pipeline and the Kafka records out per release. Built where the job is
    built (it travels to the workers with the Flink function); ``open`` in the worker."""

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
        scorer: ScorerLoader | None = None,
        cache_memory: int = 768 * 1024 * 1024,
        write_behind: int = 1_000,
        dirty_limit: int = 256_000,
        full_gc_interval: int = 3_600_000,
        gate_key: str | None = None,
    ) -> None:
        self._rules = rules
        # Where the sources' event gate follows the catalogue in use (flink/jvm/GateFollower.java);
        # None: it cannot change (no hot reload).
        self._gate_key = gate_key
        self._engine_config = engine_config
        self._limits = limits
        self._redis_config = redis
        self._batch_keys = batch_keys
        # The Flink key of each batch key (flink.batcher.placed_keys): a timer knows only the Flink key.
        self._batch_key_of = {value: key for key, value in enumerate(placed_keys)}
        self._source_topic = source_topic
        self._cache_memory = cache_memory
        # Changed states held in memory for all batch keys, spread evenly: a key writes its own
        # when it holds its share (a fixed bound per key would write ever more often with fewer,
        # bigger keys; bench/HISTORY.md, "Figures the code's comments carried").
        self._dirty_limit = max(1, dirty_limit // batch_keys)
        self._write_behind = write_behind / 1000
        self._metrics_config = metrics_config
        self._scorer_loader = scorer
        self._full_gc_interval = full_gc_interval

    # ---- set-up ------------------------------------------------------------------------------

    def open(self, *, metrics: JobMetrics | None = None, writer: MembershipWriter | None = None) -> None:
        """Start in the worker: metrics, the GC policy, the scorer, the state cache and the Redis
        writer (``metrics`` and ``writer`` replace the process's metrics and Redis in tests)."""
        if metrics is None:
            start_exporter(self._metrics_config)
            metrics = job_metrics()
        self._m = metrics
        # The state cache would make Python's full collections pause every call (see gc_policy).
        self._gc = gc_policy.install(self._full_gc_interval / 1000, observer=self._m.observe_gc_pause)
        self._scorer = self._scorer_loader(self._m) if self._scorer_loader is not None else None
        self._schema = EventSchema(self._rules.catalog)
        self._announce = False
        # Status records for the status topic (published models accepted or rejected).
        self._status: list[Output] = []
        self._held = Held()
        self._models_restored = False
        self._active: dict[str, object] = {}  # the publication of the rules in use, if known
        self._models_changed()
        self.use_rules(self._rules)
        self._rule_status("running", {})  # what it starts with (a restore announces again if it differs)
        # Decoded states of recently seen customers: saves reading and decoding (see state_cache).
        self._cache = StateCache(self._cache_memory)
        # The cache's size and memory last reported to the metrics (one update per call).
        self._cache_reported = (0, 0)
        # Per batch key: states changed since they were last written to the store, and when to
        # write them. A state is encoded once for all its changes within job.state_write_behind
        # of its key's first change, or when a key holds its share of dirty_limit, or at the
        # batcher's sync marker (before every checkpoint barrier and at end of input: see
        # KeyGroupBatcher.java), which every event in flight waits for; so live, the marker finds
        # little left to write. Catching up (watermark over CATCH_UP_LAG behind the clock), states
        # wait for the marker. Each key is written at a random point between half and all of
        # write_behind after its first change, so that the keys one release changed do not all
        # come due in one later release. Why each: bench/HISTORY.md, "Figures the code's comments carried".
        self._dirty: dict[int, dict[str, CustomerState]] = {}
        self._sync_at: dict[int, float] = {}
        # Per batch key: who is due when (rebuilt from the store on a key's first call), the timer
        # known to be registered, and whether its customers are on the current rules.
        self._due: dict[int, DueIndex] = {}
        # Per batch key: the customers its store holds (read on the key's first call, then kept by
        # _sync: this instance is the store's only writer). A customer not in it is new, which
        # _load then knows without a read (in process mode a read that misses PyFlink's cache
        # waits for a round trip to the JVM).
        self._stored: dict[int, set[str]] = {}
        self._armed: dict[int, int] = {}
        self._current: set[int] = set()
        self._redis = writer if writer is not None else RedisMembershipWriter.from_config(self._redis_config)
        # A processing-time timer is armed while changes are held: it flushes them should no
        # call come (a quiet source, checkpoints off).
        self._hold_timer = False
        self._rules_restored = False

    def close(self) -> None:
        if hasattr(self, "_cache"):
            # The lookups not reported yet, and this instance's states off the process's gauges
            # (the process may host a next instance).
            self._cache.clear()
            self._report_cache()
        redis = getattr(self, "_redis", None)
        if redis is not None:
            redis.close()

    @property
    def rule_version(self) -> str:
        """The version of the rules in use."""
        return self._engine.rule_version

    def use_rules(self, rules: RuleSet) -> None:
        """Evaluate ``rules`` from now on (compiled here, in the worker)."""
        self._engine = SegmentEngine(rules, self._engine_config, scorer=self._scorer)
        if self._schema.catalog.version != rules.catalog.version:
            self._schema = EventSchema(rules.catalog)  # which records are valid comes with the rules
        # Announced with the next output: at start (a restore may bring another catalogue than the
        # one the job was built with) and whenever rules are taken.
        self._announce = self._gate_key is not None
        self._ttl = {s.id: s.ttl for s in rules.segments}
        self._m.rules_loaded(rules.version, len(rules.segments))
        # Every batch key moves its customers to the new rules on its next call.
        self._current = set()

    # ---- rules from the rules topic --------------------------------------------------------------

    def restore_rules(self, files: RuleFileStore) -> None:
        """Before the first call after ``open``: after a restore, the rules in use are in the rule
        files' store, not in this instance."""
        if self._rules_restored:
            return
        self._rules_restored = True
        rules = active_rules(files, self._engine_config.horizon)
        if rules is not None and rules.version != self._engine.rule_version:
            self.use_rules(rules)
            self._status = [s for s in self._status if not s[1] or not s[1].startswith("rules/")]
            self._rule_status("running", {})
        self._restore_models(files)

    def _restore_models(self, files: RuleFileStore) -> None:
        """The models published before a restore, kept in the rule files' store."""
        if self._models_restored:
            return
        self._models_restored = True
        scorer = self._scorer
        if scorer is None:
            return
        for key, text in list(files.items()):
            if is_model_key(key):
                try:
                    scorer.take_record(key, text, self._known_scores())
                except ValueError as exc:  # the catalogue changed since: it stays out
                    _log.error("published model %s no longer usable:\n%s", key, exc)
        self._models_changed()

    def _known_scores(self) -> Sequence[str]:
        return self._engine.compiled.rules.catalog.scores

    def _models_changed(self) -> None:
        versions = dict(self._scorer.versions) if self._scorer is not None else {}
        self._held.model_versions = versions or None
        self._m.models_in_use(versions)

    def _model_record(self, files: RuleFileStore, key: str, text: str | None) -> None:
        """A model published on the rules topic: used from now on and kept for a restore, or
        rejected (the models in use stay); either way a status record says so."""
        self.restore_rules(files)
        scorer = self._scorer
        name = key.split("/", 1)[1]
        version = None
        if scorer is None:
            state, detail = "ignored", "job.models is off"
        else:
            try:
                detail = scorer.take_record(key, text, self._known_scores())
            except ValueError as exc:
                state, detail = "rejected", str(exc)
                self._m.model_rejected(name)
                _log.error("model %s from the rules topic rejected, still using %s:\n%s", key, scorer.versions, exc)
            else:
                state = "accepted"
                version = scorer.versions.get(name)
                # A withdrawal is kept too (as ""): a restored job must not score with the
                # shipped model of that name again.
                files.put(key, text or "")
                self._models_changed()
                _log.info("model %s: %s", key, detail)
        if self._gate_key is not None:
            job = self._gate_key.split("/")[1]
            value = {"model": name, "state": state, "version": version, "detail": detail, "at": int(time.time() * 1000)}
            self._status.append((GATE, f"model/{job}/{name}", json.dumps(value, separators=(",", ":"))))

    def announcement(self) -> Iterator[Output]:
        """The catalogue in use for the sources' event gate, once after each change of rules: key
        ``gate_key``, value the gate's spec with the versions (``flink/jvm/GateFollower.java``)."""
        if self._status:
            yield from self._status
            self._status = []
        if not self._announce or self._gate_key is None:
            return
        self._announce = False
        value = {
            "rule_version": self._engine.rule_version,
            "catalog_version": self._schema.catalog.version,
            "at": int(time.time() * 1000),
            "gate": gate_spec_data(self._schema, self._limits),
        }
        yield GATE, self._gate_key, json.dumps(value, separators=(",", ":"))

    def rule_file(self, files: RuleFileStore, name: str | None, text: str | None) -> None:
        """A record of the rules topic: a rule file's text, or None when it was deleted."""
        if name is None:
            return
        if is_model_key(name):
            self._model_record(files, name, text)
            return
        if not is_rule_file(name):
            return
        self.restore_rules(files)
        horizon = self._engine_config.horizon
        if name == RULE_SET_KEY:
            outcome = take_rule_set(files, text, self._rules, horizon)
            request = _request_of(text)
        else:
            outcome = take_rule_file(files, name, text, self._rules, horizon)
            request = {"file": name}
        if isinstance(outcome, RuleLoadError):
            self._m.rules_rejected()
            _log.error("rules from the rules topic rejected, still using %s:\n%s", self._engine.rule_version, outcome)
            self._rule_status("rejected", request, problems=str(outcome))
            return
        if outcome.version != self._engine.rule_version:
            if outcome is not self._rules:
                _log.info("rules %s in use (%d segments, from the rules topic)", outcome.version, len(outcome.segments))
            self.use_rules(outcome)
            self._active = dict(request)
        self._rule_status("accepted", request)

    def _rule_status(self, state: str, request: Mapping[str, object], problems: str | None = None) -> None:
        """What the job did with a record of the rules topic, for the status topic (key
        ``rules/<job>``): every parallel task takes the same records in the same order and writes
        the same value (no clock of its own in it), so they agree on one answer."""
        if self._gate_key is None:
            return
        rules = self._engine.compiled.rules
        value: dict[str, object] = {
            "state": state,  # of this record: running (at start), accepted, rejected
            "version": rules.version,  # in use after it
            "segments": len(rules.segments),
            "active": self._active,  # how the rules in use came: request, published_by, published_at
            **request,  # this record's
        }
        if problems is not None:
            value["problems"] = problems
        job = self._gate_key.split("/")[1]
        self._status.append((GATE, f"rules/{job}", json.dumps(value, separators=(",", ":"))))

    # ---- per call ----------------------------------------------------------------------------

    def batch(
        self, key: int, payload: bytes | None, batcher_watermark: int, store: CustomerStore, timers: Timers
    ) -> Iterator[Output]:
        """One call of the batcher's (batch key, records, watermark): records b"" are a sync
        marker (write the key's changed states, then the held changes; before every checkpoint
        barrier), records None an end marker (a release is complete: write the held changes)."""
        self._gc.tick()
        yield from self.announcement()
        if payload is None:
            if self._held.at_end:
                yield from self.flush()
            return
        if not payload:
            if key in self._due and key not in self._current:
                # New rules since this key's last call: bring every customer up to them now, not
                # at the key's next record, so a set reaches quiet customers by the next
                # checkpoint (markers come before each barrier, to every key of the subtask).
                watermark = max(timers.current_watermark(), batcher_watermark)
                yield from self._finish(key, self._prepare(key, watermark, store), store, timers, watermark)
            self._sync(key, store)
            yield from self.flush()
            return
        # The batcher's watermark: every event of this batch key up to it has arrived (the
        # batcher sends the batch just before it forwards that watermark to this function).
        watermark = max(timers.current_watermark(), batcher_watermark)
        call = self._prepare(key, watermark, store)
        now_ms = int(time.time() * 1000)
        limits, batch_keys, schema = self._limits, self._batch_keys, self._schema
        records = decode_batch(payload)
        m = self._m
        m.events_received(len(records))
        valid = 0
        events: dict[str, list[Event]] = {}
        for record in records:
            parsed = parse_event(record.value, now_ms=now_ms, schema=schema, limits=limits, ingest_ms=record.timestamp)
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
        work: list[tuple[CustomerState, Event | list[Event] | int | None]] = []
        for customer_id, mine in events.items():
            state = call.states.get(customer_id) or self._load(customer_id, key, store)
            call.note_ingest(state, watermark, mine)
            work.append((state, mine[0] if len(mine) == 1 else mine))
        for (state, item), result in zip(work, self._engine.step_many(work, watermark)):
            given = 1 if type(item) is Event else len(item)  # type: ignore[arg-type]
            if result.duplicates == given and not result.instants:  # nothing but duplicates: unchanged
                call.duplicates += result.duplicates
                continue
            call.take(state, result)
        yield from self._finish(key, call, store, timers, watermark, end_follows=True)

    def timer(self, flink_key: int, store: CustomerStore, timers: Timers) -> Iterator[Output]:
        """An event-time timer of the batch key whose Flink key is ``flink_key``: steps every
        customer of it that is due."""
        key = self._batch_key_of[flink_key]
        self._gc.tick()
        yield from self.announcement()
        watermark = timers.current_watermark()
        if self._armed.get(key, MAX_TIMESTAMP) <= watermark:
            # Not there when an earlier timer already took it, and the final watermark (the
            # largest timestamp) fires an older one.
            self._armed.pop(key, None)
        call = self._prepare(key, watermark, store)
        engine = self._engine
        due = call.index.pop_due(watermark)
        work: list[tuple[CustomerState, Event | list[Event] | int | None]] = []
        for customer_id in due:
            state = call.states.get(customer_id) or self._load(customer_id, key, store)
            call.note_ingest(state, watermark)
            work.append((state, None))
        # Side by side: the model scoring of all these customers goes out in batches.
        for (state, _), result in zip(work, engine.step_many(work, watermark)):
            call.take(state, result)
        self._m.timers_fired(len(due))
        yield from self._finish(key, call, store, timers, watermark)

    def hold_timer(self) -> Iterator[Output]:
        """The processing-time timer armed while changes are held: write them."""
        self._hold_timer = False
        yield from self.flush()

    def _prepare(self, key: int, watermark: int, store: CustomerStore) -> Call:
        """A call's collector. On a batch key's first call in this instance (start, restore,
        rescale) the due index is rebuilt from the store; on its first call under new rules every
        customer still on older rules is stepped, so a rule change also reaches customers who
        send nothing new."""
        index = self._due.get(key)
        if index is not None and key in self._current:
            return Call(index)
        fresh = index is None
        if index is None:
            index = self._due[key] = DueIndex()
            self._stored[key] = set()
        stored = self._stored[key]
        call = Call(index)
        self._current.add(key)
        engine = self._engine
        version = engine.state_version
        cache = self._cache
        dirty = self._dirty.get(key, {})
        entries = ((c, d) for c, d in store.items() if c not in dirty)
        behind: list[tuple[CustomerState, Event | list[Event] | int | None]] = []
        for customer_id, data in [*((c, None) for c in dirty), *entries]:
            state = dirty.get(customer_id) or cache.peek(customer_id) or decode_state(data)  # type: ignore[arg-type]
            if fresh and data is not None:
                stored.add(customer_id)
            if state.rule_version != version:
                behind.append((state, None))
            elif fresh:
                index.set(customer_id, _next_instant(state))
        # Brought up to the rules at their own clock, not advanced: this call's records (event
        # times up to the watermark) must find them before those instants, or they would be
        # taken as late (a cart add then starts no deadline). _finish advances them.
        engine.reconcile_at = watermark  # the rules take effect for this key now (removed segments end then)
        for (state, _), result in zip(behind, engine.step_many(behind, NEVER)):
            call.take(state, result)
        call.behind = [state for state, _ in behind]
        return call

    def _finish(
        self, key: int, call: Call, store: CustomerStore, timers: Timers, watermark: int, end_follows: bool = False
    ) -> Iterator[Output]:
        if call.behind:
            # The call's records are in: every event of this batch key up to the watermark has
            # arrived, so the customers reconciled in _prepare advance to it (those with records
            # in this call are there already; for them this step does nothing).
            work: list[tuple[CustomerState, Event | list[Event] | int | None]] = [(s, None) for s in call.behind]
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
                self._sync(key, store)
            elif now >= due and live:
                # Live (the watermark near the wall clock): keep the checkpoint's share small.
                # Catching up, nobody waits on a checkpoint pause, and states coalesce.
                self._sync(key, store)
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
                yield LATE, event.customer_id, late
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
                yield from self.flush()
            elif live and not end_follows:
                # A timer: the end marker that follows its watermark may have come already.
                yield from self.flush()
            else:
                held.at_end = held.at_end or live
            if self._held.changes and not self._hold_timer:
                timers.register_processing_time_timer(int(wall * 1000) + int(HOLD_SECONDS * 1000))
                self._hold_timer = True

    def flush(self) -> Iterator[Output]:
        """Write the held changes to Redis, then emit their Kafka records: a change on the topic
        is already in Redis."""
        held = self._held
        if held.changes:
            self._held = Held(held.model_versions)
            self._write_redis(held)
            for customer_id, value in held.records:
                yield None, customer_id, value

    def _write_redis(self, held: Held) -> None:
        ttl, m, changes = self._ttl, self._m, held.changes
        versions = held.model_versions
        start = time.perf_counter()
        try:
            applied = self._redis.write(
                [(c.customer_id, c.segment_id, c.kind, c.event_time, ttl.get(c.segment_id), _why(c, versions)) for c in changes]
            )
        except Exception as exc:
            # The job fails and restarts from its last checkpoint; the writes are idempotent.
            m.redis_error(redis_error_kind(exc))
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

    def _dead_letter(self, invalid: Invalid, record: BatchRecord) -> Output:
        self._m.events_invalid(invalid.code)
        source = SourceRecord(self._source_topic, record.partition, record.offset, record.timestamp, record.key)
        text_key = record.key.decode("utf-8", "replace") if record.key is not None else None
        return DLQ, text_key, encode_dlq(invalid, record.value, source, max_payload_bytes=self._limits.max_bytes)

    # ---- state -------------------------------------------------------------------------------

    def _sync(self, key: int, store: CustomerStore) -> None:
        """Write the key's changed states to the store (the current key must be ``key``)."""
        dirty = self._dirty.pop(key, None)
        self._sync_at.pop(key, None)
        if dirty:
            # One put per customer: PyFlink 2.2's put_all iterates the dict's keys as pairs in
            # process mode (ValueError), and saved nothing measurable in thread mode.
            for customer_id, state in dirty.items():
                store.put(customer_id, encode_state(state))
            self._stored[key].update(dirty)

    def _load(self, customer_id: str, key: int, store: CustomerStore) -> CustomerState:
        cache = self._cache
        state = cache.get(customer_id)
        if state is not None:
            return state
        dirty = self._dirty.get(key)
        state = dirty.get(customer_id) if dirty else None
        if state is not None:  # evicted, but not written yet: still decoded
            cache.hit()
            return state
        data = store.get(customer_id) if customer_id in self._stored[key] else None
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


def _request_of(value: str | None) -> dict[str, object]:
    """Who published a rule set record and which request it was (``segments publish``)."""
    try:
        published = json.loads(value) if value else {}
    except ValueError:
        return {}
    if not isinstance(published, dict):
        return {}
    return {k: published[k] for k in ("request", "published_by", "published_at") if k in published}


def _why(change: Change, model_versions: Mapping[str, str] | None) -> str:
    """What ``segments explain --live`` shows of an entry (stored next to the membership in Redis,
    removed with it): the reason (at most 240 characters), the rule version, and the models'
    versions and scores when the customer had scores."""
    if change.kind != "enter":
        return ""
    why: dict[str, object] = {"reason": change.reason, "rule_version": change.rule_version}
    if change.scores:
        why["scores"] = {k: round(v, 4) for k, v in change.scores.items()}
        if model_versions:
            why["model_versions"] = model_versions
    return json.dumps(why, separators=(",", ":"))
