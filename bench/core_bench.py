"""Micro-benchmark of the pure core: microseconds per event and bytes of state per customer.

All rules in rules/ over a synthetic stream (personas, duplicates, disorder), driven through
the local runner (the same watermark/timer semantics the Flink job has). Printed next to, in the
same run:
  - floor: the same runner loop with a trivial per-customer counter instead of the engine;
  - the engine without the generic per-event-type aggregates (what "new rules without backfill"
    costs);
  - the state (de)serialisation a Flink ValueState would add per event.
Figures are printed, never asserted.

    .venv/bin/python bench/core_bench.py [--events 200000] [--customers 20000]

Instruction counts, which repeat where timings on a shared machine do not (bench/HISTORY.md,
session 33): the engine's run alone, and the feed's generation alone to take off it:

    PYTHONHASHSEED=0 valgrind --tool=callgrind .venv/bin/python bench/core_bench.py \
        --events 20000 --customers 2000 --only engine      # (and --only feed)
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flink_jobs.core.durations import SECOND  # noqa: E402
from flink_jobs.core.engine import EngineConfig, SegmentEngine, StepResult  # noqa: E402
from flink_jobs.core.loader import load_rules  # noqa: E402
from flink_jobs.core.model import Event  # noqa: E402
from flink_jobs.core.runner import LocalRunner  # noqa: E402
from flink_jobs.core.scoring import FixedScorer  # noqa: E402
from flink_jobs.core.state import decode_state, encode_state  # noqa: E402
from flink_jobs.synthetic import FeedConfig, generate_feed  # noqa: E402

BOUND = 5 * SECOND


def synthetic_events(n: int, customers: int, **feed) -> list[Event]:
    """Valid, duplicate, out-of-order and late events (malformed ones never reach the core);
    ``feed``: other FeedConfig settings (10 journeys starting per second unless given)."""
    out = []
    for record in generate_feed(FeedConfig(customers=customers, events=n, **{"journeys_per_second": 10, **feed})):
        if record.kind == "malformed":
            continue
        d = json.loads(record.value)
        out.append(Event(d["event_id"], d["customer_id"], d["event_type"], d["event_time"], d["properties"]))
    return out


class _CountingEngine:
    """The floor: same runner, a dict increment per event instead of the rules."""

    rule_version = "floor"

    def new_state(self, customer_id: str):
        from flink_jobs.core.state import CustomerState

        return CustomerState(customer_id)

    def step(self, state, item, watermark) -> StepResult:
        if isinstance(item, Event):
            state.scores["n"] = state.scores.get("n", 0) + 1
        return StepResult(state)


def _run(engine, events: list[Event]) -> tuple[float, LocalRunner]:
    gc.collect()
    runner = LocalRunner(engine, out_of_orderness=BOUND)  # type: ignore[arg-type]
    start = time.perf_counter()
    runner.feed_all(events)
    runner.advance(max(e.event_time for e in events) + BOUND)
    return time.perf_counter() - start, runner


def _serde_cost(runner: LocalRunner, samples: int = 20_000) -> tuple[float, float]:
    states = list(runner.states.values())[:samples]
    start = time.perf_counter()
    blobs = [encode_state(s) for s in states]
    mid = time.perf_counter()
    for b in blobs:
        decode_state(b)
    end = time.perf_counter()
    return (mid - start) / len(states) * 1e6, (end - mid) / len(states) * 1e6


def _sizes(runner: LocalRunner) -> list[int]:
    return sorted(len(encode_state(s)) for s in runner.states.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--rules", default=str(ROOT / "rules"))
    parser.add_argument(
        "--only", choices=("all", "engine", "feed"), default="all",
        help="engine: generate the feed and run the engine once (generic aggregates on), nothing else; "
        "feed: only generate it (for instruction counts: the engine's share is the difference)",
    )
    args = parser.parse_args(argv)

    rules = load_rules([args.rules])
    t = time.perf_counter()
    events = synthetic_events(args.events, args.customers)
    print(f"synthetic stream: {len(events)} events for up to {args.customers} customers "
          f"({time.perf_counter() - t:.1f}s to generate); {len(rules.segments)} segments from {args.rules}")
    scorer = FixedScorer(default={"purchase_propensity": 0.5, "anomaly_score": 0.1})
    if args.only != "all":
        if args.only == "engine":
            seconds, runner = _run(SegmentEngine(rules, EngineConfig(), scorer=scorer), events)
            print(f"engine: {seconds / len(events) * 1e6:.1f} µs/event, {len(runner.changes)} changes")
        return 0

    rows = []
    floor_s, _ = _run(_CountingEngine(), events)
    rows.append(("floor (runner + dict increment)", floor_s, None))
    for generic in (True, False):
        engine = SegmentEngine(rules, EngineConfig(generic_aggregates=generic), scorer=scorer)
        seconds, runner = _run(engine, events)
        label = "engine, all rules" + (" + generic aggregates" if generic else " (no generic aggregates)")
        rows.append((label, seconds, runner))

    n = len(events)
    print()
    print(f"{'run':48} {'µs/event':>9} {'events/s':>10} {'changes':>8} {'state B/customer p50 / p99 / max':>34}")
    for label, seconds, runner in rows:
        line = f"{label:48} {seconds / n * 1e6:9.1f} {n / seconds:10,.0f}"
        if runner is not None:
            sizes = _sizes(runner)
            p50 = sizes[len(sizes) // 2]
            p99 = sizes[min(len(sizes) - 1, int(len(sizes) * 0.99))]
            line += f" {len(runner.changes):8} {p50:>14} / {p99:>6} / {sizes[-1]:>6}"
        print(line)
    engine_row = rows[1]
    runner = engine_row[2]
    assert runner is not None
    enc, dec = _serde_cost(runner)
    sizes = _sizes(runner)
    print()
    print(f"engine cost over the floor: {(engine_row[1] - floor_s) / n * 1e6:.1f} µs/event")
    print(f"state pickling a Flink ValueState would add per event: encode {enc:.1f} µs + decode {dec:.1f} µs "
          f"(mean state {statistics.mean(sizes):.0f} B over {len(sizes)} customers)")
    stats = runner.stats
    print(f"stream: {stats.duplicates} duplicates ignored, {stats.late} late, {stats.timers_fired} timers fired, "
          f"{stats.instants} instants evaluated")
    counts: dict[str, int] = {}
    for c in runner.changes:
        counts[c.segment_id] = counts.get(c.segment_id, 0) + (1 if c.kind == "enter" else 0)
    print("enters by segment: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
