"""Model scores in the running job: the ONNX models score customers and rules on scores change
memberships, on the real stack, in both Python execution modes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from flink_jobs.core.engine import EngineConfig, SegmentEngine
from flink_jobs.core.loader import load_rules
from flink_jobs.core.runner import LocalRunner
from flink_jobs.ml.published import model_record
from flink_jobs.ml.serving import OnnxScorer
from flink_jobs.runtime.serde import EventSchema, encode_change, parse_event
from tests.unit.ml.published_models import constant_propensity

from .conftest import T0, Scenario, event, model_versions_of
from .test_segmentation_job import _by_customer

pytestmark = pytest.mark.integration

RULES = Path(__file__).resolve().parents[2] / "rules"
DAY = 24 * 3600 * 1000
MINUTE = 60_000


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
    expected = [(c.customer_id, json.loads(encode_change(c, model_versions_of(runner)))) for c in runner.changes]

    got = scenario.read("changes")
    # Same changes as the pure engine with the same models; scores travel in the change records.
    assert {k: [(v["segment"], v["kind"], v["event_time"]) for v in vs] for k, vs in _by_customer(got).items()} == {
        k: [(v["segment"], v["kind"], v["event_time"]) for v in vs] for k, vs in _by_customer(expected).items()
    }
    entered = [(k, v) for k, v in got if v["segment"] == "high_purchase_propensity" and v["kind"] == "enter"]
    assert [k for k, _ in entered] == ["c-loyal"]
    assert entered[0][1]["scores"]["purchase_propensity"] >= 0.8
    assert "high_purchase_propensity" in scenario.redis_state()["cust:c-loyal"]


def _viewer(n: int, at: int) -> list[dict]:
    """Three product views: a repeat_product_viewer entry, to know the job got this far."""
    return [event(f"v{n}-{i}", f"c-clock{n}", "product_view", at + i * 1000, product_id="p1") for i in range(3)]


def _entered(scenario: Scenario, customer: str, segment: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for key, value in scenario.read("changes"):
            if key == customer and value["segment"] == segment and value["kind"] == "enter":
                return value
        time.sleep(1)
    raise AssertionError(f"{customer} did not enter {segment}: {scenario.read('changes')}")


def test_a_model_published_to_the_running_job_scores_at_once_and_a_bad_one_is_rejected(scenario: Scenario, tmp_path, capsys):
    from kafka import KafkaConsumer, KafkaProducer

    from flink_jobs.cli import publish_model
    from flink_jobs.cli.segments import main as segments

    settings = {"job.rules_path": str(RULES), "events.out_of_orderness": "1m"}
    scenario.produce([event("b1", "c-buyer", "purchase", 0, order_id="o1", revenue=40, items=1), *_viewer(1, 10 * MINUTE)])
    scenario.produce(_viewer(2, 20 * MINUTE))  # moves the watermark past the first viewer
    job = scenario.start_unbounded(**settings)
    try:
        first = _entered(scenario, "c-clock1", "repeat_product_viewer")
        assert first["model_versions"]["purchase_propensity"] == "1.0.0", first
        assert "high_purchase_propensity" not in scenario.redis_state().get("cust:c-buyer", {})

        # Publish a new version with the command a data scientist runs: the job answers.
        card = constant_propensity(tmp_path / "v2", 0.95, "2.0.0")
        argv = ["publish-model", str(card), "--rules", str(RULES), "--wait", "90"] + scenario.settings(**settings)
        assert segments(argv) == publish_model.EXIT_ACCEPTED
        assert "accepted, purchase_propensity 2.0.0 in use in place of 1.0.0" in capsys.readouterr().out

        # The buyer's next instant is scored by it: no restart.
        scenario.produce([event("b2", "c-buyer", "page_view", 30 * MINUTE, url="/"), *_viewer(3, 40 * MINUTE), *_viewer(4, 50 * MINUTE)])
        entered = _entered(scenario, "c-buyer", "high_purchase_propensity")
        assert entered["scores"]["purchase_propensity"] == pytest.approx(0.95)
        assert entered["model_versions"]["purchase_propensity"] == "2.0.0"
        # What a website's support page shows: the membership as the job wrote it, and why.
        capsys.readouterr()
        assert segments(["explain", "--live", "c-buyer", *scenario.settings(**settings)]) == 0
        live = capsys.readouterr().out
        assert "high_purchase_propensity: since" in live and f"rules {entered['rule_version']}" in live
        assert "because score purchase_propensity = 0.95 >= 0.8" in live and "purchase_propensity 2.0.0" in live

        # A model that does not match its card, written to the topic by hand: the job rejects it
        # and says so on the status topic; version 2.0.0 keeps scoring.
        key, value, _ = model_record(constant_propensity(tmp_path / "v3", 0.01, "3.0.0"))
        broken = json.loads(value)
        broken["onnx"] = broken["onnx"][:-8] + "AAAAAAA="
        at = int(time.time() * 1000)
        producer = KafkaProducer(bootstrap_servers=scenario.stack.bootstrap)
        producer.send(scenario.topics["rules"], key=key.encode(), value=json.dumps(broken).encode()).get(timeout=30)
        producer.close()
        consumer = KafkaConsumer(scenario.topics["status"], bootstrap_servers=scenario.stack.bootstrap, auto_offset_reset="earliest")
        answers = publish_model._answers(consumer, "purchase_propensity", at, 60)
        [(_, rejected)] = answers.items()
        assert rejected["state"] == "rejected" and "does not match its card" in rejected["detail"]

        scenario.produce([event("o1", "c-other", "purchase", 60 * MINUTE, order_id="o2", revenue=40, items=1), *_viewer(5, 70 * MINUTE), *_viewer(6, 80 * MINUTE)])
        other = _entered(scenario, "c-other", "high_purchase_propensity")
        assert other["model_versions"]["purchase_propensity"] == "2.0.0"
        assert "high_purchase_propensity" in scenario.redis_state()["cust:c-other"]
    finally:
        job.cancel().result()
