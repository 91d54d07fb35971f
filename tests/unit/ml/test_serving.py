"""OnnxScorer and the model cards in model_artifacts/ (flink_jobs/ml/serving.py, cards.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is a main dependency: pip install -e .")

from flink_jobs.core.engine import SegmentEngine  # noqa: E402
from flink_jobs.core.loader import load_catalog, load_rules  # noqa: E402
from flink_jobs.core.model_inputs import BY_NAME, MODEL_INPUT_NAMES  # noqa: E402
from flink_jobs.ml.cards import ModelCardError, card_paths, cards_for, file_sha256, load_card  # noqa: E402
from flink_jobs.ml.serving import DEFAULT_ARTIFACTS, OnnxScorer  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
SCORES = load_catalog(REPO / "rules" / "catalog.yaml").scores  # the scores rules may test
ARTIFACTS = REPO / "model_artifacts"

CUSTOMER = {
    "recency_days": 5.0, "tenure_days": 200.0, "purchases_30d": 1.0, "purchases_90d": 2.0, "purchases_365d": 4.0,
    "revenue_365d": 120.0, "avg_order_value_365d": 30.0, "events_5m": 3.0, "events_1h": 10.0,
    "active_minutes_1h": 6.0, "page_view_share_1h": 0.3, "product_views_1h": 5.0, "sessions_1h": 1.0,
}
BOT = dict(CUSTOMER, events_5m=250.0, events_1h=260.0, active_minutes_1h=2.0, page_view_share_1h=1.0, product_views_1h=0.0)


@pytest.fixture(scope="module")
def scorer() -> OnnxScorer:
    return OnnxScorer(ARTIFACTS)


def test_default_folder_is_the_checked_in_artifacts():
    assert DEFAULT_ARTIFACTS == ARTIFACTS


def test_every_card_matches_its_model(scorer):
    cards = [load_card(p) for p in card_paths(ARTIFACTS)]
    assert sorted(c.name for c in cards) == ["anomaly", "customer_cluster", "purchase_propensity"]
    for card in cards:
        assert file_sha256(card.model_file) == card.sha256
        session = ort.InferenceSession(str(card.model_file), providers=["CPUExecutionProvider"])
        (tensor,) = session.get_inputs()
        assert (tensor.name, tensor.type, tensor.shape[1]) == (card.input_tensor, "tensor(float)", len(card.inputs))
        assert [o.name for o in session.get_outputs()] == list(card.outputs)
        assert set(card.inputs) <= set(MODEL_INPUT_NAMES)
        assert set(card.references) == set(card.inputs)
        for item in card.raw["inputs"]:
            assert item["unit"] == BY_NAME[item["name"]].unit
    assert set(scorer.names) <= set(SCORES)
    assert set(scorer.names) == set(SCORES)  # every score rules know is published


def test_the_engine_supplies_every_models_inputs(scorer):
    engine = SegmentEngine(load_rules([REPO / "rules"]))
    available = engine.model_features(engine.new_state("c"), 0)
    assert scorer.missing_inputs(available) == {}
    assert scorer.missing_inputs(["recency_days"])["anomaly"] == list(scorer.cards["anomaly"].inputs)


def test_scores_are_in_range_and_separate_a_bot(scorer):
    person, bot = scorer.score("c1", CUSTOMER), scorer.score("c2", BOT)
    assert set(person) == set(SCORES)
    assert 0.0 <= person["purchase_propensity"] <= 1.0
    assert person["customer_cluster"] in {float(i) for i in range(len(scorer.cards["customer_cluster"].raw["cluster_names"]))}
    assert person["anomaly_score"] < 0.6 <= bot["anomaly_score"]
    assert person["event_rate_z"] < 3 <= bot["event_rate_z"]


def test_batch_equals_one_by_one_and_the_memo_changes_nothing(scorer):
    rows = [dict(CUSTOMER, revenue_365d=float(r), events_5m=float(r % 40)) for r in range(0, 400, 7)] + [BOT]
    uncached = OnnxScorer(ARTIFACTS, cache_size=0)
    single = [uncached.score("c", row) for row in rows]
    assert uncached.score_batch(rows) == single
    assert scorer.score_batch(rows) == single
    assert scorer.score_batch(rows) == single  # now all from the memo


def test_gate_and_missing_inputs_leave_scores_out(scorer):
    no_purchases = scorer.score("c", dict(CUSTOMER, purchases_365d=0.0))
    assert "purchase_propensity" not in no_purchases and "customer_cluster" not in no_purchases
    assert set(no_purchases) == {"anomaly_score", "event_rate_z"}
    assert scorer.score("c", {}) == {}


def test_observer_sees_each_onnxruntime_call():
    calls = []
    scorer = OnnxScorer(ARTIFACTS, models=["anomaly"], observer=lambda m, s, v: calls.append((m, s, list(v))))
    out = scorer.score_batch([CUSTOMER, BOT, CUSTOMER])
    assert [(m, len(v)) for m, _, v in calls] == [("anomaly", 2)]  # the repeated row is scored once
    assert calls[0][2] == [out[0]["anomaly_score"], out[1]["anomaly_score"]]
    assert calls[0][1] > 0


# ---- clear errors on broken artifacts ---------------------------------------------------------------


@pytest.fixture()
def artifacts(tmp_path: Path) -> Path:
    folder = tmp_path / "artifacts"
    shutil.copytree(ARTIFACTS, folder, ignore=shutil.ignore_patterns("README.md"))
    return folder


def _edit(folder: Path, name: str, change) -> Path:
    path = folder / f"{name}.card.json"
    card = json.loads(path.read_text())
    change(card)
    path.write_text(json.dumps(card))
    return path


def test_a_card_listing_fewer_inputs_than_the_model_takes_is_refused(artifacts):
    path = _edit(artifacts, "anomaly", lambda c: c["inputs"].pop())
    with pytest.raises(ModelCardError) as e:
        OnnxScorer(artifacts)
    text = str(e.value)
    assert str(artifacts / "anomaly.onnx") in text and str(path) in text
    assert "the model's input has shape [None, 6], the card lists 5 features (events_5m," in text
    assert "help: regenerate with `python -m flink_jobs.ml.train`" in text


def test_a_renamed_output_and_input_tensor_are_both_reported(artifacts):
    def change(c):
        c["outputs"][1]["name"] = "probs"
        c["score"]["output"] = "probs"
        c["model"]["input"]["name"] = "x"

    _edit(artifacts, "purchase_propensity", change)
    with pytest.raises(ModelCardError) as e:
        OnnxScorer(artifacts)
    text = str(e.value)
    assert "purchase_propensity.onnx" in text
    assert "the model's input is named 'features', the card says 'x'" in text
    assert "the model's outputs are ['label', 'probabilities'], the card says ['label', 'probs']" in text


def test_a_replaced_model_file_is_refused(artifacts):
    shutil.copy(artifacts / "customer_cluster.onnx", artifacts / "anomaly.onnx")
    with pytest.raises(ModelCardError, match=r"anomaly\.onnx: sha256 .* does not match its card"):
        OnnxScorer(artifacts)


def test_unknown_inputs_scores_and_units_are_all_listed(artifacts):
    def change(c):
        c["inputs"][0]["name"] = "recency_weeks"
        c["inputs"][1]["unit"] = "weeks"
        c["score"]["name"] = "propensity"

    path = _edit(artifacts, "purchase_propensity", change)
    with pytest.raises(ModelCardError) as e:
        load_card(path, SCORES)
    text = str(e.value)
    assert text.startswith(f"{path}: invalid model card")
    assert "input 'recency_weeks' is not a model input the engine computes" in text
    assert "input 'tenure_days' has unit 'weeks', the engine computes it in 'days'" in text
    assert "score 'propensity' is not one of the scores rules know" in text


def test_an_empty_folder_says_how_to_get_models(tmp_path):
    with pytest.raises(ModelCardError, match="no model cards .*python -m flink_jobs.ml.train"):
        OnnxScorer(tmp_path)


def test_the_job_runs_the_models_whose_scores_the_catalogue_declares():
    kept, left_out = cards_for(ARTIFACTS, SCORES)
    assert ({c.name for c in kept}, left_out) == ({"purchase_propensity", "customer_cluster", "anomaly"}, [])
    # A team's own catalogue that names none of their scores runs without them.
    team = load_catalog(REPO / "tests" / "integration" / "team_rules" / "catalog.yaml")
    kept, left_out = cards_for(ARTIFACTS, team.scores)
    assert (kept, {c.name for c in left_out}) == ([], {"purchase_propensity", "customer_cluster", "anomaly"})


def test_a_catalogue_declaring_part_of_a_models_scores_is_refused():
    # The anomaly model publishes anomaly_score and its outlier guard's event_rate_z.
    with pytest.raises(ModelCardError, match="outlier_guard.name 'event_rate_z' is not one of the scores rules know"):
        cards_for(ARTIFACTS, ["anomaly_score"])
