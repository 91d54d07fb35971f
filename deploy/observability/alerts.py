"""Prometheus alert rules of the segmentation job, built from promql.QUERIES.

Each alert's expression is ``{query} <op> threshold`` (or a combination), so the query is the
one the dashboard plots and the live test checks. Annotations use only ``{{ $labels.* }}``
templates (no ``$value``): the dashboard shows the value, and the promtool tests can state the
expected text exactly (see ``render_annotations``).

``ALERT_TESTS`` is the promtool unit-test spec: per alert, a history in which it must fire and
one in which it must stay quiet. ``generate.py`` writes both files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Mapping

from promql import QUERIES

from flink_jobs.runtime.metrics import LATENCY_BUCKETS

# Service level: a membership change is in Redis within 30 s of its event time at p99. The
# engine waits for the watermark (events.out_of_orderness, 5 s by default) before it applies an
# event, so this is that wait plus processing; raise it with the out-of-orderness.
LATENCY_SLO_SECONDS = 30
LAG_RECORDS = 10_000
INVALID_RATIO = 0.05
LATE_RATIO = 0.01
PSI_DRIFT = 0.2
NO_EVENTS_MINUTES = 10
# A miss reads and decodes a customer's state and evicts another's: at about 5 KB of memory per
# cached state that is the trade, but a quarter of the lookups missing for half an hour means
# the cache holds fewer customers than are active. A ticket, not a page: in bench/job_bench.py
# live at 7,535 events/s, 27% of the lookups missing cost the segment task 10-20 points of a core
# (bench/HISTORY.md, "The state cache, live"); it slows the job, it does not stop it.
CACHE_MISS_RATIO = 0.25


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    for_: str
    severity: str  # page | ticket
    summary: str
    description: str
    runbook: str
    queries: tuple[str, ...]  # keys of the promql.QUERIES it uses


def _expr(template: str) -> tuple[str, tuple[str, ...]]:
    keys = tuple(dict.fromkeys(re.findall(r"\{(\w+)\}", template)))
    return template.format(**{k: QUERIES[k].expr for k in keys}), keys


def _alert(name: str, template: str, for_: str, severity: str, summary: str, description: str, runbook: str) -> Alert:
    expr, keys = _expr(template)
    return Alert(name, expr, for_, severity, summary, " ".join(description.split()), runbook.strip() + "\n", keys)


ALERTS: tuple[Alert, ...] = (
    _alert(
        "SegmentsLatencyP99OverSLO",
        f"{{latency_p99}} > {LATENCY_SLO_SECONDS}",
        "10m",
        "page",
        "Segment changes reach Redis late (p99 over the SLO)",
        f"p99 of event time -> change written to Redis has been above {LATENCY_SLO_SECONDS}s for 10 minutes: "
        "marketing activations and logins see stale segments.",
        """
1. Dashboard row "Infra": is the Kafka lag growing or a task back-pressured? Then the job is
   short of capacity: scale parallelism / TaskManagers, or find the slow operator (busy ms/s).
2. Redis flush p99 high or Redis errors? Check the Redis server (latency, memory, evictions).
3. Checkpoints slow or failing? Long alignments stall processing: see SegmentsCheckpointFailures.
4. Only event-time latency high, ingestion latency fine: producers send old events (backfill or
   a stuck producer); the watermark waits events.out_of_orderness for them by design.
""",
    ),
    _alert(
        "SegmentsConsumerLagGrowing",
        f"{{consumer_lag}} > {LAG_RECORDS} and {{consumer_lag_deriv}} > 0",
        "15m",
        "page",
        "Kafka consumer lag of job {{ $labels.job_name }} keeps growing",
        f"The events source is more than {LAG_RECORDS} records behind and the lag has grown for 15 minutes: "
        "the job reads slower than producers write.",
        """
1. Is the job running and not restarting? (flink_jobmanager_job_numRestarts, Flink UI)
2. Back-pressure (row "Infra"): the busiest task is the bottleneck. The segment engine: add
   parallelism (up to the events topic's partition count). The Redis writer: check Redis.
3. A traffic spike (events in/s up)? Lag falls once it passes; scale if it lasts.
4. Never reset offsets to skip the lag: segments would miss those events.
""",
    ),
    _alert(
        "SegmentsInvalidEventsSpike",
        f"{{invalid_ratio}} > {INVALID_RATIO}",
        "10m",
        "ticket",
        "More than 5% of records go to the dead-letter topic",
        f"Over {int(INVALID_RATIO * 100)}% of the records read from the events topic failed parsing or validation "
        "for 10 minutes.",
        """
1. Panel "invalid events (DLQ) by reason": one reason dominating points at one producer change
   (schema: a field renamed or retyped; event_time: a clock or format change; oversized).
2. Read a few records from events.dlq: each holds the reason, the payload and its
   topic/partition/offset. Tell the producing team; the records can be replayed once fixed.
3. If the schema change is intended, update the event catalogue (flink_jobs/core/catalog.py) and regenerate flink_jobs/runtime/schemas.
""",
    ),
    _alert(
        "SegmentsLateEventsHigh",
        f"{{late_ratio}} > {LATE_RATIO}",
        "15m",
        "ticket",
        "More than 1% of events arrive too late to be applied",
        f"Over {LATE_RATIO:.0%} of valid events came later than the allowed lateness for 15 minutes; they go to "
        "events.late and do not change segments.",
        """
1. A producer buffering or retrying (mobile offline queues, batch uploads)? Compare ingestion
   and event-time latency, and the producers named in events.late records.
2. If such delays are normal now, raise events.allowed_lateness (and events.dedup_horizon with
   it); a restart with the new setting is needed.
3. A partition that was idle and woke up? Check events.idleness.
""",
    ),
    _alert(
        "SegmentsCheckpointFailures",
        "{checkpoint_failures_10m} > 0",
        "5m",
        "ticket",
        "Checkpoints of job {{ $labels.job_name }} are failing",
        "At least one checkpoint failed in the last 10 minutes, for 5 minutes. Without checkpoints a restart "
        "replays more input, and exactly-once sinks do not commit.",
        """
1. JobManager log: "Checkpoint ... declined" or "expired" names the task and the cause.
2. Expired: checkpoints slower than the timeout; back-pressure delays the barriers (row "Infra").
3. Storage errors: is job.checkpoint_dir reachable and not full?
4. Repeated failures end in a job restart (restart-strategy): see SegmentsJobRestarting.
""",
    ),
    _alert(
        "SegmentsModelDrift",
        f"{{feature_psi}} > {PSI_DRIFT}",
        "30m",
        "ticket",
        "Input {{ $labels.feature }} of model {{ $labels.model }} drifted (PSI > 0.2)",
        f"The population stability index of the feature against the model card's reference has been above {PSI_DRIFT} "
        "for 30 minutes: the model's scores, and segments built on them, may no longer be trustworthy.",
        """
1. Is the shift real (a campaign, a season, a new market) or an upstream bug (a unit change, a
   field no longer sent)? Compare the feature's recent values with the card's histogram.
2. Upstream bug: fix the producer; PSI falls as the window moves on.
3. Real shift: retrain on recent events, e.g. python -m flink_jobs.cli.retrain --topic <events
   topic> --since <90 days ago> --rules rules/ (it writes a model only if it is not worse than the
   one in use on a time-split holdout, and prints both), review the new card's metrics, then
   segments publish-model <its card> --rules rules/ (no restart); until then consider pausing
   score-based segments. The scheduled retraining: deploy/kubernetes/base/retrain-cronjob.yaml.
""",
    ),
    _alert(
        "SegmentsNoEvents",
        "{events_in_10m} < 1 or absent(segments_events_received_total)",
        "5m",
        "page",
        f"No events read for {NO_EVENTS_MINUTES} minutes",
        "The job has read no record from the events topic for 10 minutes, or no worker exports metrics at all "
        "(the job is down or Prometheus cannot scrape it).",
        """
1. Prometheus targets page: are the job's targets (segments-python, flink) up? If none: is the
   job running (Flink UI / kubectl get flinkdeployment)? Restart it from its last checkpoint.
2. Targets up but nothing read: are producers writing to the events topic (end offsets
   moving)? If not, it is upstream: tell the producing teams.
3. Offsets moving but nothing read: the source is stuck; check the TaskManager logs for Kafka
   errors (authentication, topic deleted, partitions reassigned).
""",
    ),
    _alert(
        "SegmentsRedisWriteErrors",
        "{redis_error_rate} > 0",
        "5m",
        "page",
        "Writing segment memberships to Redis fails",
        "Redis flushes have been failing for 5 minutes: memberships read at login are stale. Failed batches stay "
        "in Flink state and are retried; the job restarts if failures persist.",
        """
1. Is Redis up and reachable from the TaskManagers (redis-cli -u <redis.url> ping)?
2. Errors by kind: connection/timeout -> network or an overloaded server; response -> a script
   or memory error (maxmemory reached? evictions?).
3. After Redis recovers, the writes converge by themselves (idempotent, event-time ordered).
""",
    ),
    _alert(
        "SegmentsStateCacheMisses",
        f"{{state_cache_miss_ratio}} > {CACHE_MISS_RATIO}",
        "30m",
        "ticket",
        "The state cache holds fewer customers than are active",
        f"Over {CACHE_MISS_RATIO:.0%} of the lookups of existing customers' states have read and decoded them from "
        "Flink state for 30 minutes (and evicted another from the cache), work a hit does not do: the segment task "
        "spends more CPU per event, and has less headroom for peaks (on the benchmark's machine, a 27% miss share "
        "cost 10-20% of a core at 7,500 events/s).",
        """
1. Right after a start, restore or rescale the cache is empty and misses are expected: wait.
2. Panel "State cache memory": is each parallel task at job.state_cache_memory? Then raise it
   to hold the customers active within a few minutes (per task; panel "State cache size" over
   the memory gives the mean state, 2-8 KB with rules/), and give the TaskManager that much
   more task off-heap memory per slot (deploy/local/cluster.sh adds it; Python memory, outside
   the JVM heap in thread mode).
3. No memory to spare: more parallelism spreads the customers over more caches.
""",
    ),
    _alert(
        "SegmentsJobRestarting",
        "{restarts_15m} > 2",
        "0m",
        "page",
        "Job {{ $labels.job_name }} restarted more than twice in 15 minutes",
        "The Flink job keeps failing and restarting; each restart replays input since the last checkpoint and "
        "delays segments.",
        """
1. Flink UI -> Exceptions (or the JobManager log): the root cause of the last failure.
2. Out of memory in a TaskManager: check panel "State cache memory" against the task off-heap
   memory reserved per slot (job.state_cache_memory each); raise the TaskManager's memory or
   lower job.state_cache_memory.
3. A poison record cannot crash the job (invalid input goes to the DLQ): if one does, that is a
   bug; save the record's offset from the log and file it.
""",
    ),
)


def render_annotations(alert: Alert, labels: Mapping[str, str]) -> dict[str, str]:
    """The annotations Prometheus produces for an alert with these labels."""

    def fill(text: str) -> str:
        return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m[1], ""), text)

    return {"summary": fill(alert.summary), "description": fill(alert.description), "runbook": fill(alert.runbook)}


def rules_document() -> dict:
    """The rules file (prometheus/alerts.yml) as a mapping."""
    return {
        "groups": [
            {
                "name": "segments",
                "rules": [
                    {
                        "alert": a.name,
                        "expr": a.expr,
                        "for": a.for_,
                        "labels": {"severity": a.severity, "service": "segments"},
                        "annotations": {"summary": a.summary, "description": a.description, "runbook": a.runbook},
                    }
                    for a in ALERTS
                ],
            }
        ]
    }


# ---- promtool unit tests ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertCase:
    """Series (promtool expanding notation, one sample per minute) and, at ``at``, the labels
    of each alert expected firing (empty: must stay quiet)."""

    alert: str
    name: str
    series: Mapping[str, str]
    at: str
    expect: tuple[Mapping[str, str], ...] = field(default_factory=tuple)


def _hist(metric: str, labels: str, values: Callable[[float], str]) -> dict[str, str]:
    """Series of a histogram's buckets, ``values(le)`` giving each bucket's (cumulative) values."""
    out = {}
    for le in (*LATENCY_BUCKETS, float("inf")):
        le_text = "+Inf" if le == float("inf") else repr(le)
        out[f'{metric}_bucket{{{labels}, le="{le_text}"}}'] = values(le)
    return out


def _all_within(bound: float, per_minute: int, minutes: int) -> Callable[[float], str]:
    """Every observation at most ``bound`` seconds (``per_minute`` a minute)."""
    return lambda le: f"0+{per_minute}x{minutes}" if le >= bound else f"0x{minutes}"


def _fast_then_slow(minutes_fast: int, minutes: int) -> Callable[[float], str]:
    """100 observations a minute of at most 2.5 s, then only ones between 30 and 60 s."""

    def values(le: float) -> str:
        if le >= 60.0:
            return f"0+100x{minutes}"
        if le >= 2.5:
            return f"0+100x{minutes_fast} {100 * minutes_fast}x{minutes - minutes_fast}"
        return f"0x{minutes}"

    return values


JOB = 'job_name="segmentation"'
C = 'job="segments-python"'

ALERT_TESTS: tuple[AlertCase, ...] = (
    AlertCase(
        "SegmentsLatencyP99OverSLO",
        "changes take about a minute: fires after 10 min",
        _hist("segments_event_to_segment_latency_seconds", C, _all_within(60.0, 100, 30)),
        "20m",
        ({"severity": "page", "service": "segments"},),
    ),
    AlertCase(
        "SegmentsLatencyP99OverSLO",
        "changes take about 2 s: quiet",
        _hist("segments_event_to_segment_latency_seconds", C, _all_within(2.5, 100, 30)),
        "20m",
    ),
    AlertCase(
        "SegmentsLatencyP99OverSLO",
        "slow from minute 15: pending at 24m, not yet firing",
        _hist("segments_event_to_segment_latency_seconds", C, _fast_then_slow(15, 40)),
        "24m",
    ),
    AlertCase(
        "SegmentsLatencyP99OverSLO",
        "slow from minute 15: firing by 28m",
        _hist("segments_event_to_segment_latency_seconds", C, _fast_then_slow(15, 40)),
        "28m",
        ({"severity": "page", "service": "segments"},),
    ),
    AlertCase(
        "SegmentsConsumerLagGrowing",
        "lag grows by 1000 records a minute past 10k: fires",
        {f"flink_taskmanager_job_task_operator_pendingRecords{{{JOB}, subtask_index=\"0\"}}": "5000+1000x40"},
        "35m",
        ({"severity": "page", "service": "segments", "job_name": "segmentation"},),
    ),
    AlertCase(
        "SegmentsConsumerLagGrowing",
        "lag high but shrinking: quiet",
        {f"flink_taskmanager_job_task_operator_pendingRecords{{{JOB}, subtask_index=\"0\"}}": "60000-1000x40"},
        "35m",
    ),
    AlertCase(
        "SegmentsConsumerLagGrowing",
        "lag growing but small: quiet",
        {f"flink_taskmanager_job_task_operator_pendingRecords{{{JOB}, subtask_index=\"0\"}}": "0+100x40"},
        "35m",
    ),
    AlertCase(
        "SegmentsInvalidEventsSpike",
        "10% invalid: fires",
        {
            f"segments_events_received_total{{{C}}}": "0+1000x30",
            f'segments_events_invalid_total{{{C}, reason="schema"}}': "0+100x30",
        },
        "25m",
        ({"severity": "ticket", "service": "segments"},),
    ),
    AlertCase(
        "SegmentsInvalidEventsSpike",
        "1% invalid: quiet",
        {
            f"segments_events_received_total{{{C}}}": "0+1000x30",
            f'segments_events_invalid_total{{{C}, reason="schema"}}': "0+10x30",
        },
        "25m",
    ),
    AlertCase(
        "SegmentsLateEventsHigh",
        "5% late: fires",
        {f"segments_events_valid_total{{{C}}}": "0+1000x40", f"segments_events_late_total{{{C}}}": "0+50x40"},
        "30m",
        ({"severity": "ticket", "service": "segments"},),
    ),
    AlertCase(
        "SegmentsLateEventsHigh",
        "0.1% late: quiet",
        {f"segments_events_valid_total{{{C}}}": "0+1000x40", f"segments_events_late_total{{{C}}}": "0+1x40"},
        "30m",
    ),
    AlertCase(
        "SegmentsCheckpointFailures",
        "two failures at minute 10: fires five minutes later",
        {f"flink_jobmanager_job_numberOfFailedCheckpoints{{{JOB}}}": "0x9 2x20"},
        "16m",
        ({"severity": "ticket", "service": "segments", "job_name": "segmentation"},),
    ),
    AlertCase(
        "SegmentsCheckpointFailures",
        "no failure: quiet",
        {f"flink_jobmanager_job_numberOfFailedCheckpoints{{{JOB}}}": "0x30"},
        "16m",
    ),
    AlertCase(
        "SegmentsCheckpointFailures",
        "an old failure out of the window: quiet again",
        {f"flink_jobmanager_job_numberOfFailedCheckpoints{{{JOB}}}": "0x9 2x40"},
        "35m",
    ),
    AlertCase(
        "SegmentsModelDrift",
        "one feature drifted for 40 min: fires for that feature only",
        {
            'segments_model_feature_psi{model="purchase_propensity", feature="recency_days"}': "0.35x40",
            'segments_model_feature_psi{model="purchase_propensity", feature="frequency"}': "0.05x40",
        },
        "35m",
        ({"severity": "ticket", "service": "segments", "model": "purchase_propensity", "feature": "recency_days"},),
    ),
    AlertCase(
        "SegmentsModelDrift",
        "drift for 20 min only: not yet",
        {'segments_model_feature_psi{model="purchase_propensity", feature="recency_days"}': "0.05x19 0.35x20"},
        "39m",
    ),
    AlertCase(
        "SegmentsNoEvents",
        "events stop at minute 10: fires once 10 min silent + 5 min",
        {f"segments_events_received_total{{{C}}}": "0+100x10 1000x30"},
        "26m",
        ({"severity": "page", "service": "segments"},),
    ),
    AlertCase(
        "SegmentsNoEvents",
        "no metrics at all: fires",
        {'up{job="segments-python"}': "0x30"},
        "10m",
        ({"severity": "page", "service": "segments"},),
    ),
    AlertCase(
        "SegmentsNoEvents",
        "a steady trickle: quiet",
        {f"segments_events_received_total{{{C}}}": "0+5x40"},
        "30m",
    ),
    AlertCase(
        "SegmentsRedisWriteErrors",
        "errors every minute: fires",
        {f'segments_redis_errors_total{{{C}, kind="connection"}}': "0+3x20"},
        "15m",
        ({"severity": "page", "service": "segments"},),
    ),
    AlertCase(
        "SegmentsRedisWriteErrors",
        "no errors: quiet",
        {f'segments_redis_errors_total{{{C}, kind="connection"}}': "0x20"},
        "15m",
    ),
    AlertCase(
        "SegmentsStateCacheMisses",
        "a third of the lookups miss for 40 min: fires",
        {
            f'segments_state_cache_lookups_total{{{C}, result="hit"}}': "0+2000x45",
            f'segments_state_cache_lookups_total{{{C}, result="miss"}}': "0+1000x45",
            f'segments_state_cache_lookups_total{{{C}, result="new"}}': "0+5000x45",
        },
        "40m",
        ({"severity": "ticket", "service": "segments"},),
    ),
    AlertCase(
        "SegmentsStateCacheMisses",
        "misses while the cache fills after a start, then hits: quiet",
        {
            f'segments_state_cache_lookups_total{{{C}, result="hit"}}': "0+100x10 1100+3000x35",
            f'segments_state_cache_lookups_total{{{C}, result="miss"}}': "0+1000x10 10000+50x35",
        },
        "40m",
    ),
    AlertCase(
        "SegmentsJobRestarting",
        "three restarts in 15 min: fires",
        {f"flink_jobmanager_job_numRestarts{{{JOB}}}": "0x5 1 2 3x20"},
        "12m",
        ({"severity": "page", "service": "segments", "job_name": "segmentation"},),
    ),
    AlertCase(
        "SegmentsJobRestarting",
        "one restart: quiet",
        {f"flink_jobmanager_job_numRestarts{{{JOB}}}": "0x5 1x20"},
        "12m",
    ),
)


def tests_document(rules_path: str) -> dict:
    """The promtool test file (tests/alerts_test.yml) as a mapping."""
    by_name = {a.name: a for a in ALERTS}
    tests = []
    for case in ALERT_TESTS:
        alert = by_name[case.alert]
        tests.append(
            {
                "name": f"{case.alert}: {case.name}",
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in case.series.items()],
                "alert_rule_test": [
                    {
                        "eval_time": case.at,
                        "alertname": case.alert,
                        "exp_alerts": [
                            {"exp_labels": dict(labels), "exp_annotations": render_annotations(alert, labels)}
                            for labels in case.expect
                        ],
                    }
                ],
            }
        )
    return {"rule_files": [rules_path], "evaluation_interval": "1m", "tests": tests}
