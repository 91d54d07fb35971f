"""Retrain the purchase-propensity model on the product's own events; keep it only if it is not worse.

The command is ``python -m flink_jobs.cli.retrain`` (it reads the events as the job does); this
module is what it does with them. Their model inputs come from replaying them through the engine
the stream runs (``replay.features_at``), never from a second implementation.

Time split, with H the label horizon (``--horizon``, default a third of the events' span, at most
the 273 days the shipped model predicts): the last event time E, the holdout cut C2 = E - H and
the training cut C1 = C2 - H. Training rows: each customer the model applies to (a purchase in
the 365 days before the cut) with its inputs at C1, labelled 1 when it bought in (C1, C2].
Holdout rows: the same at C2, labelled by (C2, E]: later than anything the model was trained on,
as it will be used.

"Worse" means a lower average precision (the area under the precision-recall curve: how well the
score ranks the customers who buy again, which is what a threshold such as the 0.8 of
``high_purchase_propensity`` selects from) on the holdout than the model in use, by more than
``tolerance`` (default 0.01). A model that is not worse is written with its card (version: the
one in use with the minor part raised) to ``out``, ready for ``segments publish-model``; both
models' figures are printed either way. ``retrain`` returns 0 when it wrote the model, 1 when not
(worse, or too few rows or buyers to tell), 2 when the catalogue has no purchase to predict.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.metrics import average_precision_score, roc_auc_score

from ..core.catalog import Catalog
from ..core.durations import DAY, format_duration
from ..core.model import Event
from . import replay
from .cards import CARD_SUFFIX, load_card
from .train import PROPENSITY_INPUTS, SEED, _export, _matrix, _reference, _versions, _write_card

MODEL = "purchase_propensity"
MAX_HORIZON = 273 * DAY  # what the shipped model predicts
MIN_ROWS, MIN_BUYERS = 200, 20  # below these, average precision says little


@dataclass(frozen=True)
class Split:
    start: int
    end: int
    train_cut: int
    holdout_cut: int
    horizon: int


def split_times(events: Sequence[Event], horizon: int | None) -> Split:
    start, end = min(e.event_time for e in events), max(e.event_time for e in events)
    h = horizon or min(MAX_HORIZON, (end - start) // 3)
    if horizon is None and h >= DAY:
        h -= h % DAY  # whole days: the label window reads as a period
    return Split(start, end, end - 2 * h, end - h, h)


def rows_at(
    events: Sequence[Event], cut: int, label_until: int, purchase: str, catalog: Catalog, label: str
) -> tuple[list[dict[str, float]], np.ndarray]:
    """Model inputs at ``cut`` of the customers the model applies to, and whether each bought in
    (cut, label_until]."""
    features = replay.features_at(
        (e for e in events if e.event_time <= cut), cut, replay.print_progress(label), catalog
    )
    later = {e.customer_id for e in events if cut < e.event_time <= label_until and e.event_type == purchase}
    ids = sorted(c for c, f in features.items() if f.get("purchases_365d", 0) >= 1)
    return [features[c] for c in ids], np.array([c in later for c in ids], dtype=np.int64)


def _current(artifacts: Path) -> tuple[dict, ort.InferenceSession]:
    card = load_card(artifacts / f"{MODEL}{CARD_SUFFIX}")
    session = ort.InferenceSession(str(card.model_file), providers=["CPUExecutionProvider"])
    return dict(card.raw), session


def _figures(y: np.ndarray, p: np.ndarray) -> dict:
    return {"pr_auc": round(float(average_precision_score(y, p)), 4), "roc_auc": round(float(roc_auc_score(y, p)), 4)}


def _next_version(version: str) -> str:
    parts = version.split(".")
    if len(parts) == 3 and all(p.isdigit() for p in parts):
        return f"{parts[0]}.{int(parts[1]) + 1}.0"
    return f"{version}.1"


def retrain(
    events: Sequence[Event], catalog: Catalog, artifacts: Path, out: Path, horizon: int | None, tolerance: float, source: str
) -> int:
    purchase = catalog.purchase_event
    if purchase is None:
        print("error: the catalogue declares no purchase role (roles.purchase): nothing to predict", file=sys.stderr)
        return 2
    events = sorted(events, key=Event.sort_key)
    split = split_times(events, horizon)
    day = lambda t: time.strftime("%Y-%m-%d", time.gmtime(t / 1000))  # noqa: E731
    print(
        f"[1/4] {len(events):,} events {day(split.start)}..{day(split.end)}; horizon {format_duration(split.horizon)}: "
        f"train at {day(split.train_cut)}, holdout at {day(split.holdout_cut)}",
        file=sys.stderr,
        flush=True,
    )
    train_rows, train_y = rows_at(events, split.train_cut, split.holdout_cut, purchase, catalog, "[2/4] training rows")
    test_rows, test_y = rows_at(events, split.holdout_cut, split.end, purchase, catalog, "[3/4] holdout rows")
    for name, rows, y in (("training", train_rows, train_y), ("holdout", test_rows, test_y)):
        print(f"      {name}: {len(rows):,} customers, {int(y.sum()):,} bought again", file=sys.stderr)
        if len(rows) < MIN_ROWS or y.sum() < MIN_BUYERS or y.sum() == len(y):
            print(
                f"not enough to tell: the {name} rows need {MIN_ROWS} customers and {MIN_BUYERS} who bought again "
                "(and some who did not); give more history or a shorter --horizon",
                file=sys.stderr,
            )
            return 1
    x_train, x_test = _matrix(train_rows, PROPENSITY_INPUTS), _matrix(test_rows, PROPENSITY_INPUTS)
    print("[4/4] training and comparing", file=sys.stderr, flush=True)
    model = GradientBoostingClassifier(n_estimators=100, max_depth=3, learning_rate=0.1, random_state=SEED)
    model.fit(x_train, train_y)
    new = _figures(test_y, model.predict_proba(x_test)[:, 1])
    card, session = _current(artifacts)
    current = _figures(test_y, session.run(["probabilities"], {session.get_inputs()[0].name: x_test})[0][:, 1])
    worse = new["pr_auc"] < current["pr_auc"] - tolerance
    print(f"holdout ({len(test_rows):,} customers, {test_y.mean():.1%} bought again within {format_duration(split.horizon)}):")
    print(f"  in use  {card['version']:>8}: average precision {current['pr_auc']:.4f}, ROC AUC {current['roc_auc']:.4f}")
    version = _next_version(str(card["version"]))
    print(f"  retrained {version:>6}: average precision {new['pr_auc']:.4f}, ROC AUC {new['roc_auc']:.4f}")
    if worse:
        print(f"not written: worse than the model in use by more than {tolerance} average precision")
        return 1
    out.mkdir(parents=True, exist_ok=True)
    _export(model, len(PROPENSITY_INPUTS), out / f"{MODEL}.onnx", {id(model): {"zipmap": False}})
    card.update(
        version=version,
        task=f"probability that a customer who bought in the last 365 days buys again within the next {format_duration(split.horizon)}",
        training={
            "data": source,
            "events": len(events),
            "train_features_at": day(split.train_cut),
            "holdout_features_at": day(split.holdout_cut),
            "horizon_days": round(split.horizon / DAY, 2),
            "rows": len(train_rows),
            "seed": SEED,
            "libraries": _versions(),
            "retrained_from": card["version"],
        },
        metrics={
            "evaluation": "time split: trained on inputs at the training cut labelled by the next horizon; figures on "
            "the inputs at the holdout cut labelled by the horizon after it",
            **new,
            "in_use_on_the_same_holdout": {"version": card["version"], **current},
            "positive_rate_holdout": round(float(test_y.mean()), 4),
            "train_customers": len(train_rows),
            "test_customers": len(test_rows),
        },
        reference={
            "population": f"customers the model applies to at {day(split.holdout_cut)}",
            "rows": len(test_rows),
            "histograms": _reference(x_test, PROPENSITY_INPUTS),
        },
    )
    card["model"] = {k: v for k, v in card["model"].items() if k not in ("sha256", "bytes")}
    _write_card(out, card)
    print(f"written: {out / (MODEL + CARD_SUFFIX)}")
    print(f"publish it to the running job: segments publish-model {out / (MODEL + CARD_SUFFIX)} --rules <the job's rules>")
    return 0
