"""``OnnxScorer``: the core's ``Scorer`` on onnxruntime, one row or a batch at a time.

Loads every ``*.card.json`` + ONNX model in a folder once (per Flink task: build it in the
function's ``open()``), checks each card against the model's real input and output names, types
and shapes, and publishes scores under the names rules use (the event catalogue's ``scores``):

- ``purchase_propensity``: P(buys again within 273 days); only for customers with a purchase in
  the last 365 days (the card's ``applies_when``), absent otherwise.
- ``customer_cluster``: RFM cluster index (0 = least valuable), same condition.
- ``anomaly_score``: Isolation Forest anomaly score s(x) in (0, 1] on the last hour's behaviour.
- ``event_rate_z``: the outlier guard, robust z-score of log1p(events in 5 minutes) against the
  anomaly card's reference population. Fixed statistics rather than a running estimate, so a
  replay scores the same and parallel instances agree (a running population estimate would make
  memberships depend on processing order).

Cost: each model call costs tens of µs to ~0.5 ms whatever the rows (see
bench/inference_bench.py), so ``score_batch`` runs one call per model for many customers, and an
exact memo (scores keyed by the model's input values; behavioural counts repeat a lot) skips the
call altogether for inputs seen recently.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import onnxruntime as ort

from .cards import (
    ARTIFACTS_ENV,
    DEFAULT_ARTIFACTS,
    ModelCard,
    ModelCardError,
    artifacts_folder,
    card_paths,
    check_against_model,
    file_sha256,
    load_card,
)

__all__ = ["ARTIFACTS_ENV", "DEFAULT_ARTIFACTS", "OnnxScorer"]

# (model name, seconds of one onnxruntime call, the scores it produced)
Observer = Callable[[str, float, Sequence[float]], None]


def session_options() -> ort.SessionOptions:
    """Small models, many calls: one thread (no pool hand-offs, no spinning on 2 shared cores),
    all graph optimisations, sequential execution."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return opts


@dataclass
class _Model:
    card: ModelCard
    session: ort.InferenceSession
    cache: dict[tuple[float, ...], float] = field(default_factory=dict)
    # The row's inputs as the memo's key, in the card's order: one C call instead of a Python
    # loop per row and model (bench/HISTORY.md). A KeyError when an input is missing.
    key: Callable[[Mapping[str, float]], tuple[float, ...]] = field(init=False)

    def __post_init__(self) -> None:
        inputs = self.card.inputs
        if len(inputs) == 1:  # itemgetter of one name gives the value, not a tuple
            only = inputs[0]
            self.key = lambda row: (row[only],)
        else:
            self.key = itemgetter(*inputs)

    def transform(self, outputs: np.ndarray) -> list[float]:
        spec = self.card.score
        if spec.transform == "column":
            return outputs[:, spec.column].astype(np.float64).tolist()
        if spec.transform == "label":
            return outputs.reshape(-1).astype(np.float64).tolist()
        # isolation_forest: decision_function = score_samples - offset_, score_samples = -s(x)
        return (-(outputs.reshape(-1).astype(np.float64) + spec.offset)).tolist()


class OnnxScorer:
    """Scores for a customer's model inputs (``SegmentEngine.model_features``), by score name.

    ``artifacts``: folder of cards and models; default ``$SEGMENTS_MODEL_ARTIFACTS`` or the
    repository's ``model_artifacts/``. ``models``: card names to load (default all).
    ``cache_size``: memo entries per model (0 turns the memo off). ``observer``: called after each
    onnxruntime call, e.g. to feed ``segments_model_inference_seconds`` and ``segments_model_score``.
    """

    def __init__(
        self,
        artifacts: Path | str | None = None,
        *,
        models: Sequence[str] | None = None,
        cache_size: int = 65_536,
        observer: Observer | None = None,
        known_scores: Sequence[str] | None = None,
    ) -> None:
        folder = artifacts_folder(artifacts)
        paths = card_paths(folder) if folder.is_dir() else []
        if not paths:
            raise ModelCardError(
                f"{folder}: no model cards (*.card.json) found; set {ARTIFACTS_ENV} or pass the folder, "
                "or run `python -m flink_jobs.ml.train` to create them"
            )
        cards = [load_card(p, known_scores) for p in paths]
        if models is not None:
            unknown = sorted(set(models) - {c.name for c in cards})
            if unknown:
                raise ModelCardError(f"{folder}: no card for model(s) {', '.join(unknown)}; found {', '.join(c.name for c in cards)}")
            cards = [c for c in cards if c.name in models]
        self.folder = folder
        self.cache_size = cache_size
        self.observer = observer
        self._set([_Model(card, _open(card)) for card in cards], str(folder))

    def _set(self, models: list[_Model], where: str) -> None:
        published = [name for m in models for name in m.card.score_names]
        if len(set(published)) != len(published):
            raise ModelCardError(f"{where}: two cards publish the same score name ({', '.join(published)})")
        self._models = models
        self.names: tuple[str, ...] = tuple(published)
        self.cards: dict[str, ModelCard] = {m.card.name: m.card for m in models}

    # ---- models published to the running job (``published.py``) ------------------------------------

    @property
    def versions(self) -> dict[str, str]:
        """model -> version of the card in use."""
        return {m.card.name: m.card.version for m in self._models}

    def use(self, card: ModelCard, data: bytes) -> None:
        """Score with this model (its ONNX bytes) from now on, in place of the model of its name
        (or besides the others); ``ModelCardError`` and nothing changes when onnxruntime cannot
        load it or it does not match its card."""
        models = [m for m in self._models if m.card.name != card.name]
        models.append(_Model(card, open_published(card, data)))
        self._set(sorted(models, key=lambda m: m.card.name), str(card.path))

    def drop(self, name: str) -> bool:
        """Stop scoring with the model ``name`` (its scores are no longer published); whether it
        was in use."""
        models = [m for m in self._models if m.card.name != name]
        if len(models) == len(self._models):
            return False
        self._set(models, name)
        return True

    # ---- the Scorer protocol ----------------------------------------------------------------------

    def score(self, customer_id: str, features: Mapping[str, float]) -> dict[str, float]:
        """Scores for one customer; a model whose inputs are missing or whose gate is closed is left out."""
        return self.score_batch((features,))[0]

    # ---- batched ----------------------------------------------------------------------------------

    def score_batch(self, rows: Sequence[Mapping[str, float]]) -> list[dict[str, float]]:
        """Scores for many feature mappings, one onnxruntime call per model for the rows not memoised."""
        out: list[dict[str, float]] = [{} for _ in rows]
        for model in self._models:
            card = model.card
            key_of = model.key
            gate = card.gate
            guard = card.guard
            name = card.score.name
            cache = model.cache
            todo: dict[tuple[float, ...], list[int]] = {}  # rows with the same inputs are scored once
            for i, row in enumerate(rows):
                if guard is not None and guard.input in row:
                    out[i][guard.name] = (math.log1p(row[guard.input]) - guard.median) / guard.scale
                try:
                    key = key_of(row)
                except KeyError:
                    continue
                if gate is not None and row[gate.input] < gate.at_least:
                    continue
                hit = cache.get(key)
                if hit is not None:
                    out[i][name] = hit
                else:
                    todo.setdefault(key, []).append(i)
            if not todo:
                continue
            keys = list(todo)
            start = time.perf_counter()
            result = model.session.run([card.score.output], {card.input_tensor: np.array(keys, dtype=np.float32)})[0]
            scores = model.transform(result)
            seconds = time.perf_counter() - start
            if self.cache_size:
                if len(cache) + len(keys) > self.cache_size:
                    cache.clear()  # bounded; a whole-clear costs less per call than LRU bookkeeping
                cache.update(zip(keys, scores))
            for key, value in zip(keys, scores):
                for i in todo[key]:
                    out[i][name] = value
            if self.observer is not None:
                self.observer(card.name, seconds, scores)
        return out

    # ---- wiring checks ----------------------------------------------------------------------------

    def missing_inputs(self, available: Iterable[str]) -> dict[str, list[str]]:
        """model -> inputs it needs that ``available`` (the engine's model input names) lacks.
        Empty when the engine can feed every model; the job should fail at start otherwise."""
        have = set(available)
        return {m.card.name: [f for f in m.card.inputs if f not in have] for m in self._models if not set(m.card.inputs) <= have}


def open_published(card: ModelCard, data: bytes) -> ort.InferenceSession:
    """An onnxruntime session on a published model's bytes, checked against its card."""
    try:
        session = ort.InferenceSession(data, sess_options=session_options(), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for unreadable models
        raise ModelCardError(f"{card.path}: onnxruntime cannot load it: {e}") from None
    check_against_model(card, session.get_inputs(), session.get_outputs())
    return session


def _open(card: ModelCard) -> ort.InferenceSession:
    if not card.model_file.is_file():
        raise ModelCardError(f"{card.path}: its model file {card.model_file} does not exist")
    actual = file_sha256(card.model_file)
    if actual != card.sha256:
        raise ModelCardError(
            f"{card.model_file}: sha256 {actual[:12]}… does not match its card {card.path} ({card.sha256[:12]}…); "
            "the model was replaced without its card: regenerate both with `python -m flink_jobs.ml.train`"
        )
    try:
        session = ort.InferenceSession(str(card.model_file), sess_options=session_options(), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for unreadable models
        raise ModelCardError(f"{card.model_file}: onnxruntime cannot load it: {e}") from None
    check_against_model(card, session.get_inputs(), session.get_outputs())
    return session
