"""PSI and the sliding-window drift monitor (flink_jobs/ml/drift.py)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from flink_jobs.ml.cards import ModelCard, Reference, ScoreSpec
from flink_jobs.ml.drift import EPSILON, DriftMonitor, bin_index, histogram, psi


def test_psi_of_identical_distributions_is_zero():
    assert psi([0.25, 0.25, 0.5], [0.25, 0.25, 0.5]) == 0.0


def test_psi_matches_the_formula_on_a_known_shift():
    expected, actual = [0.5, 0.5], [0.8, 0.2]
    want = (0.8 - 0.5) * math.log(0.8 / 0.5) + (0.2 - 0.5) * math.log(0.2 / 0.5)
    assert psi(expected, actual) == pytest.approx(want)
    assert psi(expected, actual) == pytest.approx(0.4159, abs=1e-4)  # "shifted" by any rule of thumb


def test_empty_bins_are_clipped_to_epsilon():
    # Empty on both sides: contributes nothing. Empty on one side: finite, large.
    assert psi([0.0, 1.0], [0.0, 1.0]) == 0.0
    one_sided = psi([0.0, 1.0], [0.1, 0.9])
    want = (0.1 - EPSILON) * math.log(0.1 / EPSILON) + (0.9 - 1.0) * math.log(0.9 / 1.0)
    assert one_sided == pytest.approx(want)
    assert math.isfinite(one_sided) and one_sided > 0.25


def test_psi_rejects_different_bins():
    with pytest.raises(ValueError, match="3 expected bins but 2 actual"):
        psi([0.2, 0.3, 0.5], [0.5, 0.5])


def test_bins_are_left_closed_with_open_ends():
    edges = [1.0, 5.0]
    assert [bin_index(edges, v) for v in (-3, 0.999, 1.0, 4.9, 5.0, 1e9)] == [0, 0, 1, 1, 2, 2]
    assert histogram(edges, [0, 1, 2, 5]) == [0.25, 0.5, 0.25]


def _card(name: str, inputs: dict[str, Reference]) -> ModelCard:
    return ModelCard(
        path=Path(f"{name}.card.json"), name=name, version="t", model_file=Path(f"{name}.onnx"), sha256="",
        input_tensor="features", inputs=tuple(inputs), outputs=("label",),
        score=ScoreSpec("anomaly_score", "label", "label"), gate=None, guard=None, references=inputs, raw={},
    )


def test_monitor_reports_psi_over_the_sliding_window_only():
    ref = Reference((10.0,), (0.5, 0.5))  # half below 10, half above
    monitor = DriftMonitor([_card("m", {"events_5m": ref})], window=100, min_samples=50)
    for i in range(49):
        monitor.observe({"events_5m": float(i % 2) * 20})
    assert monitor.psi() == {}  # fewer than min_samples
    monitor.observe({"events_5m": 20.0})
    assert monitor.psi()[("m", "events_5m")] == pytest.approx(0.0, abs=1e-3)
    # 100 values all below 10: the earlier balanced values slide out completely.
    for _ in range(100):
        monitor.observe({"events_5m": 1.0})
    assert monitor.psi_by_model() == {"m": {"events_5m": pytest.approx(psi([0.5, 0.5], [1.0, 0.0]))}}


def test_monitor_skips_vectors_without_the_models_inputs():
    ref = Reference((10.0,), (0.5, 0.5))
    monitor = DriftMonitor([_card("m", {"events_5m": ref, "events_1h": ref})], window=10, min_samples=1)
    monitor.observe({"events_5m": 1.0})  # no events_1h: not counted at all
    assert monitor.psi() == {}
