"""The ONNX scorer as the segment engine sees it, feeding the model metrics: inference time and
scores (through the scorer's observer), and input drift (PSI against each model card's reference)
over a sample of the feature vectors scored."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Mapping, Protocol, Sequence

from .cards import ModelCard
from .drift import DriftMonitor
from .published import MODEL_PREFIX, read_model_record

if TYPE_CHECKING:
    from .serving import OnnxScorer


class ModelMetrics(Protocol):
    """Where the model metrics go (``runtime.metrics.JobMetrics``)."""

    def observe_inference(self, model: str, seconds: Sequence[float]) -> None: ...

    def observe_scores(self, model: str, scores: Sequence[float]) -> None: ...

    def set_feature_psi(self, model: str, psi: Mapping[str, float]) -> None: ...


class ObservedScorer:
    """Scores with the ONNX models and reports what they did."""

    PSI_EVERY = 10.0  # seconds between PSI updates
    SAMPLE = 8  # one feature vector in SAMPLE goes into the drift window

    def __init__(self, scorer: OnnxScorer, drift: DriftMonitor, m: ModelMetrics) -> None:
        self._scorer, self._drift, self._m = scorer, drift, m
        self.names = scorer.names
        self._n = 0
        self._next_psi = time.monotonic() + self.PSI_EVERY

    @classmethod
    def load(
        cls,
        artifacts: str,
        m: ModelMetrics,
        known_scores: Sequence[str] | None = None,
        models: Sequence[str] | None = None,
    ) -> ObservedScorer:
        """The models in ``artifacts`` (empty: the default folder, see ``serving.OnnxScorer``),
        publishing only scores among ``known_scores`` (the rules' catalogue's) when given;
        ``models``: the cards to load (default all; see ``cards.cards_for``)."""

        from .serving import OnnxScorer  # onnxruntime is imported only where the models run

        def observe(model: str, seconds: float, scores: Sequence[float]) -> None:
            m.observe_inference(model, (seconds,))
            m.observe_scores(model, scores)

        scorer = OnnxScorer(artifacts or None, observer=observe, known_scores=known_scores, models=models)
        return cls(scorer, DriftMonitor(scorer.cards.values()), m)

    @property
    def versions(self) -> dict[str, str]:
        """model -> version in use (change records carry it)."""
        return self._scorer.versions

    def use(self, card: ModelCard, data: bytes) -> None:
        """A published model in place of the one of its name (``OnnxScorer.use``); its drift is
        measured against its own card's reference from now on."""
        self._scorer.use(card, data)
        self._changed()

    def drop(self, name: str) -> bool:
        dropped = self._scorer.drop(name)
        if dropped:
            self._changed()
        return dropped

    def take_record(self, key: str, text: str | None, known_scores: Sequence[str]) -> str:
        """A record of the rules topic publishing a model (``published.py``; None or empty:
        withdrawn); what was done. ``ModelCardError`` (a ValueError) when it is rejected."""
        name = key[len(MODEL_PREFIX) :]
        if not text:
            return f"{name} withdrawn" if self.drop(name) else f"{name} was not in use"
        card, data = read_model_record(key, text, known_scores)
        before = self.versions.get(card.name)
        self.use(card, data)
        return f"{card.name} {card.version} in use" + (f" in place of {before}" if before else "")

    def _changed(self) -> None:
        self.names = self._scorer.names
        self._drift = DriftMonitor(self._scorer.cards.values())

    def score(self, customer_id: str, features: Mapping[str, float]) -> Mapping[str, float]:
        return self.score_batch([features])[0]

    def _update_psi(self) -> None:
        if time.monotonic() >= self._next_psi:
            self._next_psi = time.monotonic() + self.PSI_EVERY
            for model, psi in self._drift.psi_by_model().items():
                self._m.set_feature_psi(model, psi)

    def score_batch(self, rows: Sequence[Mapping[str, float]]) -> list[dict[str, float]]:
        """Scores for many feature mappings, in one inference call per model."""
        # The same one-in-SAMPLE as score(), counted across calls (batches are often small).
        first = -self._n % self.SAMPLE
        for features in rows[first :: self.SAMPLE]:
            self._drift.observe(features)
        self._n += len(rows)
        if first < len(rows):
            self._update_psi()
        return self._scorer.score_batch(rows)


def load_scorer(
    artifacts: str, known_scores: Sequence[str], m: ModelMetrics, models: Sequence[str] | None = None
) -> ObservedScorer:
    """``ObservedScorer.load`` as a function, for ``functools.partial`` (the scorer loader the
    job hands the batch engine travels to the workers pickled)."""
    return ObservedScorer.load(artifacts, m, known_scores, models)
