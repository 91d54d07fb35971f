"""onnxruntime scores == scikit-learn scores for the exported models.

Trains each model with the pipeline's own functions on a small slice, exports it with its card,
loads it with OnnxScorer (which checks the card) and compares on every training row.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="needs the train extra: pip install -e '.[train]' (deploy/local/setup.sh installs it)")
pytest.importorskip("skl2onnx", reason="needs the train extra: pip install -e '.[train]'")
pytest.importorskip("lifetimes", reason="needs the train extra: pip install -e '.[train]'")

from flink_jobs import synthetic  # noqa: E402
from flink_jobs.ml import datasets, train  # noqa: E402
from flink_jobs.ml.serving import OnnxScorer  # noqa: E402


@pytest.fixture(scope="module")
def cdnow_slice():
    return datasets.cdnow_rows({f"cdnow-{n:05d}" for n in range(1, 23_571, 8)})  # ~2,950 customers


def test_purchase_propensity_onnx_equals_sklearn(tmp_path, cdnow_slice):
    model, metrics = train.train_propensity(cdnow_slice, tmp_path)
    assert 0.5 < metrics["roc_auc"] <= 1.0
    x = train._matrix(cdnow_slice.features, train.PROPENSITY_INPUTS)
    want = model.predict_proba(x)[:, 1]
    got = [s["purchase_propensity"] for s in OnnxScorer(tmp_path, cache_size=0).score_batch(cdnow_slice.features)]
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_customer_cluster_onnx_equals_sklearn(tmp_path, cdnow_slice):
    pipe, metrics = train.train_clusters(cdnow_slice, tmp_path, ks=(3,))
    x = train._matrix(cdnow_slice.features, train.CLUSTER_INPUTS)
    want = pipe.predict(x)
    got = np.array([s["customer_cluster"] for s in OnnxScorer(tmp_path, cache_size=0).score_batch(cdnow_slice.features)])
    # float32 in ONNX against float64 in scikit-learn: a point almost equidistant from two
    # centres may flip; allow at most 0.2% of rows.
    assert np.mean(got != want) <= 0.002
    # Clusters are numbered from least to most valuable.
    medians = [c["median_revenue_365d"] for c in metrics["clusters"]]
    assert medians == sorted(medians)


def test_anomaly_onnx_equals_sklearn(tmp_path):
    feeds = (
        synthetic.FeedConfig(customers=300, events=8_000, seed=21),
        synthetic.FeedConfig(customers=300, events=8_000, seed=22, personas={"browser": 0.6, "buyer": 0.3, "bot": 0.1}),
    )
    train_rows, test_rows = (datasets.synthetic_rows(f) for f in feeds)
    model, metrics = train.train_anomaly(train_rows, test_rows, tmp_path, feeds)
    assert metrics["roc_auc_rows"] > 0.8
    x = train._matrix(test_rows.features, train.ANOMALY_INPUTS)
    want = -model.score_samples(x)
    got = [s["anomaly_score"] for s in OnnxScorer(tmp_path, cache_size=0).score_batch(test_rows.features)]
    np.testing.assert_allclose(got, want, atol=1e-5)
