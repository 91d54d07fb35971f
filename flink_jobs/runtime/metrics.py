"""The job's Prometheus metrics, counted in the Python workers and served over HTTP.

Why prometheus-client and not (only) PyFlink's metric groups: PyFlink has no histograms and only
integer gauges, and latency percentiles are the first thing on call looks at.

Use from the batch engine (``runtime/batch_engine.py``)::

    from flink_jobs.runtime import metrics

    def open(self, runtime_context):
        metrics.start_exporter(self._metrics_config)   # once per process; later calls are no-ops
        self._m = metrics.job_metrics()

    def process_element(...):
        self._m.events_received(len(batch))
        self._m.observe_latencies(event_to_segment=[...seconds...])

Every method takes counts or lists, so a function that handles a batch pays one call, not one
per event; all of them are thread-safe (prometheus-client locks per value). Label values are
bounded: segment ids, rule versions, model and feature names, and reason codes from a fixed
list; never customer ids. A label past ``MAX_LABEL_VALUES`` distinct values is counted as
``_other`` instead of growing the series count without end.

Exposure: one HTTP server per Python process (thread mode: the TaskManager's JVM process;
process mode: each Python worker), on the first free port of ``metrics.port_start..port_end``,
so any parallelism and several TaskManagers on one host never clash. Each server registers
``host:port`` as a Prometheus file_sd file in ``metrics.targets_dir`` (removed at exit); on
Kubernetes give each TaskManager pod one port (thread mode) and scrape it with a PodMonitor or
annotations (see deploy/observability/README.md).
"""

from __future__ import annotations

import atexit
import errno
import json
import logging
import os
import re
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import start_http_server

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MetricsConfig:
    """How the Python workers' metrics are served (settings ``metrics.*``)."""

    enabled: bool  # serve the Python workers' metrics over HTTP (they are counted either way)
    host: str  # address the Python exporters bind
    advertise_host: str  # host written into file_sd targets; empty: host, or this machine's name
    port_start: int  # Python exporters: each process takes the first free port of start..end
    port_end: int
    targets_dir: str  # file_sd folder the exporters register in; empty = do not register
    flink_reporter: bool  # Flink's own Prometheus reporter (plugin metrics-prometheus)
    flink_reporter_ports: str  # its port range, e.g. 9250-9253 (one port per JVM)

PREFIX = "segments_"
# Event (or ingestion) time -> change written to Redis: from 5 ms to 10 min, dense enough around
# the out-of-orderness wait (seconds) that p50/p95/p99 interpolate to something meaningful.
# Half-second steps from the default 5 s wait: live, most changes land between 5 and 7.5 s, where
# one bucket made every quantile the same interpolation.
LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 5.5, 6.0, 6.5,
    7.0, 7.5, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)  # fmt: skip
# One pipelined Redis flush (the changes of one call of the segment function).
REDIS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# One ONNX call (single row or a batch): ~8 µs (K-Means) to ~2 ms (Isolation Forest, single row).
INFERENCE_BUCKETS = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 1.0,
)  # fmt: skip
# One collection of Python's cyclic GC: ~0.1 ms (youngest generation) to ~1 s (everything).
GC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
GC_GENERATIONS = ("0", "1", "2", "full")
# Model outputs: probabilities in [0, 1]; Isolation Forest decision scores around [-0.5, 0.5].
SCORE_BUCKETS = tuple(round(-1.0 + 0.1 * i, 1) for i in range(21))

# The reason codes of serde.Invalid; anything else is counted as "other".
INVALID_REASONS = ("oversized", "encoding", "not_json", "not_object", "schema", "event_time", "property", "other")
CHANGE_KINDS = ("enter", "exit")
REDIS_ERROR_KINDS = ("connection", "timeout", "response", "other")
CACHE_RESULTS = ("hit", "miss", "new")
MAX_LABEL_VALUES = 500
OVERFLOW_LABEL = "_other"
_NAME_VALUE = re.compile(r"^[A-Za-z0-9_.:\-]{1,100}$")


class _BoundedLabel:
    """Label values as given while they look like names and there are fewer than ``limit``
    distinct ones; otherwise ``_other``. Keeps one bad caller from creating a series per customer."""

    def __init__(self, limit: int = MAX_LABEL_VALUES, allowed: Sequence[str] | None = None) -> None:
        self._limit = limit
        self._allowed = frozenset(allowed) if allowed is not None else None
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if self._allowed is not None:
            return value if value in self._allowed else ("other" if "other" in self._allowed else OVERFLOW_LABEL)
        if not _NAME_VALUE.match(value):
            return OVERFLOW_LABEL
        with self._lock:
            if len(self._seen) >= self._limit:
                return OVERFLOW_LABEL
            self._seen.add(value)
        return value


class JobMetrics:
    """Every metric of the job's Python side, in one registry. One instance per process:
    get it with ``job_metrics()``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        p = PREFIX

        def counter(name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
            return Counter(p + name, doc, labels, registry=r)

        def gauge(name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
            return Gauge(p + name, doc, labels, registry=r)

        def histogram(name: str, doc: str, buckets: Sequence[float], labels: Sequence[str] = ()) -> Histogram:
            return Histogram(p + name, doc, labels, buckets=buckets, registry=r)

        # ---- freshness
        self._event_latency = histogram(
            "event_to_segment_latency_seconds",
            "Event time of a membership change to the change written to Redis.",
            LATENCY_BUCKETS,
        )
        self._ingest_latency = histogram(
            "ingest_to_segment_latency_seconds",
            "Kafka record timestamp (ingestion) of the event behind a change to the change written to Redis.",
            LATENCY_BUCKETS,
        )
        # ---- events and data quality
        self._received = counter("events_received", "Records read from the events topic.")
        self._valid = counter("events_valid", "Records that parsed and validated as events.")
        self._invalid = counter("events_invalid", "Records sent to the dead-letter topic, by reason code.", ["reason"])
        self._duplicate = counter("events_duplicate", "Valid events dropped as duplicates (event_id seen within the horizon).")
        self._late = counter("events_late", "Events beyond the allowed lateness, sent to the late topic.")
        self._late_applied = counter("events_late_applied", "Events behind the customer's clock but within the allowed lateness, applied.")
        # ---- engine
        self._changes = counter("changes", "Membership changes emitted, by segment and kind (enter|exit).", ["segment", "kind"])
        self._members = gauge(
            "members",
            "Members per segment as this process has seen them: enters minus exits since the process started "
            "(sum over processes; starts from 0 after a restart, Redis holds the full count).",
            ["segment"],
        )
        self._timers = counter("timers_fired", "Event-time timers fired (window exits, absence deadlines, TTLs).")
        self._forced = counter(
            "forced_instants",
            "Event-time instants processed before the watermark because a customer's buffer overflowed "
            "(determinism given up for that customer).",
        )
        # ---- rules
        self._rules_info = gauge("rules_info", "1 for the rule set version in use by this process.", ["version"])
        self._rules_segments = gauge("rules_segments", "Segments in the rule set in use.")
        self._rules_loaded = counter("rules_loaded", "Rule sets loaded and put in use (at start and hot reloads).")
        self._rules_rejected = counter("rules_rejected", "Rule sets from the rules topic rejected (last good set kept).")
        # ---- Redis sink
        self._redis_write = histogram("redis_write_seconds", "One pipelined flush of changes to Redis.", REDIS_BUCKETS)
        self._redis_changes = counter(
            "redis_changes_written", "Changes sent to Redis, by result (applied|stale).", ["result"]
        )
        self._redis_errors = counter("redis_errors", "Failed Redis flushes, by kind.", ["kind"])
        # ---- models (names agreed with the ML work)
        self._inference = histogram(
            "model_inference_seconds", "One ONNX inference call (a row or a batch), by model.", INFERENCE_BUCKETS, ["model"]
        )
        self._score = histogram("model_score", "Scores the models gave, by model.", SCORE_BUCKETS, ["model"])
        self._psi = gauge(
            "model_feature_psi",
            "Population stability index of a model input over the recent window against the model card's reference.",
            ["model", "feature"],
        )
        self._model_info = gauge("model_info", "1 for the version of each model in use by this process.", ["model", "version"])
        self._models_rejected = counter(
            "models_rejected", "Models published to the rules topic and rejected (last good one kept), by model.", ["model"]
        )

        # ---- the state cache (job.state_cache_memory)
        self._cache_lookups = counter(
            "state_cache_lookups",
            "Customer states the segment function looked up, by result: hit (decoded state kept in memory), "
            "miss (read from Flink state and decoded), new (a customer with no state yet).",
            ["result"],
        )
        self._cache_evictions = counter(
            "state_cache_evictions", "Decoded customer states dropped from the cache to make room for another."
        )
        self._cache_customers = gauge(
            "state_cache_customers",
            "Decoded customer states held in this process's caches (all its segment function instances).",
        )
        self._cache_bytes = gauge(
            "state_cache_bytes",
            "Python memory the cached customer states take in this process, estimated from a sample of them "
            "(each segment function instance keeps within job.state_cache_memory).",
        )

        # ---- the Python process
        self._gc_pause = histogram(
            "python_gc_pause_seconds",
            "Pauses of Python's cyclic garbage collector, by generation (0|1|2; full = the periodic collection "
            "of everything, see job.python_full_gc_interval).",
            GC_BUCKETS,
            ["generation"],
        )
        self._gc_collected = counter(
            "python_gc_collected_objects",
            "Unreachable objects the cyclic garbage collector found, by generation. Long-lived objects are "
            "frozen out of the young generations, so a reference cycle among them is found only by the "
            "periodic full collection: a growing full count means cycles wait that long.",
            ["generation"],
        )

        self._segment = _BoundedLabel()
        self._version = _BoundedLabel()
        self._model = _BoundedLabel(limit=50)
        self._feature = _BoundedLabel()
        self._reason = _BoundedLabel(allowed=INVALID_REASONS)
        self._kind = _BoundedLabel(allowed=CHANGE_KINDS)
        self._error_kind = _BoundedLabel(allowed=REDIS_ERROR_KINDS)
        self._generation = _BoundedLabel(allowed=GC_GENERATIONS)
        self._rules_lock = threading.Lock()
        self._active_version: str | None = None
        self._model_versions: dict[tuple[str, str], bool] = {}  # (model, version) -> in use
        # Label children by value: .labels() takes a lock and builds a tuple on every call.
        self._children: dict[tuple, object] = {}
        # Series with no label exist (at 0) from the start; create the labelled ones callers
        # will look for on a quiet, healthy job too.
        for kind in REDIS_ERROR_KINDS:
            self._redis_errors.labels(kind)
        for result in ("applied", "stale"):
            self._redis_changes.labels(result)
        for result in CACHE_RESULTS:
            self._cache_lookups.labels(result)
        for generation in GC_GENERATIONS:
            self._gc_pause.labels(generation)
            self._gc_collected.labels(generation)

    def _child(self, metric, *values: str):
        key = (id(metric), *values)
        child = self._children.get(key)
        if child is None:
            child = self._children.setdefault(key, metric.labels(*values))
        return child

    # ---- events -------------------------------------------------------------------------------

    def events_received(self, n: int = 1) -> None:
        self._received.inc(n)

    def events_valid(self, n: int = 1) -> None:
        self._valid.inc(n)

    def events_invalid(self, reason: str, n: int = 1) -> None:
        """``reason``: the ``serde.Invalid.code`` (unknown codes count as ``other``)."""
        self._child(self._invalid, self._reason(reason)).inc(n)

    def events_duplicate(self, n: int = 1) -> None:
        if n:
            self._duplicate.inc(n)

    def events_late(self, n: int = 1) -> None:
        if n:
            self._late.inc(n)

    def events_late_applied(self, n: int = 1) -> None:
        if n:
            self._late_applied.inc(n)

    # ---- engine -------------------------------------------------------------------------------

    def changes(self, changes: Iterable[tuple[str, str]]) -> None:
        """Count emitted changes, given as (segment id, kind) pairs; kind ``enter`` adds a
        member to ``segments_members``, ``exit`` removes one."""
        counts: dict[tuple[str, str], int] = {}
        for segment, kind in changes:
            counts[(segment, kind)] = counts.get((segment, kind), 0) + 1
        for (segment, kind), n in counts.items():
            seg, k = self._segment(segment), self._kind(kind)
            self._child(self._changes, seg, k).inc(n)
            if k == "enter":
                self._child(self._members, seg).inc(n)
            elif k == "exit":
                self._child(self._members, seg).dec(n)

    def timers_fired(self, n: int = 1) -> None:
        if n:
            self._timers.inc(n)

    def forced_instants(self, n: int = 1) -> None:
        if n:
            self._forced.inc(n)

    def observe_latencies(
        self, event_to_segment: Sequence[float] = (), ingest_to_segment: Sequence[float] = ()
    ) -> None:
        """Latencies in seconds of changes just written to Redis: from their event time, and
        from the ingestion (Kafka record) time of the event behind them."""
        observe = self._event_latency.observe
        for seconds in event_to_segment:
            observe(seconds)
        observe = self._ingest_latency.observe
        for seconds in ingest_to_segment:
            observe(seconds)

    # ---- rules --------------------------------------------------------------------------------

    def rules_loaded(self, version: str, segments: int) -> None:
        """A rule set is in use (at start or after a hot reload)."""
        v = self._version(version)
        with self._rules_lock:
            if self._active_version is not None and self._active_version != v:
                self._child(self._rules_info, self._active_version).set(0)
            self._active_version = v
            self._child(self._rules_info, v).set(1)
            self._rules_segments.set(segments)
        self._rules_loaded.inc()

    def rules_rejected(self, n: int = 1) -> None:
        self._rules_rejected.inc(n)

    # ---- Redis --------------------------------------------------------------------------------

    def observe_redis_write(self, seconds: float, applied: int, stale: int = 0) -> None:
        """One flush: its duration and how many changes were applied or refused as stale."""
        self._redis_write.observe(seconds)
        if applied:
            self._child(self._redis_changes, "applied").inc(applied)
        if stale:
            self._child(self._redis_changes, "stale").inc(stale)

    def redis_error(self, kind: str = "other") -> None:
        """A failed flush; ``kind``: connection | timeout | response | other (see ``redis_error_kind``)."""
        self._child(self._redis_errors, self._error_kind(kind)).inc()

    # ---- models -------------------------------------------------------------------------------

    def observe_inference(self, model: str, seconds: Sequence[float]) -> None:
        """Durations of ONNX calls of one model (one per call, whether a row or a batch)."""
        child = self._child(self._inference, self._model(model))
        for s in seconds:
            child.observe(s)

    def observe_scores(self, model: str, scores: Sequence[float]) -> None:
        child = self._child(self._score, self._model(model))
        for s in scores:
            child.observe(s)

    def models_in_use(self, versions: Mapping[str, str]) -> None:
        """The versions of the models scoring now (at open, and after each published model)."""
        with self._rules_lock:
            for (model, version), active in list(self._model_versions.items()):
                if versions.get(model) != version and active:
                    self._child(self._model_info, model, version).set(0)
                    self._model_versions[(model, version)] = False
            for model, version in versions.items():
                key = (self._model(model), self._version(version))
                self._model_versions[key] = True
                self._child(self._model_info, *key).set(1)

    def model_rejected(self, model: str) -> None:
        self._child(self._models_rejected, self._model(model)).inc()

    def set_feature_psi(self, model: str, psi: Mapping[str, float]) -> None:
        """PSI per input feature of one model, over the recent window."""
        m = self._model(model)
        for feature, value in psi.items():
            self._child(self._psi, m, self._feature(feature)).set(value)

    # ---- the state cache ---------------------------------------------------------------------

    def state_cache(
        self, hits: int, misses: int, new: int, evicted: int, size_change: int, bytes_change: int = 0
    ) -> None:
        """One call's lookups of customer states, the states it evicted, and how the number of
        cached states and their estimated memory changed (the gauges sum the changes of every
        instance in the process)."""
        for result, n in (("hit", hits), ("miss", misses), ("new", new)):
            if n:
                self._child(self._cache_lookups, result).inc(n)
        if evicted:
            self._cache_evictions.inc(evicted)
        if size_change:
            self._cache_customers.inc(size_change)
        if bytes_change:
            self._cache_bytes.inc(bytes_change)

    # ---- the Python process -----------------------------------------------------------------

    def observe_gc_pause(self, generation: str, seconds: float, collected: int) -> None:
        """One collection of the cyclic GC (``gc_policy`` calls this)."""
        generation = self._generation(generation)
        self._child(self._gc_pause, generation).observe(seconds)
        if collected:
            self._child(self._gc_collected, generation).inc(collected)


def redis_error_kind(exc: BaseException) -> str:
    """The ``redis_error`` kind of an exception raised by redis-py (no redis import needed)."""
    names = {c.__name__ for c in type(exc).__mro__}
    if "TimeoutError" in names:
        return "timeout"
    if "ConnectionError" in names:
        return "connection"
    if "ResponseError" in names:
        return "response"
    return "other"


# ---- one instance and one HTTP server per process ----------------------------------------------

_lock = threading.RLock()
_metrics: JobMetrics | None = None
_exporter: "Exporter | None" = None


def job_metrics() -> JobMetrics:
    """This process's metrics (created at first use)."""
    global _metrics
    if _metrics is None:
        with _lock:
            if _metrics is None:
                _metrics = JobMetrics()
    return _metrics


@dataclass
class Exporter:
    """A running HTTP server of one process's metrics."""

    host: str
    port: int
    target: str  # host:port as registered for Prometheus
    targets_file: Path | None  # the first file_sd registration
    _server: object
    _thread: threading.Thread
    pid: int
    also_registered: list[Path] = field(default_factory=list)  # in other targets dirs since

    @property
    def url(self) -> str:
        return f"http://{self.target}/metrics"

    def register(self, targets_dir: str) -> None:
        """Also announce this exporter in ``targets_dir``, if it is not there yet: one process
        can run the functions of several jobs over its life (a session cluster's TaskManager in
        thread mode; PyFlink's loopback workers in a client), and each job may name its own folder."""
        if not targets_dir:
            return
        directory = Path(targets_dir)
        known = [p for p in (self.targets_file, *self.also_registered) if p is not None]
        if any(p.parent == directory and p.exists() for p in known):
            return
        try:
            self.also_registered.append(register_target(directory, self.target))
        except OSError as exc:
            _log.warning("metrics: cannot write the file_sd target into %s: %s", targets_dir, exc)

    def stop(self) -> None:
        """Stop serving and remove the file_sd registrations."""
        self._server.shutdown()  # type: ignore[attr-defined]
        self._server.server_close()  # type: ignore[attr-defined]
        for path in (self.targets_file, *self.also_registered):
            _unregister(path)


def start_exporter(config: MetricsConfig, metrics: JobMetrics | None = None) -> Exporter | None:
    """Serve ``metrics`` (default: ``job_metrics()``) over HTTP, once per process; later calls
    return the running exporter, registered in their ``targets_dir`` too. None when
    ``config.enabled`` is false. Raises ``OSError`` when no port of the range is free."""
    global _exporter
    if not config.enabled:
        return None
    with _lock:
        if _exporter is not None and _exporter.pid == os.getpid():
            _exporter.register(config.targets_dir)
            return _exporter
        # (A forked child inherits the variable but not the server thread: start its own.)
        registry = (metrics or job_metrics()).registry
        _exporter = serve(config, registry)
        atexit.register(_exporter.stop)
        return _exporter


def serve(config: MetricsConfig, registry: CollectorRegistry) -> Exporter:
    """Start an HTTP server of ``registry`` on the first free port of the configured range and
    register it in ``config.targets_dir``. Not idempotent: ``start_exporter`` is."""
    server, thread, port = _bind_first_free(config.host, config.port_start, config.port_end, registry)
    target = f"{_advertised_host(config)}:{port}"
    targets_file = None
    if config.targets_dir:
        try:
            targets_file = register_target(Path(config.targets_dir), target)
        except OSError as exc:
            # Counting and serving go on; only discovery is lost, and the log says where.
            _log.warning("metrics: cannot write the file_sd target into %s: %s", config.targets_dir, exc)
    _log.info("metrics: serving %s on http://%s/metrics", "segments_*", target)
    return Exporter(config.host, port, target, targets_file, server, thread, os.getpid())


def _bind_first_free(host: str, start: int, end: int, registry: CollectorRegistry):
    last: OSError | None = None
    for port in range(start, end + 1):
        try:
            server, thread = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                raise
            last = exc
            continue
        return server, thread, port
    raise OSError(
        errno.EADDRINUSE,
        f"metrics: no free port in {start}-{end} on {host} ({last}); widen metrics.port_start/port_end "
        "(one port per Python process: TaskManagers x slots in process mode)",
    )


def _advertised_host(config: MetricsConfig) -> str:
    if config.advertise_host:
        return config.advertise_host
    if config.host in ("0.0.0.0", "::", ""):
        return socket.gethostname()
    return config.host


# ---- file_sd registration -------------------------------------------------------------------------

FILE_SD_PREFIX = "segments-python-"


def register_target(directory: Path, target: str, labels: Mapping[str, str] | None = None) -> Path:
    """Write ``[{"targets": [target], "labels": ...}]`` as ``segments-python-<host>-<pid>.json``
    (atomically: Prometheus may read at any time), after removing files of this host whose
    process is gone (a killed process cannot clean up after itself)."""
    directory.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    remove_stale_targets(directory, host)
    path = directory / f"{FILE_SD_PREFIX}{host}-{os.getpid()}.json"
    body = [{"targets": [target], "labels": {"component": "python", **(labels or {})}}]
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def remove_stale_targets(directory: Path, host: str) -> list[Path]:
    """Remove this host's registrations whose process no longer runs; return them."""
    removed = []
    pattern = re.compile(re.escape(f"{FILE_SD_PREFIX}{host}-") + r"(\d+)\.json$")
    for path in directory.glob(f"{FILE_SD_PREFIX}*.json"):
        m = pattern.match(path.name)
        if m and not _pid_alive(int(m[1])):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _unregister(path: Path | None) -> None:
    if path is not None:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def metric_names(metrics: JobMetrics | None = None) -> dict[str, str]:
    """Every metric family name this module exports -> its type (counter, gauge, histogram)."""
    registry = (metrics or JobMetrics()).registry
    return {m.name + ("_total" if m.type == "counter" else ""): m.type for m in registry.collect()}


__all__ = [
    "Exporter",
    "JobMetrics",
    "MetricsConfig",
    "job_metrics",
    "metric_names",
    "redis_error_kind",
    "register_target",
    "remove_stale_targets",
    "serve",
    "start_exporter",
]
