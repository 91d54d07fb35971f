"""Train the three models and write them with their cards to ``model_artifacts/``.

    python -m flink_jobs.ml.train                 # regenerate model_artifacts/
    python -m flink_jobs.ml.train --out DIR       # somewhere else
    python -m flink_jobs.ml.train --check         # retrain in a temporary folder, compare bytes

Offline and deterministic (fixed seeds, one thread, pinned library versions in the ``train``
extra): the same versions regenerate the same bytes. Needs ``pip install -e '.[train]'``.

- ``purchase_propensity``: gradient boosting on CDNOW. Features are the model inputs at the end
  of the 1997-01-01..1997-09-30 calibration period, computed by replaying each customer's
  purchases through ``SegmentEngine``; label = bought again in the 1997-10-01..1998-06-30 holdout.
- ``customer_cluster``: K-Means on Yeo-Johnson-scaled recency / frequency / monetary of the same
  rows; clusters are numbered from least to most valuable and named in the card.
- ``anomaly``: a 50-tree Isolation Forest on the behavioural inputs the stream computes for the
  synthetic feed (``flink_jobs/synthetic.py``), which has bot personas; CDNOW has purchases only,
  no behaviour to learn from. Evaluated against the personas of a feed with another seed.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
import skl2onnx
import sklearn
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.cluster import KMeans
from sklearn.ensemble import GradientBoostingClassifier, IsolationForest
from sklearn.metrics import average_precision_score, roc_auc_score, silhouette_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import PowerTransformer
from threadpoolctl import threadpool_limits

from .. import synthetic
from ..core.model_inputs import BY_NAME
from . import cdnow
from .cards import CARD_SUFFIX, file_sha256
from .datasets import CdnowRows, SyntheticRows, cdnow_rows, synthetic_rows
from .drift import histogram
from .iforest_onnx import isolation_forest_to_onnx

SEED = 20_260_401
VERSION = "1.0.0"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "model_artifacts"
OPSETS = {"": 17, "ai.onnx.ml": 3}
INPUT_TENSOR = "features"

PROPENSITY_INPUTS = (
    "recency_days", "tenure_days", "purchases_30d", "purchases_90d", "purchases_365d", "revenue_365d", "avg_order_value_365d",
)
CLUSTER_INPUTS = ("recency_days", "purchases_365d", "revenue_365d")
ANOMALY_INPUTS = ("events_5m", "events_1h", "active_minutes_1h", "page_view_share_1h", "product_views_1h", "sessions_1h")
GUARD_INPUT = "events_5m"
PROPENSITY_THRESHOLD = 0.8  # the shipped rule high_purchase_propensity
ANOMALY_TREES = 50  # ~0.86 ms per single-row call at 100 trees here; see bench/inference_bench.py
ANOMALY_TRAIN_FEED = synthetic.FeedConfig(customers=3_000, events=150_000, seed=11)
ANOMALY_TEST_FEED = synthetic.FeedConfig(customers=2_000, events=100_000, seed=12)


def _step(n: int, text: str) -> float:
    print(f"[{n}/5] {text}", file=sys.stderr, flush=True)
    return time.perf_counter()


def _done(start: float, text: str = "") -> None:
    print(f"      done in {time.perf_counter() - start:.1f} s{': ' + text if text else ''}", file=sys.stderr, flush=True)


def _matrix(rows: Sequence[dict[str, float]], names: Sequence[str]) -> np.ndarray:
    # float32, as the ONNX models take it: training sees exactly the values serving will.
    return np.array([[row[n] for n in names] for row in rows], dtype=np.float32)


def _reference(x: np.ndarray, names: Sequence[str]) -> dict:
    """Per input: decile cut points (ties collapsed) and the share of rows in each bin."""
    out = {}
    for j, name in enumerate(names):
        column = x[:, j].astype(np.float64)
        edges = sorted({float(np.float32(q)) for q in np.quantile(column, np.linspace(0.1, 0.9, 9))})
        # A cut at the minimum would leave the first bin empty by construction.
        edges = [e for e in edges if e > column.min()]
        props = histogram(edges, column.tolist())
        out[name] = {"bin_edges": edges, "proportions": [round(p, 6) for p in props]}
        out[name]["proportions"][-1] = round(1.0 - sum(out[name]["proportions"][:-1]), 6)
    return out


def _inputs(names: Sequence[str]) -> list[dict]:
    return [{"name": n, "unit": BY_NAME[n].unit, "meaning": BY_NAME[n].meaning} for n in names]


def _export(model, width: int, path: Path, options: dict | None = None) -> None:
    onx = convert_sklearn(
        model,
        initial_types=[(INPUT_TENSOR, FloatTensorType([None, width]))],
        target_opset=OPSETS,
        options=options,
    )
    _save(onx, path)


def _save(onx: onnx.ModelProto, path: Path) -> None:
    # skl2onnx names the graph with a random UUID and lists opsets in set order (which varies
    # with the string hash seed); a fixed name and a sorted list keep the bytes reproducible.
    onx.graph.name = path.stem
    onx.doc_string = ""
    opsets = sorted((o.domain, o.version) for o in onx.opset_import)
    del onx.opset_import[:]
    for domain, version in opsets:
        onx.opset_import.add(domain=domain, version=version)
    path.write_bytes(onx.SerializeToString(deterministic=True))
    onnx.checker.check_model(str(path))


def _write_card(folder: Path, card: dict) -> None:
    model_path = folder / card["model"]["file"]
    card["model"]["sha256"] = file_sha256(model_path)
    card["model"]["bytes"] = model_path.stat().st_size
    (folder / f"{card['name']}{CARD_SUFFIX}").write_text(json.dumps(card, indent=2, sort_keys=False) + "\n")


def _versions() -> dict[str, str]:
    return {"scikit-learn": sklearn.__version__, "skl2onnx": skl2onnx.__version__, "onnx": onnx.__version__, "numpy": np.__version__}


# ---- models -----------------------------------------------------------------------------------------


def train_propensity(data: CdnowRows, out: Path) -> tuple[GradientBoostingClassifier, dict]:
    """Fit, evaluate on held-out customers, export with its card; return the model and metrics."""
    rows, labels = data.features, data.labels
    x = _matrix(rows, PROPENSITY_INPUTS)
    idx = np.arange(len(rows))
    train, test = train_test_split(idx, test_size=0.25, random_state=SEED, stratify=labels)
    model = GradientBoostingClassifier(n_estimators=100, max_depth=3, learning_rate=0.1, random_state=SEED)
    model.fit(x[train], labels[train])
    p = model.predict_proba(x[test])[:, 1]
    baseline = -x[test, PROPENSITY_INPUTS.index("recency_days")]  # more recent = more likely
    y = labels[test]
    high = p >= PROPENSITY_THRESHOLD
    metrics = {
        "evaluation": "customers split 75/25 (stratified, seeded); features at the end of calibration, "
        "label from the holdout period; figures on the 25% test customers",
        "roc_auc": round(float(roc_auc_score(y, p)), 4),
        "pr_auc": round(float(average_precision_score(y, p)), 4),
        "baseline_recency_only": {
            "roc_auc": round(float(roc_auc_score(y, baseline)), 4),
            "pr_auc": round(float(average_precision_score(y, baseline)), 4),
        },
        "positive_rate_test": round(float(y.mean()), 4),
        "at_threshold": {
            "threshold": PROPENSITY_THRESHOLD,
            "share_of_customers": round(float(high.mean()), 4),
            "precision": round(float(y[high].mean()), 4) if high.any() else None,
            "recall": round(float(high[y == 1].mean()), 4),
        },
        "train_customers": int(len(train)),
        "test_customers": int(len(test)),
    }
    _export(model, len(PROPENSITY_INPUTS), out / "purchase_propensity.onnx", {id(model): {"zipmap": False}})
    card = {
        "name": "purchase_propensity",
        "version": VERSION,
        "task": "probability that a customer who bought in the last 365 days buys again within the next 273 days (39 weeks)",
        "model": {"file": "purchase_propensity.onnx", "algorithm": "sklearn GradientBoostingClassifier(100 trees, depth 3)",
                  "input": {"name": INPUT_TENSOR, "dtype": "float32", "shape": [None, len(PROPENSITY_INPUTS)]}, "opsets": OPSETS},
        "inputs": _inputs(PROPENSITY_INPUTS),
        "outputs": [
            {"name": "label", "meaning": "predicted class: 1 = buys again within 273 days (int64, one per row)"},
            {"name": "probabilities", "meaning": "float32 [rows, 2]: P(no repurchase), P(repurchase)"},
        ],
        "score": {"name": "purchase_propensity", "output": "probabilities", "transform": "column", "column": 1,
                  "meaning": "P(repurchase within 273 days), 0..1"},
        "applies_when": {"input": "purchases_365d", "at_least": 1,
                         "why": "trained on customers with purchase history; no score for those without"},
        "training": _cdnow_training(len(rows)),
        "metrics": metrics,
        "reference": {"population": "all CDNOW customers at the end of calibration", "rows": len(rows),
                      "histograms": _reference(x, PROPENSITY_INPUTS)},
    }
    _write_card(out, card)
    return model, metrics


def train_clusters(data: CdnowRows, out: Path, ks: Sequence[int] = (3, 4, 5, 6)) -> tuple[Pipeline, dict]:
    """K-Means for each k, the best silhouette wins; export with its card; return it and metrics."""
    rows, labels = data.features, data.labels
    x = _matrix(rows, CLUSTER_INPUTS)
    rng = np.random.RandomState(SEED)
    sample = rng.choice(len(x), size=min(10_000, len(x)), replace=False)
    by_k = {}
    fitted = {}
    for k in ks:
        pipe = Pipeline([("scale", PowerTransformer(method="yeo-johnson", standardize=True)),
                         ("kmeans", KMeans(n_clusters=k, n_init=10, random_state=SEED))])
        pipe.fit(x)
        z = pipe.named_steps["scale"].transform(x[sample])
        by_k[k] = round(float(silhouette_score(z, pipe.predict(x[sample]))), 4)
        fitted[k] = pipe
        print(f"      k={k}: silhouette {by_k[k]}", file=sys.stderr, flush=True)
    k = max(by_k, key=lambda kk: (by_k[kk], -kk))
    pipe = fitted[k]
    kmeans = pipe.named_steps["kmeans"]
    # Number clusters from least to most valuable (recent, frequent, high-spend), so an index
    # keeps its meaning when the model is retrained on similar data.
    centers = kmeans.cluster_centers_
    value = -centers[:, 0] + centers[:, 1] + centers[:, 2]
    order = np.argsort(value, kind="stable")
    kmeans.cluster_centers_ = centers[order]
    assigned = pipe.predict(x)
    names, descriptions, profile = _describe_clusters(x, assigned, labels, k)
    _export(pipe, len(CLUSTER_INPUTS), out / "customer_cluster.onnx")
    metrics = {
        "silhouette": by_k[k],
        "silhouette_by_k": {str(kk): v for kk, v in by_k.items()},
        "silhouette_sample": f"{len(sample)} customers, seeded",
        "chosen_k": k,
        "clusters": profile,
    }
    card = {
        "name": "customer_cluster",
        "version": VERSION,
        "task": "RFM segment of a customer who bought in the last 365 days",
        "model": {"file": "customer_cluster.onnx",
                  "algorithm": f"sklearn Pipeline(PowerTransformer(yeo-johnson, standardize), KMeans(k={k}, n_init=10))",
                  "input": {"name": INPUT_TENSOR, "dtype": "float32", "shape": [None, len(CLUSTER_INPUTS)]}, "opsets": OPSETS},
        "inputs": _inputs(CLUSTER_INPUTS),
        "outputs": [
            {"name": "label", "meaning": "cluster index 0..k-1 (int64), numbered from least to most valuable"},
            {"name": "scores", "meaning": f"float32 [rows, {k}]: distance to each cluster centre in the scaled space"},
        ],
        "score": {"name": "customer_cluster", "output": "label", "transform": "label",
                  "meaning": "cluster index as a number; see cluster_names"},
        "applies_when": {"input": "purchases_365d", "at_least": 1,
                         "why": "clusters describe buyers; no score for customers without purchases"},
        "cluster_names": {str(i): names[i] for i in range(k)},
        "cluster_descriptions": {str(i): descriptions[i] for i in range(k)},
        "training": _cdnow_training(len(rows)),
        "metrics": metrics,
        "reference": {"population": "all CDNOW customers at the end of calibration", "rows": len(rows),
                      "histograms": _reference(x, CLUSTER_INPUTS)},
    }
    _write_card(out, card)
    return pipe, metrics


def _describe_clusters(x: np.ndarray, assigned: np.ndarray, labels: np.ndarray, k: int) -> tuple[list[str], list[str], list[dict]]:
    # Recency and frequency in absolute terms a marketer reads the same way on any data;
    # spend relative to this population (its terciles).
    r, f, m = x[:, 0], x[:, 1], x[:, 2]
    m_lo, m_hi = np.quantile(m, [1 / 3, 2 / 3])
    names, descriptions, profile = [], [], []
    for i in range(k):
        sel = assigned == i
        mr, mf, mm = (float(np.median(v[sel])) for v in (r, f, m))
        words = [
            "recent" if mr <= 90 else "lapsed" if mr > 180 else "cooling",
            "one_time" if mf <= 1 else "frequent" if mf >= 4 else "repeat",
            "high_spend" if mm >= m_hi else "low_spend" if mm <= m_lo else "mid_spend",
        ]
        name = "_".join(words)
        if name in names:
            name = f"{name}_{i}"
        names.append(name)
        share, again = float(sel.mean()), float(labels[sel].mean())
        descriptions.append(
            f"{share:.0%} of customers. Median last purchase {mr:.0f} days before the end of calibration, "
            f"{mf:.0f} purchase{'s' if mf != 1 else ''} and ${mm:.0f} spent in the 273-day calibration period; "
            f"{again:.0%} bought again in the holdout."
        )
        profile.append({"cluster": i, "name": name, "customers": int(sel.sum()), "median_recency_days": mr,
                        "median_purchases_365d": mf, "median_revenue_365d": round(mm, 2),
                        "holdout_repurchase_rate": round(again, 4)})
    return names, descriptions, profile


def train_anomaly(
    train: SyntheticRows, test: SyntheticRows, out: Path, feeds: tuple[synthetic.FeedConfig, synthetic.FeedConfig]
) -> tuple[IsolationForest, dict]:
    """Fit on ``train`` (labels unused), evaluate against ``test``'s personas, export with its card."""
    rows, bots = train.features, train.bots
    train_feed, test_feed = feeds
    x = _matrix(rows, ANOMALY_INPUTS)
    model = IsolationForest(n_estimators=ANOMALY_TREES, max_samples=256, contamination="auto", random_state=SEED)
    model.fit(x)
    # Outlier guard: robust z of log1p(events in 5 minutes) against the whole training population
    # (median and MAD, which the few very active bots barely move).
    rate = np.log1p(x[:, ANOMALY_INPUTS.index(GUARD_INPUT)].astype(np.float64))
    median = float(np.median(rate))
    scale = float(1.4826 * np.median(np.abs(rate - median)))

    test_bots = test.bots
    xt = _matrix(test.features, ANOMALY_INPUTS)
    s = -model.score_samples(xt)  # the Isolation Forest paper's anomaly score in (0, 1]
    z = (np.log1p(xt[:, ANOMALY_INPUTS.index(GUARD_INPUT)].astype(np.float64)) - median) / scale
    guards = []
    customers = np.array(test.customers)
    bot_ids = set(customers[test_bots])
    human_ids = set(customers[~test_bots])
    for threshold in (0.6, 0.65, 0.7):
        for z_min in (2.0, 3.0):
            flagged = set(customers[(s >= threshold) & (z >= z_min)])
            guards.append({"anomaly_score_at_least": threshold, "event_rate_z_at_least": z_min,
                           "bots_flagged": round(len(flagged & bot_ids) / len(bot_ids), 4),
                           "humans_flagged": round(len(flagged & human_ids) / len(human_ids), 4)})
    metrics = {
        "evaluation": f"synthetic feed seed {test_feed.seed} ({test_feed.customers} customers, "
        f"{test_feed.events} events), persona 'bot' as ground truth; rows = every scored instant",
        "roc_auc_rows": round(float(roc_auc_score(test_bots, s)), 4),
        "pr_auc_rows": round(float(average_precision_score(test_bots, s)), 4),
        "event_rate_z_roc_auc_rows": round(float(roc_auc_score(test_bots, z)), 4),
        "bot_row_share": round(float(test_bots.mean()), 4),
        "customers": {"bots": len(bot_ids), "humans": len(human_ids)},
        "guard_ever_flagged": guards,
    }
    # Not skl2onnx: its graph has ~27 nodes per tree and costs ~1 ms per single-row call here;
    # iforest_onnx computes the same score with one tree-ensemble node (see its docstring).
    _save(isolation_forest_to_onnx(model, len(ANOMALY_INPUTS), INPUT_TENSOR, OPSETS), out / "anomaly.onnx")
    card = {
        "name": "anomaly",
        "version": VERSION,
        "task": "bot-like behaviour in the last hour (unsupervised); plus the event-rate outlier guard",
        "model": {"file": "anomaly.onnx",
                  "algorithm": f"sklearn IsolationForest({ANOMALY_TREES} trees, max_samples=256, contamination='auto'), "
                  "exported as one TreeEnsembleRegressor of leaf path lengths (flink_jobs/ml/iforest_onnx.py)",
                  "input": {"name": INPUT_TENSOR, "dtype": "float32", "shape": [None, len(ANOMALY_INPUTS)]}, "opsets": OPSETS},
        "inputs": _inputs(ANOMALY_INPUTS),
        "outputs": [
            {"name": "scores", "meaning": "float32 [rows, 1]: decision_function = score_samples - offset_ "
             "(below 0 = an outlier at the model's offset)"},
        ],
        "score": {"name": "anomaly_score", "output": "scores", "transform": "isolation_forest", "offset": float(model.offset_),
                  "meaning": "-(scores + offset) = the Isolation Forest paper's anomaly score s(x) in (0, 1]: "
                  "about 0.5 and below is ordinary, towards 1 isolated in very few splits"},
        "outlier_guard": {"name": "event_rate_z", "input": GUARD_INPUT, "transform": "log1p", "median": median, "scale": scale,
                          "meaning": "(log1p(events_5m) - median) / scale, scale = 1.4826 * MAD: a robust z-score of the "
                          "customer's event rate against the training population"},
        "training": {
            "data": "synthetic feed (flink_jobs/synthetic.py) replayed through SegmentEngine; rows = model inputs at "
            "every instant the stream scores; personas browser/buyer/abandoner/regular/bot (labels not used for fitting)",
            "feed": {"customers": train_feed.customers, "events": train_feed.events, "seed": train_feed.seed},
            "rows": len(rows),
            "bot_row_share": round(float(bots.mean()), 4),
            "seed": SEED,
            "libraries": _versions(),
        },
        "metrics": metrics,
        "reference": {"population": f"training rows (synthetic seed {train_feed.seed})", "rows": len(rows),
                      "histograms": _reference(x, ANOMALY_INPUTS)},
    }
    _write_card(out, card)
    return model, metrics


def _cdnow_training(rows: int) -> dict:
    return {
        "data": "CDNOW master transaction log from the PyPI package lifetimes 0.11.3 (datasets/CDNOW_master.txt): "
        "69,659 purchases by 23,570 customers who first bought in 1997-Q1",
        "event_time": "noon UTC of the purchase day + k minutes for the k-th earlier purchase of that customer that day",
        "calibration_period": [str(cdnow.CALIBRATION_START), str(cdnow.CALIBRATION_END)],
        "holdout_period": [str(cdnow.CALIBRATION_END + timedelta(days=1)), str(cdnow.HOLDOUT_END)],
        "features_at": f"{cdnow.CALIBRATION_END}T23:59:59.999Z, replayed through SegmentEngine.model_features",
        "rows": rows,
        "seed": SEED,
        "libraries": _versions(),
    }


def train_all(out: Path, progress: bool = True) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    with threadpool_limits(1):  # one thread: reductions in a fixed order, so bytes repeat
        t = _step(1, "CDNOW: read the transaction log and replay calibration purchases through SegmentEngine")
        data = cdnow_rows(progress=progress)
        _done(t, f"{len(data.customers):,} customers, {data.labels.mean():.1%} bought again in the holdout")
        t = _step(2, "purchase_propensity: gradient boosting, evaluated on held-out customers")
        results["purchase_propensity"] = train_propensity(data, out)[1]
        _done(t)
        t = _step(3, "customer_cluster: K-Means on scaled RFM, k by silhouette")
        results["customer_cluster"] = train_clusters(data, out)[1]
        _done(t)
        t = _step(4, "anomaly: replay two synthetic feeds, Isolation Forest on the first, evaluate on the second")
        feeds = (ANOMALY_TRAIN_FEED, ANOMALY_TEST_FEED)
        train_rows = synthetic_rows(ANOMALY_TRAIN_FEED, progress)
        test_rows = synthetic_rows(ANOMALY_TEST_FEED, progress)
        results["anomaly"] = train_anomaly(train_rows, test_rows, out, feeds)[1]
        _done(t)
    return results


def _check(out: Path) -> int:
    print(f"--check: retrain into a temporary folder and compare with {out}", file=sys.stderr, flush=True)
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        train_all(Path(tmp), progress=False)
        names = sorted(p.name for p in Path(tmp).iterdir())
        differ = [n for n in names if not (out / n).is_file() or not filecmp.cmp(Path(tmp) / n, out / n, shallow=False)]
    _done(t)
    if differ:
        print(f"differ from the checked-in artifacts: {', '.join(differ)}", file=sys.stderr)
        return 1
    print(f"identical: {', '.join(names)}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flink_jobs.ml.train", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the .onnx files and cards (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="retrain into a temporary folder and compare bytes with --out")
    args = parser.parse_args(argv)
    if args.check:
        return _check(args.out)
    start = time.perf_counter()
    results = train_all(args.out)
    p = results["purchase_propensity"]
    c = results["customer_cluster"]
    a = results["anomaly"]
    print(f"[5/5] wrote {args.out} in {time.perf_counter() - start:.0f} s")
    print(f"  purchase_propensity  ROC-AUC {p['roc_auc']}  PR-AUC {p['pr_auc']}  "
          f"(recency only: {p['baseline_recency_only']['roc_auc']} / {p['baseline_recency_only']['pr_auc']})")
    print(f"  customer_cluster     k={c['chosen_k']}  silhouette {c['silhouette']}")
    for cl in c["clusters"]:
        print(f"    {cl['cluster']} {cl['name']}: {cl['customers']} customers, repurchase {cl['holdout_repurchase_rate']:.0%}")
    print(f"  anomaly              ROC-AUC (rows) {a['roc_auc_rows']}  PR-AUC {a['pr_auc_rows']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
