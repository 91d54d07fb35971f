"""The Grafana dashboard of the segmentation job, built with grafanalib from promql.QUERIES.

Rows, top to bottom, in the order on call reads them: freshness, throughput, data quality,
segments, rules, model, infra. The datasource is a template variable (``$datasource``), so the
same JSON works in any Grafana with a Prometheus datasource.
"""

from __future__ import annotations

from typing import Sequence

from alerts import CACHE_MISS_RATIO, LATENCY_SLO_SECONDS, PSI_DRIFT
from grafanalib.core import (
    Dashboard,
    GridPos,
    RowPanel,
    Stat,
    Target,
    Template,
    Templating,
    Threshold,
    Time,
    TimeSeries,
)
from promql import QUERIES

UID = "segments-job"
DS = "${datasource}"
WIDTH = 24


def _targets(keys: Sequence[str]) -> list[Target]:
    return [
        Target(expr=QUERIES[k].expr, legendFormat=QUERIES[k].legend, refId=chr(ord("A") + i), datasource=DS)
        for i, k in enumerate(keys)
    ]


def _series(title: str, keys: Sequence[str], gp: GridPos, *, unit: str | None = None, description: str = "", **kw):
    return TimeSeries(
        title=title,
        dataSource=DS,
        targets=_targets(keys),
        gridPos=gp,
        unit=unit or QUERIES[keys[0]].unit,
        description=description,
        **kw,
    )


def _stat(title: str, key: str, gp: GridPos, thresholds: list[Threshold] | None = None, description: str = ""):
    return Stat(
        title=title,
        dataSource=DS,
        targets=_targets([key]),
        gridPos=gp,
        format=QUERIES[key].unit,
        reduceCalc="lastNotNull",
        thresholds=thresholds or [Threshold("green", 0, 0.0)],
        description=description,
    )


def _red_above(value: float) -> list[Threshold]:
    return [Threshold("green", 0, 0.0), Threshold("red", 1, float(value))]


class _Layout:
    """Places panels left to right, rows below each other (Grafana's 24-column grid)."""

    def __init__(self) -> None:
        self.y = 0
        self.panels: list = []
        self._id = 0

    def row(self, title: str, panels: Sequence[tuple[int, int, object]]) -> None:
        """``panels``: (width, height, builder(GridPos) -> panel)."""
        self.panels.append(RowPanel(title=title, gridPos=GridPos(h=1, w=WIDTH, x=0, y=self.y)))
        self.y += 1
        x, height = 0, 0
        for w, h, build in panels:
            if x + w > WIDTH:
                self.y += height
                x, height = 0, 0
            self.panels.append(build(GridPos(h=h, w=w, x=x, y=self.y)))  # type: ignore[operator]
            x += w
            height = max(height, h)
        self.y += height


def build_dashboard() -> Dashboard:
    lay = _Layout()
    lay.row(
        "Freshness",
        [
            (6, 6, lambda gp: _stat(
                "p99 event -> Redis", "latency_p99", gp, _red_above(LATENCY_SLO_SECONDS),
                f"SLO: {LATENCY_SLO_SECONDS}s (alert SegmentsLatencyP99OverSLO).",
            )),
            (18, 6, lambda gp: _series(
                "Event time -> change in Redis", ["latency_p50", "latency_p95", "latency_p99", "ingest_latency_p99"], gp,
                description="Includes the watermark wait (events.out_of_orderness): a change is only made once the "
                "job knows no earlier event of the customer can still arrive.",
            )),
        ],
    )  # fmt: skip
    lay.row(
        "Throughput",
        [
            (6, 6, lambda gp: _stat("events in /s", "events_in_rate", gp)),
            (9, 6, lambda gp: _series("Events and changes", ["events_in_rate", "events_valid_rate", "changes_rate"], gp)),
            (9, 6, lambda gp: _series("Redis writes", ["redis_written_rate"], gp, description="stale: refused as older than the last change applied (replays converge).")),
        ],
    )  # fmt: skip
    lay.row(
        "Data quality",
        [
            (8, 7, lambda gp: _series("Invalid events (DLQ) by reason", ["invalid_rate_by_reason"], gp, stacking={"mode": "normal"})),
            (8, 7, lambda gp: _series("Invalid and late share", ["invalid_ratio", "late_ratio"], gp)),
            (8, 7, lambda gp: _series(
                "Duplicates, late, forced", ["duplicate_rate", "late_rate", "forced_instants_rate"], gp,
                description="forced: instants processed before the watermark because a customer's buffer overflowed "
                "(events.max_buffered); results for that customer may then depend on arrival order.",
            )),
        ],
    )  # fmt: skip
    lay.row(
        "Segments",
        [
            (12, 8, lambda gp: _series(
                "Members by segment", ["members"], gp,
                description="The job's view: enters minus exits since its workers started. Redis holds the full count.",
            )),
            (12, 8, lambda gp: _series("Enters and exits by segment", ["changes_by_segment"], gp)),
        ],
    )  # fmt: skip
    lay.row(
        "Rules",
        [
            (8, 5, lambda gp: _series("Rule set version in use", ["rules_version"], gp, unit="none")),
            (8, 5, lambda gp: _series("Rule sets loaded / rejected (1 h)", ["rules_loaded_1h", "rules_rejected_1h"], gp)),
            (8, 5, lambda gp: _series("Timers fired", ["timers_rate"], gp)),
        ],
    )  # fmt: skip
    lay.row(
        "Model",
        [
            (8, 7, lambda gp: _series("Inference p99", ["inference_p99"], gp)),
            (8, 7, lambda gp: _series("Median score", ["score_p50"], gp)),
            (8, 7, lambda gp: _series(
                "Feature drift (PSI)", ["feature_psi"], gp,
                description=f"Against the model card's reference; above {PSI_DRIFT} for 30 min alerts (SegmentsModelDrift).",
            )),
        ],
    )  # fmt: skip
    lay.row(
        "Infra",
        [
            (8, 7, lambda gp: _series("Kafka consumer lag", ["consumer_lag"], gp, description="Flink's pendingRecords of the events source.")),
            (8, 7, lambda gp: _series(
                "Catching up: watermarks deferred", ["watermarks_deferred"], gp,
                description="Non-zero while the watermark is over 60 s behind the clock (a replay or a backlog): "
                "the batcher then applies a watermark at most every job.catch_up_release_interval, so changes "
                "come in bursts until the job is live again. Zero when live.",
            )),
            (8, 7, lambda gp: _series("Back-pressure and busy time", ["backpressure", "busy"], gp)),
            (8, 7, lambda gp: _series("Checkpoints", ["checkpoint_duration"], gp)),
            (8, 7, lambda gp: _series("Checkpoint failures and restarts", ["checkpoint_failures_10m", "restarts_15m"], gp)),
            (8, 7, lambda gp: _series("Redis flush p99", ["redis_write_p99"], gp)),
            (8, 7, lambda gp: _series("Redis errors", ["redis_error_rate"], gp)),
            (8, 7, lambda gp: _series(
                "State cache lookups", ["state_cache_lookups"], gp, stacking={"mode": "normal"},
                description="Customer states the segment function looked up: hit = still decoded in memory, "
                "miss = read from Flink state and decoded (and another evicted), new = first event of a customer.",
            )),
            (8, 7, lambda gp: _series(
                "State cache misses", ["state_cache_miss_ratio"], gp,
                description=f"Of the lookups of existing customers. Above {CACHE_MISS_RATIO:.0%} for 30 min opens a "
                "ticket (SegmentsStateCacheMisses): the cache holds fewer customers than are active.",
            )),
            (8, 7, lambda gp: _series(
                "State cache size", ["state_cache_customers"], gp,
                description="Decoded customer states held, all processes: each parallel task holds as many as "
                "fit in job.state_cache_memory (2-8 KB each with rules/; see State cache memory).",
            )),
            (8, 7, lambda gp: _series(
                "State cache memory", ["state_cache_bytes"], gp,
                description="Python memory of the cached states, all processes, estimated from a sample of them: "
                "up to job.state_cache_memory per parallel task, reserved in the TaskManager as task off-heap "
                "memory (outside the JVM heap in thread mode).",
            )),
            (8, 7, lambda gp: _series(
                "Python GC pauses (share of time)", ["python_gc_share"], gp,
                description="Generation 2 should stay near 0 (long-lived objects are frozen, see "
                "job.python_full_gc_interval); 'full' is the periodic collection of everything.",
            )),
            (8, 7, lambda gp: _series(
                "Python GC: garbage cycles found", ["python_gc_found"], gp,
                description="Objects in unreachable reference cycles. Long-lived objects are frozen out of the "
                "young generations, so cycles among them wait for the 'full' collection: a steadily growing "
                "'full' rate means memory held that long.",
            )),
        ],
    )  # fmt: skip

    return Dashboard(
        title="Segmentation job",
        uid=UID,
        description="Real-time customer segmentation on Flink: freshness, throughput, data quality, segments, "
        "rules, models, infra. Generated by deploy/observability/generate.py; do not edit the JSON by hand.",
        tags=["segments", "flink"],
        timezone="utc",
        refresh="30s",
        time=Time("now-1h", "now"),
        templating=Templating(
            list=[
                Template(
                    name="datasource",
                    label="Prometheus",
                    query="prometheus",
                    type="datasource",
                    default="Prometheus",
                    includeAll=False,
                )
            ]
        ),
        panels=lay.panels,
    ).auto_panel_ids()


def dashboard_keys() -> list[str]:
    """Keys of QUERIES that appear in the dashboard, in panel order."""
    by_expr = {q.expr: k for k, q in QUERIES.items()}
    keys: list[str] = []
    for panel in build_dashboard().panels:
        for target in getattr(panel, "targets", []) or []:
            keys.append(by_expr[target.expr])
    return keys
