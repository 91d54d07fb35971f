"""How long a published rule set takes to reach every customer, and what it holds up.

When the job takes a new set, each batch key brings all its customers up to it at its next call
or sync marker (``BatchEngine._prepare``: read, decode, reconcile, re-evaluate, advance to the
watermark, write). This drives the batch engine as the Flink function does, without Flink: the
customers' states in memory stores per batch key (decoded from bytes on each sweep, as a Flink
MapState would hand them over; the decoded-state cache is cleared first, as after a restart or
for customers long idle), all rules of ``rules/`` with the shipped models, then:

  A  sync markers to every key with the rules unchanged (what a checkpoint costs anyway)
  B  a new set published (the shipped rules plus a 30-day segment over history), then sync
     markers to every key: the sweep

interleaved A, B, B, A (each B publishes another new segment, so each sweeps again). Printed:
seconds for all keys, microseconds per customer, and the longest single key's call: a live
event of that key waits that long once, so it is what the sweep adds to live latency at most
(32 keys by default; more keys, shorter waits). Figures are printed, never asserted.

    .venv/bin/python bench/sweep_bench.py [--customers 100000] [--events 300000]
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flink_jobs.core.engine import EngineConfig  # noqa: E402
from flink_jobs.core.loader import load_rules_from_texts  # noqa: E402
from flink_jobs.ml.observed import load_scorer  # noqa: E402
from flink_jobs.runtime import gc_policy  # noqa: E402
from flink_jobs.runtime.batch_engine import BatchEngine  # noqa: E402
from flink_jobs.runtime.batching import BatchRecord, batch_key, encode_batch  # noqa: E402
from flink_jobs.runtime.metrics import JobMetrics, MetricsConfig  # noqa: E402
from flink_jobs.runtime.redis_writer import RedisConfig  # noqa: E402
from flink_jobs.runtime.rule_files import RULE_SET_KEY  # noqa: E402
from flink_jobs.runtime.serde import ParseLimits  # noqa: E402
from flink_jobs.synthetic import FeedConfig, generate_feed  # noqa: E402

KEYS = 32
RULES = {p.name: p.read_text() for p in sorted((ROOT / "rules").glob("*.yaml"))}
NEW_SEGMENT = """
  - id: {sid}
    description: Viewed a page in the last 30 days (filled from the aggregates the job holds).
    owner: bench
    when:
      count: page_view
      within: 30d
      at_least: {n}
"""


class Store(dict):
    def put(self, key: str, value: bytes) -> None:
        self[key] = value


class Files(dict):
    def put(self, key: str, value: str) -> None:
        self[key] = value

    def remove(self, key: str) -> None:
        del self[key]

    def contains(self, key: str) -> bool:
        return key in self


class Timers:
    def __init__(self, watermark: int) -> None:
        self.watermark = watermark

    def current_watermark(self) -> int:
        return self.watermark

    def register_event_time_timer(self, timestamp: int) -> None:
        pass

    def register_processing_time_timer(self, timestamp: int) -> None:
        pass


class Writer:
    def write(self, changes) -> int:  # type: ignore[no-untyped-def]
        return len(list(changes))

    def close(self) -> None:
        pass


def _engine() -> BatchEngine:
    rules = load_rules_from_texts(RULES)
    engine = BatchEngine(
        rules,
        EngineConfig(),
        limits=ParseLimits(),
        redis=RedisConfig("redis://unused", "seg:", 0),
        batch_keys=KEYS,
        placed_keys=list(range(KEYS)),
        source_topic="events",
        metrics_config=MetricsConfig(False, "127.0.0.1", "", 9260, 9299, "", False, "9250"),
        scorer=functools.partial(load_scorer, "", rules.catalog.scores),
        full_gc_interval=0,
        gate_key="gate/bench/run",
    )
    engine.open(metrics=JobMetrics(), writer=Writer())
    return engine


def _markers(engine: BatchEngine, stores: dict[int, Store], watermark: int) -> tuple[float, float, int]:
    """Sync markers to every key: total seconds, the longest key's seconds, changes emitted."""
    engine._cache.clear()  # the states come from the store, as for customers not seen lately
    longest, changes = 0.0, 0
    started = time.perf_counter()
    for key, store in stores.items():
        t = time.perf_counter()
        changes += sum(1 for tag, _, _ in engine.batch(key, b"", watermark, store, Timers(watermark)) if tag is None)
        longest = max(longest, time.perf_counter() - t)
    return time.perf_counter() - started, longest, changes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=300_000)
    args = parser.parse_args()

    engine = _engine()
    stores = {k: Store() for k in range(KEYS)}
    by_key: dict[int, list[BatchRecord]] = {k: [] for k in range(KEYS)}
    last = 0
    feed = FeedConfig(customers=args.customers, events=args.events, seed=5, journeys_per_second=50, history_days=60)
    started = time.perf_counter()
    for n, record in enumerate(generate_feed(feed)):
        if record.event_time is None:
            continue
        key = batch_key(record.key.decode(), KEYS)
        by_key[key].append(BatchRecord(0, n, record.event_time, record.key, record.value))
        last = max(last, record.event_time)
        if len(by_key[key]) >= 500:
            list(engine.batch(key, encode_batch(by_key[key]), last - 10_000, stores[key], Timers(last - 10_000)))
            by_key[key] = []
    watermark = last + 1
    for key, records in by_key.items():
        if records:
            list(engine.batch(key, encode_batch(records), watermark, stores[key], Timers(watermark)))
    _markers(engine, stores, watermark)  # every state written
    customers = sum(len(s) for s in stores.values())
    print(f"{customers:,} customers in {KEYS} batch keys from {args.events:,} records in {time.perf_counter() - started:.0f} s", flush=True)

    files = Files(RULES)
    rows = []
    for n, run in enumerate(("A", "B", "B", "A")):
        watermark += 1_000
        if run == "B":
            texts = dict(RULES)
            texts["value.yaml"] = texts["value.yaml"] + NEW_SEGMENT.format(sid=f"bench_monthly_{n}", n=n)
            engine.rule_file(files, RULE_SET_KEY, json.dumps({"files": texts, "request": f"bench-{n}"}))
        seconds, longest, changes = _markers(engine, stores, watermark)
        rows.append((run, seconds, longest, changes))
        print(
            f"{run}  {seconds:6.2f} s for all keys, {seconds / customers * 1e6:6.1f} µs per customer, "
            f"longest key {longest * 1000:6.0f} ms, {changes:,} changes",
            flush=True,
        )
    gc_policy.install(0).uninstall()
    return 0


if __name__ == "__main__":
    sys.exit(main())
