"""Models published to the running job (flink_jobs/ml/published.py): the record, its checks, and
the scorer taking it in place of the model of its name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime", reason="onnxruntime is a main dependency: pip install -e .")

from flink_jobs.core.loader import load_catalog  # noqa: E402
from flink_jobs.ml.cards import ModelCardError  # noqa: E402
from flink_jobs.ml.observed import ObservedScorer  # noqa: E402
from flink_jobs.ml.published import model_record  # noqa: E402
from flink_jobs.runtime.metrics import JobMetrics  # noqa: E402
from flink_jobs.runtime.rule_files import MODEL_PREFIX  # noqa: E402

from .published_models import constant_propensity  # noqa: E402

SCORES = load_catalog(Path(__file__).resolve().parents[3] / "rules" / "catalog.yaml").scores
BUYER = {
    "recency_days": 5.0, "tenure_days": 200.0, "purchases_30d": 1.0, "purchases_90d": 2.0, "purchases_365d": 4.0,
    "revenue_365d": 120.0, "avg_order_value_365d": 30.0,
}


def test_the_runtime_and_the_publisher_agree_on_where_models_go():
    assert model_record.__module__ == "flink_jobs.ml.published"
    from flink_jobs.ml import published

    assert published.MODEL_PREFIX == MODEL_PREFIX


def test_a_published_model_replaces_the_one_of_its_name(tmp_path):
    key, value, card = model_record(constant_propensity(tmp_path, 0.95, "2.0.0"))
    assert (key, card.version) == ("models/purchase_propensity", "2.0.0")
    scorer = ObservedScorer.load("", JobMetrics(), SCORES)
    before = scorer.score("c", BUYER)["purchase_propensity"]
    assert scorer.take_record(key, value, SCORES) == "purchase_propensity 2.0.0 in use in place of 1.0.0"
    assert scorer.versions["purchase_propensity"] == "2.0.0"
    assert scorer.score("c", BUYER)["purchase_propensity"] == pytest.approx(0.95) != before
    assert scorer.take_record(key, None, SCORES) == "purchase_propensity withdrawn"
    assert "purchase_propensity" not in scorer.score("c", BUYER) and "purchase_propensity" not in scorer.versions


def _tampered(value: str, **card) -> str:
    raw = json.loads(value)
    raw["card"].update(card)
    return json.dumps(raw)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda key, value: (key, value[:-20] + '"}'), "is not base64|does not match its card"),
        (lambda key, value: ("models/churn", value), "the card names the model 'purchase_propensity': publish it under models/purchase_propensity"),
        (lambda key, value: (key, "{not json"), "the record is not JSON"),
        (lambda key, value: (key, _tampered(value, score={"name": "churn_risk", "output": "probabilities", "transform": "column", "column": 1})), "score 'churn_risk' is not one of the scores rules know"),
        (lambda key, value: (key, _tampered(value, model={**json.loads(value)["card"]["model"], "input": {"name": "x"}})), "the model's input is named 'features', the card says 'x'"),
    ],
)
def test_a_broken_published_model_is_rejected_and_the_models_in_use_stay(tmp_path, change, message):
    key, value, _ = model_record(constant_propensity(tmp_path, 0.95, "2.0.0"))
    scorer = ObservedScorer.load("", JobMetrics(), SCORES)
    with pytest.raises(ModelCardError, match=message):
        scorer.take_record(*change(key, value), SCORES)
    assert scorer.versions["purchase_propensity"] == "1.0.0"


def test_the_publisher_refuses_a_model_file_that_is_not_its_cards(tmp_path):
    path = constant_propensity(tmp_path, 0.95, "2.0.0")
    (tmp_path / "purchase_propensity.onnx").write_bytes((tmp_path / "purchase_propensity.onnx").read_bytes() + b"\0")
    with pytest.raises(ModelCardError, match="does not match its card"):
        model_record(path)
