"""What the core's tests build rules and histories with."""

from __future__ import annotations

from pathlib import Path

from flink_jobs.core import loader
from flink_jobs.core.conditions import Absence, Aggregate
from flink_jobs.core.durations import DAY, MINUTE, SECOND
from flink_jobs.core.engine import EngineConfig, SegmentEngine
from flink_jobs.core.model import Comparison, Condition, Event, EventSelector, PropertyFilter, RuleSet, Segment
from flink_jobs.core.runner import LocalRunner
from flink_jobs.core.scoring import Scorer

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
# The shipped example catalogue: the events every test's rules are written against.
CATALOG = loader.load_catalog(Path(__file__).resolve().parents[3] / "rules" / "catalog.yaml")


# ---- rules as the loader reads them ---------------------------------------------------------------


def condition(yaml_condition: str, **options) -> Condition:
    """Load one segment whose ``when`` is the given YAML (indented under it) and return it."""
    body = "\n".join("      " + line for line in yaml_condition.strip("\n").splitlines())
    text = f"version: 1\nsegments:\n  - id: s\n    when:\n{body}\n"
    rules = loader.load_rules_from_texts({"t.yaml": text}, catalog=CATALOG, **options)
    return rules.segments[0].condition


def selector(*types: str, where: tuple[PropertyFilter, ...] = ()) -> EventSelector:
    return EventSelector(tuple(types), where)


# ---- scenarios of the engine ------------------------------------------------------------------------


def sel(*types: str, **where: object) -> EventSelector:
    return EventSelector(types, tuple(PropertyFilter(p, Comparison("equals", v)) for p, v in where.items()))


def seg(sid: str, condition, **kw) -> Segment:
    return Segment(sid, "test", "tests", condition, **kw)


def rules(*segments: Segment) -> RuleSet:
    return RuleSet(segments, "rs-1", CATALOG)


def ev(n: int, kind: str, at: int, customer: str = "c1", **props) -> Event:
    return Event(f"e{n}", customer, kind, T0 + at, props)


def run(
    ruleset: RuleSet,
    events,
    *,
    until: int,
    bound: int = 5 * SECOND,
    config: EngineConfig | None = None,
    scorer: Scorer | None = None,
) -> LocalRunner:
    runner = LocalRunner(SegmentEngine(ruleset, config, scorer), out_of_orderness=bound)
    runner.feed_all(events)
    runner.advance(T0 + until)
    return runner


def changes(runner: LocalRunner) -> list[tuple[str, str, str, int]]:
    return [(c.customer_id, c.segment_id, c.kind, c.event_time - T0) for c in runner.changes]


VIEWED_TWICE = seg(
    "product_viewed_repeatedly",
    Aggregate("count", sel("product_view"), None, 10 * MINUTE, Comparison("greater_than", 2)),
)
ABANDONED = seg(
    "abandoned_cart",
    Absence(sel("cart_add"), sel("checkout", "purchase"), 15 * MINUTE, DAY, "cart_id"),
)
