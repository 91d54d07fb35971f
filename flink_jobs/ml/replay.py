"""Model inputs for a history, computed by replaying it through ``SegmentEngine``.

The training pipeline takes its feature rows from here, so they come from the code the stream
runs (``SegmentEngine.model_features``), never from a second implementation.
"""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path
from typing import Callable, Iterable, Mapping

from ..core.catalog import Catalog
from ..core.engine import EngineConfig, SegmentEngine
from ..core.loader import load_catalog
from ..core.model import Event, RuleSet
from ..core.runner import LocalRunner

# The event catalogue the shipped models are trained on: the example one beside the rules.
TRAINING_CATALOG = Path(__file__).resolve().parents[2] / "rules" / "catalog.yaml"

Progress = Callable[[int], None]


class RecordingScorer:
    """A scorer that scores nothing and records what the engine asked it to score."""

    names: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, float]]] = []

    def score(self, customer_id: str, features: Mapping[str, float]) -> Mapping[str, float]:
        self.calls.append((customer_id, dict(features)))
        return {}


@cache
def training_catalog() -> Catalog:
    return load_catalog(TRAINING_CATALOG)


def _engine(catalog: Catalog | None, scorer: RecordingScorer | None = None) -> SegmentEngine:
    # No rules: the model inputs read only the generic aggregates, which the engine always keeps.
    return SegmentEngine(RuleSet((), "model-inputs", catalog or training_catalog()), EngineConfig(), scorer)


def _feed(runner: LocalRunner, events: Iterable[Event], progress: Progress | None) -> None:
    for n, event in enumerate(events, start=1):
        runner.feed(event)
        if progress is not None and n % 10_000 == 0:
            progress(n)


def features_at(
    events: Iterable[Event], at: int, progress: Progress | None = None, catalog: Catalog | None = None
) -> dict[str, dict[str, float]]:
    """customer id -> model inputs at instant ``at``, after replaying ``events`` (all <= ``at``),
    read with ``catalog`` (default: the training catalogue)."""
    engine = _engine(catalog)
    runner = LocalRunner(engine)
    _feed(runner, events, progress)
    runner.advance(at)
    return {cid: dict(engine.model_features(state, at)) for cid, state in sorted(runner.states.items())}


def scored_rows(
    events: Iterable[Event], out_of_orderness: int = 0, progress: Progress | None = None, catalog: Catalog | None = None
) -> list[tuple[str, dict[str, float]]]:
    """(customer id, model inputs) at every instant the stream would score, in processing order."""
    scorer = RecordingScorer()
    runner = LocalRunner(_engine(catalog, scorer), out_of_orderness=out_of_orderness)
    _feed(runner, events, progress)
    runner.advance(2**62)
    return scorer.calls


def print_progress(label: str) -> Progress:
    def report(n: int) -> None:
        print(f"  {label}: {n:,} events replayed", file=sys.stderr, flush=True)

    return report
