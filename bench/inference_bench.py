"""Model inference cost: µs per event for each model, single row vs batches, and the scorer.

    .venv/bin/python bench/inference_bench.py [--events 20000] [--calls 3000]

Rows are the model inputs the stream computes for a synthetic feed (replayed through
SegmentEngine), in stream order. Prints:

1. onnxruntime alone, per model: one row per call, and batches of 64 and 256 (µs per row);
2. OnnxScorer.score per event (all models, the outlier guard, Python around the calls), with
   the memo off and on (its hit rate), and score_batch over 256 events.

Figures, not assertions; another process on the machine moves them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flink_jobs import synthetic  # noqa: E402
from flink_jobs.ml import datasets  # noqa: E402
from flink_jobs.ml.serving import OnnxScorer  # noqa: E402


def _pct(values: list[float]) -> tuple[float, float]:
    a = np.array(values) * 1e6
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def bench_sessions(scorer: OnnxScorer, rows: list[dict[str, float]], calls: int) -> None:
    print(f"\n1. onnxruntime alone (1 thread), µs per row; {calls} single calls, batches over the same rows")
    print(f"   {'model':<22}{'single p50':>11}{'p99':>9}{'batch64 p50':>13}{'p99':>9}{'batch256 p50':>14}{'p99':>9}")
    for model in scorer._models:  # the loaded sessions themselves, exactly as served
        card = model.card
        x = np.array([[r[f] for f in card.inputs] for r in rows], dtype=np.float32)
        run = model.session.run
        feed_name, out = card.input_tensor, [card.score.output]
        for i in range(50):  # warm up
            run(out, {feed_name: x[i : i + 1]})
        single = []
        for i in range(calls):
            row = x[i % len(x) : i % len(x) + 1]
            t = time.perf_counter()
            run(out, {feed_name: row})
            single.append(time.perf_counter() - t)
        figures = list(_pct(single))
        for size in (64, 256):
            per_row = []
            for start in range(0, len(x) - size + 1, size):
                batch = x[start : start + size]
                t = time.perf_counter()
                run(out, {feed_name: batch})
                per_row.append((time.perf_counter() - t) / size)
            figures += _pct(per_row)
        print(f"   {card.name:<22}" + "".join(f"{v:>{w}.1f}" for v, w in zip(figures, (11, 9, 13, 9, 14, 9))))


def bench_scorer(rows: list[dict[str, float]]) -> None:
    print(f"\n2. OnnxScorer over {len(rows):,} scored instants in stream order, µs per event")
    for label, cache in (("score(), memo off", 0), ("score(), memo on", 65_536)):
        scorer = OnnxScorer(cache_size=cache)
        calls = [0]

        def count(m: str, s: float, v: object, calls: list[int] = calls) -> None:
            calls[0] += 1

        scorer.observer = count
        times = []
        for row in rows:
            t = time.perf_counter()
            scorer.score("c", row)
            times.append(time.perf_counter() - t)
        p50, p99 = _pct(times)
        print(f"   {label:<26} p50 {p50:7.1f}  p99 {p99:7.1f}  mean {np.mean(times) * 1e6:7.1f}"
              f"  onnxruntime calls {calls[0]:,} ({calls[0] / len(rows):.2f} per event)")
    for size in (64, 256):
        scorer = OnnxScorer(cache_size=0)
        per_event = []
        for start in range(0, len(rows) - size + 1, size):
            t = time.perf_counter()
            scorer.score_batch(rows[start : start + size])
            per_event.append((time.perf_counter() - t) / size)
        p50, p99 = _pct(per_event)
        print(f"   {f'score_batch({size}), memo off':<26} p50 {p50:7.1f}  p99 {p99:7.1f}  mean {np.mean(per_event) * 1e6:7.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="synthetic events to replay for rows")
    parser.add_argument("--calls", type=int, default=3_000, help="single-row calls per model")
    args = parser.parse_args(argv)
    config = synthetic.FeedConfig(customers=2_000, events=args.events, seed=31)
    t = time.perf_counter()
    rows = datasets.synthetic_rows(config).features
    print(f"rows: {len(rows):,} scored instants from a synthetic feed of {args.events:,} events "
          f"(replayed in {time.perf_counter() - t:.1f} s)")
    scorer = OnnxScorer()
    for card in scorer.cards.values():
        print(f"  {card.name}: {card.raw['model']['algorithm']}, {card.raw['model']['bytes']:,} bytes")
    bench_sessions(scorer, rows, args.calls)
    bench_scorer(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
