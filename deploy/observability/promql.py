"""Every PromQL expression the dashboard and the alert rules use, in one place.

Each ``Query`` is a plain expression without a threshold (alerts add the comparison), so one
live test can check that every one of them parses and returns data against a real Prometheus
scraping the running job (tests/integration/test_observability.py): a panel that would show
"No data" fails there.

``source`` says who exports the metric: ``python`` (flink_jobs/runtime/metrics.py, scraped through the
file_sd targets the workers write) or ``flink`` (Flink's Prometheus reporter, see
flink_jobs/flink/reporter.py), so a failing check points at the right side.
"""

from __future__ import annotations

from dataclasses import dataclass

RATE = "5m"  # rate window of the panels and alerts: >= 4 scrapes at the 15 s default interval


@dataclass(frozen=True)
class Query:
    key: str
    expr: str
    title: str
    unit: str  # Grafana unit id: s, ms, ops, percentunit, short, none
    source: str  # python | flink
    legend: str = ""


def _quantile(q: float, metric: str, by: str = "") -> str:
    labels = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({labels}) (rate({metric}_bucket[{RATE}])))"


def _q(*items: Query) -> dict[str, Query]:
    out: dict[str, Query] = {}
    for item in items:
        assert item.key not in out, item.key
        out[item.key] = item
    return out


LAG = "sum by (job_name) (flink_taskmanager_job_task_operator_pendingRecords)"

QUERIES: dict[str, Query] = _q(
    # ---- freshness / latency
    *(
        Query(
            f"latency_p{int(q * 100)}",
            _quantile(q, "segments_event_to_segment_latency_seconds"),
            f"event time -> Redis, p{int(q * 100)}",
            "s",
            "python",
            f"p{int(q * 100)}",
        )
        for q in (0.5, 0.95, 0.99)
    ),
    Query(
        "ingest_latency_p99",
        _quantile(0.99, "segments_ingest_to_segment_latency_seconds"),
        "ingestion -> Redis, p99",
        "s",
        "python",
        "ingest p99",
    ),
    # ---- throughput
    Query("events_in_rate", f"sum(rate(segments_events_received_total[{RATE}]))", "events in", "ops", "python", "in"),
    Query("events_valid_rate", f"sum(rate(segments_events_valid_total[{RATE}]))", "valid events", "ops", "python", "valid"),
    Query("changes_rate", f"sum(rate(segments_changes_total[{RATE}]))", "changes out", "ops", "python", "changes"),
    Query(
        "redis_written_rate",
        f"sum by (result) (rate(segments_redis_changes_written_total[{RATE}]))",
        "changes written to Redis",
        "ops",
        "python",
        "{{result}}",
    ),
    Query(
        "events_in_10m",
        "sum(increase(segments_events_received_total[10m]))",
        "events in, last 10 min",
        "short",
        "python",
        "events",
    ),
    # ---- data quality
    Query(
        "invalid_rate_by_reason",
        f"sum by (reason) (rate(segments_events_invalid_total[{RATE}]))",
        "invalid events (DLQ) by reason",
        "ops",
        "python",
        "{{reason}}",
    ),
    Query(
        "invalid_ratio",
        f"sum(rate(segments_events_invalid_total[{RATE}])) / sum(rate(segments_events_received_total[{RATE}]))",
        "share of records sent to the DLQ",
        "percentunit",
        "python",
        "invalid",
    ),
    Query("duplicate_rate", f"sum(rate(segments_events_duplicate_total[{RATE}]))", "duplicates", "ops", "python", "duplicates"),
    Query("late_rate", f"sum(rate(segments_events_late_total[{RATE}]))", "late (to the late topic)", "ops", "python", "late"),
    Query(
        "late_ratio",
        f"sum(rate(segments_events_late_total[{RATE}])) / sum(rate(segments_events_valid_total[{RATE}]))",
        "share of valid events too late",
        "percentunit",
        "python",
        "late",
    ),
    Query(
        "forced_instants_rate",
        f"sum(rate(segments_forced_instants_total[{RATE}]))",
        "instants forced by buffer overflow",
        "ops",
        "python",
        "forced",
    ),
    # ---- segments
    Query("members", "sum by (segment) (segments_members)", "members (job's view)", "short", "python", "{{segment}}"),
    Query(
        "changes_by_segment",
        f"sum by (segment, kind) (rate(segments_changes_total[{RATE}]))",
        "enters and exits by segment",
        "ops",
        "python",
        "{{segment}} {{kind}}",
    ),
    # ---- rules
    Query("rules_version", "max by (version) (segments_rules_info)", "rule set in use", "none", "python", "{{version}}"),
    Query("rules_loaded_1h", "sum(increase(segments_rules_loaded_total[1h]))", "rule sets loaded, 1 h", "short", "python", "loaded"),
    Query(
        "rules_rejected_1h",
        "sum(increase(segments_rules_rejected_total[1h]))",
        "rule sets rejected, 1 h",
        "short",
        "python",
        "rejected",
    ),
    Query("timers_rate", f"sum(rate(segments_timers_fired_total[{RATE}]))", "timers fired", "ops", "python", "timers"),
    # ---- model
    Query(
        "inference_p99",
        _quantile(0.99, "segments_model_inference_seconds", "model"),
        "inference p99 by model",
        "s",
        "python",
        "{{model}}",
    ),
    Query("score_p50", _quantile(0.5, "segments_model_score", "model"), "median score by model", "none", "python", "{{model}}"),
    Query(
        "feature_psi",
        "max by (model, feature) (segments_model_feature_psi)",
        "feature drift (PSI)",
        "none",
        "python",
        "{{model}} {{feature}}",
    ),
    # ---- infra: Redis, Kafka, checkpoints, backpressure
    Query("redis_write_p99", _quantile(0.99, "segments_redis_write_seconds"), "Redis flush p99", "s", "python", "p99"),
    Query(
        "python_gc_share",
        f"sum by (generation) (rate(segments_python_gc_pause_seconds_sum[{RATE}]))",
        "share of time Python's GC paused the workers, by generation",
        "percentunit",
        "python",
        "gen {{generation}}",
    ),
    Query(
        "python_gc_found",
        f"sum by (generation) (rate(segments_python_gc_collected_objects_total[{RATE}]))",
        "unreachable objects Python's GC found, by generation",
        "ops",
        "python",
        "gen {{generation}}",
    ),
    Query(
        "state_cache_lookups",
        f"sum by (result) (rate(segments_state_cache_lookups_total[{RATE}]))",
        "customer state lookups by result (hit: in memory; miss: read and decoded; new: no state yet)",
        "ops",
        "python",
        "{{result}}",
    ),
    Query(
        "state_cache_miss_ratio",
        f'sum(rate(segments_state_cache_lookups_total{{result="miss"}}[{RATE}])) '
        f'/ sum(rate(segments_state_cache_lookups_total{{result=~"hit|miss"}}[{RATE}]))',
        "share of lookups of existing customers that read and decoded their state",
        "percentunit",
        "python",
        "misses",
    ),
    Query(
        "state_cache_customers",
        "sum(segments_state_cache_customers)",
        "decoded customer states held in memory",
        "short",
        "python",
        "cached",
    ),
    Query(
        "state_cache_bytes",
        "sum(segments_state_cache_bytes)",
        "Python memory the cached customer states take, estimated from a sample of them",
        "bytes",
        "python",
        "memory",
    ),
    Query(
        "redis_error_rate",
        f"sum(rate(segments_redis_errors_total[{RATE}]))",
        "Redis flush errors",
        "ops",
        "python",
        "errors",
    ),
    Query(
        "watermarks_deferred",
        f"sum by (job_name) (rate(flink_taskmanager_job_task_operator_watermarksDeferred[{RATE}]))",
        "watermarks deferred while catching up (job.catch_up_release_interval)",
        "ops",
        "flink",
        "{{job_name}}",
    ),
    Query("consumer_lag", LAG, "Kafka consumer lag (records)", "short", "flink", "{{job_name}}"),
    Query("consumer_lag_deriv", f"deriv(({LAG})[10m:30s])", "Kafka lag growth (records/s)", "short", "flink", "{{job_name}}"),
    Query(
        "checkpoint_failures_10m",
        "sum by (job_name) (increase(flink_jobmanager_job_numberOfFailedCheckpoints[10m]))",
        "failed checkpoints, 10 min",
        "short",
        "flink",
        "{{job_name}}",
    ),
    Query(
        "checkpoint_duration",
        "max by (job_name) (flink_jobmanager_job_lastCheckpointDuration)",
        "last checkpoint duration",
        "ms",
        "flink",
        "{{job_name}}",
    ),
    Query(
        "restarts_15m",
        "sum by (job_name) (increase(flink_jobmanager_job_numRestarts[15m]))",
        "job restarts, 15 min",
        "short",
        "flink",
        "{{job_name}}",
    ),
    Query(
        "backpressure",
        "max by (task_name) (flink_taskmanager_job_task_backPressuredTimeMsPerSecond)",
        "back-pressured ms/s by task",
        "ms",
        "flink",
        "{{task_name}}",
    ),
    Query(
        "busy",
        "max by (task_name) (flink_taskmanager_job_task_busyTimeMsPerSecond)",
        "busy ms/s by task",
        "ms",
        "flink",
        "{{task_name}}",
    ),
)
