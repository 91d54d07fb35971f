"""Model scores in the running job: the ONNX models score customers and rules on scores change
memberships, on the real stack, in both Python execution modes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flink_jobs.core.engine import EngineConfig, SegmentEngine
from flink_jobs.core.loader import load_rules
from flink_jobs.core.runner import LocalRunner
from flink_jobs.ml.serving import OnnxScorer
from flink_jobs.runtime.serde import EventSchema, encode_change, parse_event

from .conftest import T0, Scenario, event
from .test_segmentation_job import _by_customer

pytestmark = pytest.mark.integration

RULES = Path(__file__).resolve().parents[2] / "rules"
DAY = 24 * 3600 * 1000


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_a_rule_on_a_model_score_changes_membership_in_the_running_job(scenario: Scenario, mode: str):
    events = [event(f"p{i}", "c-loyal", "purchase", i * 7 * DAY, order_id=f"o{i}", revenue=120, items=2) for i in range(8)]
    events.append(event("v1", "c-browser", "page_view", 0, url="/"))
    scenario.produce(events)
    scenario.run_bounded(
        **{
            "job.rules_path": str(RULES),
            "job.models": "true",
            "job.python_execution_mode": mode,
            "events.out_of_orderness": "1m",
        }
    )

    runner = LocalRunner(SegmentEngine(load_rules([str(RULES)]), EngineConfig(), scorer=OnnxScorer()), out_of_orderness=60_000)
    for raw in events:
        runner.feed(parse_event(json.dumps(raw).encode(), schema=EventSchema(runner.engine.compiled.rules.catalog), now_ms=T0 + 400 * DAY))
    runner.advance(2**63 - 1)
    expected = [(c.customer_id, json.loads(encode_change(c))) for c in runner.changes]

    got = scenario.read("changes")
    # Same changes as the pure engine with the same models; scores travel in the change records.
    assert {k: [(v["segment"], v["kind"], v["event_time"]) for v in vs] for k, vs in _by_customer(got).items()} == {
        k: [(v["segment"], v["kind"], v["event_time"]) for v in vs] for k, vs in _by_customer(expected).items()
    }
    entered = [(k, v) for k, v in got if v["segment"] == "high_purchase_propensity" and v["kind"] == "enter"]
    assert [k for k, _ in entered] == ["c-loyal"]
    assert entered[0][1]["scores"]["purchase_propensity"] >= 0.8
    assert "high_purchase_propensity" in scenario.redis_state()["cust:c-loyal"]
