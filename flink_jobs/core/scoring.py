"""The scorer interface: model scores by name for a customer's current features.

The ONNX implementation lives outside the core (it needs onnxruntime); the core only needs this
interface, and tests use ``FixedScorer``.
"""

from __future__ import annotations

from typing import Mapping, Protocol


class Scorer(Protocol):
    """Turns a customer's features into named scores (e.g. ``purchase_propensity``)."""

    names: tuple[str, ...]

    def score(self, customer_id: str, features: Mapping[str, float]) -> Mapping[str, float]:
        ...

    # Optional: ``score_batch(rows: Sequence[Mapping[str, float]]) -> list[Mapping[str, float]]``,
    # the scores of many feature mappings in one call (as ``OnnxScorer`` has), for scorers whose
    # scores depend on the features alone. ``SegmentEngine.step_many`` uses it when present.


class FixedScorer:
    """A test double: fixed scores per customer, ``default`` for everyone else."""

    def __init__(
        self,
        by_customer: Mapping[str, Mapping[str, float]] | None = None,
        default: Mapping[str, float] | None = None,
    ) -> None:
        self._by_customer = dict(by_customer or {})
        self._default = dict(default or {})
        names = set(self._default)
        for scores in self._by_customer.values():
            names.update(scores)
        self.names = tuple(sorted(names))

    def score(self, customer_id: str, features: Mapping[str, float]) -> Mapping[str, float]:
        return self._by_customer.get(customer_id, self._default)
