"""Input drift: population stability index (PSI) of recent model inputs against a card's reference.

``PSI = sum_i (a_i - e_i) * ln(a_i / e_i)`` over the reference bins, with ``e_i`` the reference
proportion and ``a_i`` the proportion among the last ``window`` observed vectors. Rules of thumb:
below 0.1 stable, 0.1-0.25 worth a look, above 0.25 the population has shifted.

Empty bins: a proportion of 0 on either side would make the log infinite, so both proportions are
clipped from below at ``EPSILON`` (1e-4, i.e. "at most 1 in 10,000") before the formula, without
renormalising. A bin empty on both sides then contributes exactly 0; a bin empty on one side
contributes a large but finite amount (about 0.0009 per 1% of mass, growing as the other side
grows), which is what an alert should see.

Binning: ``bin_index`` is the one binning used both to build the card's reference (training) and
to bin live values here, so a value on an edge falls in the same bin on both sides.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from typing import Iterable, Mapping, Sequence

from .cards import ModelCard, Reference

EPSILON = 1e-4

# Names agreed with the observability work (flink_jobs/runtime/metrics.py registers them).
PSI_METRIC = "segments_model_feature_psi"  # gauge {model, feature}
INFERENCE_SECONDS_METRIC = "segments_model_inference_seconds"  # histogram {model}
SCORE_METRIC = "segments_model_score"  # histogram {model}: the score distribution


def bin_index(edges: Sequence[float], value: float) -> int:
    """Bin of ``value``: the number of edges <= value (0 .. len(edges))."""
    return bisect_right(edges, value)


def histogram(edges: Sequence[float], values: Iterable[float]) -> list[float]:
    """Proportion of ``values`` in each of the ``len(edges) + 1`` bins."""
    counts = [0] * (len(edges) + 1)
    n = 0
    for v in values:
        counts[bisect_right(edges, v)] += 1
        n += 1
    return [c / n for c in counts] if n else [0.0] * len(counts)


def psi(expected: Sequence[float], actual: Sequence[float], epsilon: float = EPSILON) -> float:
    """Population stability index of ``actual`` against ``expected`` (proportions over the same bins)."""
    if len(expected) != len(actual):
        raise ValueError(f"psi: {len(expected)} expected bins but {len(actual)} actual bins")
    total = 0.0
    for e, a in zip(expected, actual):
        e = max(e, epsilon)
        a = max(a, epsilon)
        total += (a - e) * math.log(a / e)
    return total


class _Window:
    """Bin counts of the last ``size`` values of one input."""

    __slots__ = ("reference", "bins", "counts")

    def __init__(self, reference: Reference, size: int) -> None:
        self.reference = reference
        self.bins: deque[int] = deque(maxlen=size)
        self.counts = [0] * len(reference.proportions)

    def add(self, value: float) -> None:
        bins = self.bins
        if len(bins) == bins.maxlen:
            self.counts[bins[0]] -= 1
        b = bisect_right(self.reference.edges, value)
        bins.append(b)
        self.counts[b] += 1

    def psi(self) -> float:
        n = len(self.bins)
        return psi(self.reference.proportions, [c / n for c in self.counts])


class DriftMonitor:
    """PSI per (model, input) over a sliding window of the most recent feature vectors.

    Call ``observe`` with the feature mapping the engine hands to the scorer (every call, or a
    sample); read ``psi()`` when exporting metrics. O(inputs) per observation, memory
    ``window`` small ints per (model, input).
    """

    def __init__(self, cards: Iterable[ModelCard], window: int = 10_000, min_samples: int = 500) -> None:
        if window < 1 or not 1 <= min_samples <= window:
            raise ValueError(f"DriftMonitor: need 1 <= min_samples ({min_samples}) <= window ({window})")
        self.min_samples = min_samples
        self._models: list[tuple[str, tuple[tuple[str, _Window], ...]]] = [
            (card.name, tuple((f, _Window(card.references[f], window)) for f in card.inputs)) for card in cards
        ]

    def observe(self, features: Mapping[str, float]) -> None:
        """Add one vector to the window of every model whose inputs it holds."""
        for _, windows in self._models:
            if all(f in features for f, _ in windows):
                for f, w in windows:
                    w.add(features[f])

    def psi(self) -> dict[tuple[str, str], float]:
        """(model, input) -> PSI, for models with at least ``min_samples`` vectors in their window."""
        out = {}
        for model, windows in self._models:
            for feature, w in windows:
                if len(w.bins) >= self.min_samples:
                    out[(model, feature)] = w.psi()
        return out

    def psi_by_model(self) -> dict[str, dict[str, float]]:
        """``psi()`` grouped as model -> {input: PSI}, the shape ``Metrics.set_feature_psi`` takes."""
        out: dict[str, dict[str, float]] = {}
        for (model, feature), value in self.psi().items():
            out.setdefault(model, {})[feature] = value
        return out
