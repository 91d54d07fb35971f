"""Python GC pauses of the engine with a full state cache: Python's default collector against
the job's policy (``flink_jobs/runtime/gc_policy.py``), in the same run, each in a fresh process.

The engine steps a synthetic stream (all rules in rules/) while every customer's decoded state
stays in memory, as the segment function's cache keeps them (``job.state_cache_memory``,
default 768 MiB per parallel task: about 150k states of the live bench's feed). Printed per policy: collections and their longest / total pause by generation, the
run's time, and for the policy the pause of one full collection (what it costs every
``job.python_full_gc_interval``). Figures are printed, never asserted.

    .venv/bin/python bench/gc_bench.py [--events 300000] [--customers 50000]
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def child(policy: str, events: int, customers: int) -> dict:
    from core_bench import BOUND, synthetic_events

    from flink_jobs.core.engine import EngineConfig, SegmentEngine
    from flink_jobs.core.loader import load_rules
    from flink_jobs.core.runner import LocalRunner
    from flink_jobs.runtime import gc_policy

    stream = synthetic_events(events, customers)
    engine = SegmentEngine(load_rules([str(ROOT / "rules")]), EngineConfig())
    pauses: list[tuple[str, float]] = []
    started = [0.0]

    def observe(phase: str, info: dict) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses.append((str(info["generation"]), time.perf_counter() - started[0]))

    gc.collect()
    collector = gc_policy.install(3600.0) if policy == "policy" else None
    gc.callbacks.append(observe)
    runner = LocalRunner(engine, out_of_orderness=BOUND)  # keeps every customer's state
    start = time.perf_counter()
    runner.feed_all(stream)
    runner.advance(max(e.event_time for e in stream) + BOUND)
    seconds = time.perf_counter() - start
    gc.callbacks.remove(observe)
    out: dict = {"seconds": seconds, "states": len(runner.states), "events": len(stream)}
    for generation in ("0", "1", "2"):
        p = [s for g, s in pauses if g == generation]
        out[generation] = (len(p), max(p, default=0.0), sum(p))
    if collector is not None:
        collector._next_full = 0.0  # due now
        out["full"] = collector.tick()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--customers", type=int, default=50_000)
    parser.add_argument("--child", choices=("default", "policy"))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.events, args.customers)))
        return 0
    results = {}
    for policy in ("default", "policy"):
        out = subprocess.run(
            [sys.executable, __file__, "--child", policy, "--events", str(args.events), "--customers", str(args.customers)],
            check=True,
            capture_output=True,
            text=True,
        )
        results[policy] = json.loads(out.stdout.strip().splitlines()[-1])
    first = results["default"]
    print(f"{first['events']:,} events, {first['states']:,} customer states kept in memory, all rules in rules/")
    print()
    print(f"{'collector':34} {'run s':>7} {'gen 2: n':>9} {'max ms':>8} {'total ms':>9} {'gen 1 max ms':>13} {'full ms':>8}")
    labels = {"default": "Python's default", "policy": "gc_policy (freeze survivors)"}
    for policy, r in results.items():
        n2, max2, sum2 = r["2"]
        full = r.get("full")
        print(
            f"{labels[policy]:34} {r['seconds']:7.1f} {n2:9} {max2 * 1000:8.0f} {sum2 * 1000:9.0f} "
            f"{r['1'][1] * 1000:13.1f} {full * 1000 if full is not None else float('nan'):8.0f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
