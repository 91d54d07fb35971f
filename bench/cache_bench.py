"""The state cache's churn, offline: the engine with a full cache against one that holds everyone.

Live, the segment task's CPU climbs through a run: customers' states grow with their events,
every changed state is encoded again within ``job.state_write_behind``, and once the state cache
is full every new customer and every miss evicts a decoded state (dozens of Python objects to
free) and every miss decodes one (as many to allocate). ``perf`` on the task thread put that churn at about 10% of a core
early in a live run and 32% late (bench/HISTORY.md, "Interned keys, and where the live climb
is"). This runs the same work in one process, without Kafka or Flink, so that a change to the
state's layout can be measured quietly before a live run; it prints the cost per event by
quarter of the feed, since it climbs offline too (bench/HISTORY.md, "Format 5, and the climb
offline").

The engine runs over the live bench's synthetic feed (all rules in rules/; many customers
active at once) the way the job feeds it: each event held until the watermark (the highest
event time less the bound) passes it, as the job's batcher holds it, then a customer's released
events taken in one step, then the timers the watermark makes due (the local runner's timer
service). Its states are kept the way the segment function keeps them: its cache of decoded
states within a memory budget (``flink_jobs.runtime.state_cache``, ``job.state_cache_memory``) over a store of encoded bytes (a dict here, Flink's keyed
state in the job), the changed states encoded into the store every ``--write-every`` events (the
write-behind), and the job's garbage collector policy installed. (Fed event by event instead,
as ``LocalRunner.feed`` does, every event would be stepped twice, once to buffer it and once at
its timer, and 1.6 states encoded per event instead of about one.)
Printed, for a cache that holds every customer and for one within ``--cache-memory`` MiB, in
the same run and each in a fresh process: microseconds per event, the share of the lookups of
known customers that missed, the time in encoding, decoding and adding to the cache (evicting
and sampling the states' size), and the states cached at the end with their estimated size.
Figures are printed, never asserted.

    .venv/bin/python bench/cache_bench.py [--events 300000] [--customers 60000] [--cache-memory 150]
"""

from __future__ import annotations

import argparse
import heapq
import json
import subprocess
import sys
import time
from collections.abc import MutableMapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


class CachedStates(MutableMapping):
    """``LocalRunner.states`` as the segment function keeps them (see the module doc)."""

    def __init__(self, budget: int, write_every: int, collector) -> None:
        from flink_jobs.core.state import decode_state, encode_state
        from flink_jobs.runtime.state_cache import StateCache

        self._decode, self._encode = decode_state, encode_state
        self.write_every, self.gc = write_every, collector
        self.cache = StateCache(budget)  # the segment function's own
        self.store: dict[str, bytes] = {}
        self.dirty: dict = {}
        self.sets = self.events = 0
        self.encode_s = self.decode_s = self.evict_s = 0.0

    hits = property(lambda self: self.cache.hits)
    misses = property(lambda self: self.cache.misses)
    new = property(lambda self: self.cache.new)

    def __getitem__(self, customer_id):
        state = self.get(customer_id)
        if state is None:
            raise KeyError(customer_id)
        return state

    def get(self, customer_id, default=None):
        state = self.cache.get(customer_id)
        if state is not None:
            return state
        state = self.dirty.get(customer_id)
        if state is not None:  # evicted, not written yet (the job does not cache it again either)
            self.cache.hit()
            return state
        data = self.store.get(customer_id)
        if data is None:
            return default  # the runner makes a new state and sets it
        start = time.perf_counter()
        state = self._decode(data)
        self.decode_s += time.perf_counter() - start
        self.gc.long_lived()
        self._keep(customer_id, state, new=False)
        return state

    def __setitem__(self, customer_id, state) -> None:
        if customer_id not in self.cache and customer_id not in self.dirty and customer_id not in self.store:
            self._keep(customer_id, state, new=True)
        self.dirty[customer_id] = state
        self.sets += 1
        if self.sets % 250 == 0:
            self.gc.tick()  # the job ticks at the start of every call

    def took(self, events: int) -> None:
        """``events`` more events were stepped: write the changed states every ``write_every``."""
        before, self.events = self.events, self.events + events
        if before // self.write_every != self.events // self.write_every:
            self.write()

    def _keep(self, customer_id, state, new: bool) -> None:
        start = time.perf_counter()
        self.cache.add(customer_id, state, new=new)  # evicted states are freed here unless dirty
        self.evict_s += time.perf_counter() - start

    def write(self) -> None:
        start = time.perf_counter()
        store, encode = self.store, self._encode
        for customer_id, state in self.dirty.items():
            store[customer_id] = encode(state)
        self.dirty = {}
        self.encode_s += time.perf_counter() - start

    def __delitem__(self, customer_id) -> None:
        raise NotImplementedError

    def _known(self) -> set:
        return self.store.keys() | set(self.cache) | self.dirty.keys()

    def __iter__(self):
        return iter(self._known())

    def __len__(self) -> int:
        return len(self._known())


def feed_held(runner, states: CachedStates, stream: list, marks: list | None = None) -> None:
    """The events as the job's batcher passes them (see the module doc): held until the watermark
    passes them, then each customer's released events in one step, then the watermark's timers.
    ``marks``: appends ``time.perf_counter()`` after each quarter of the stream."""
    from core_bench import BOUND

    held: list = []
    highest = None
    quarter = max(1, len(stream) // 4)
    for seq, event in enumerate(stream):
        if marks is not None and seq and seq % quarter == 0:
            marks.append(time.perf_counter())
        heapq.heappush(held, (event.event_time, seq, event))
        if highest is None or event.event_time > highest:
            highest = event.event_time
            _release(runner, states, held, highest - BOUND - 1)
    _release(runner, states, held, highest + BOUND if highest is not None else 0)


def _release(runner, states: CachedStates, held: list, watermark: int) -> None:
    if watermark <= runner.watermark:
        return
    by_customer: dict = {}
    while held and held[0][0] <= watermark:
        event = heapq.heappop(held)[2]
        by_customer.setdefault(event.customer_id, []).append(event)
    engine = runner.engine
    for customer_id, events in by_customer.items():
        state = states.get(customer_id)
        if state is None:
            state = engine.new_state(customer_id)
        result = engine.step(state, events, watermark)
        states[customer_id] = result.state
        runner._collect(customer_id, result)
    released = sum(map(len, by_customer.values()))
    runner.stats.events += released
    runner.advance(watermark)  # then the timers it makes due
    states.took(released)


def child(events: int, customers: int, budget: int, write_every: int, journeys_per_second: float) -> dict:
    from core_bench import BOUND, synthetic_events

    from flink_jobs.core.engine import EngineConfig, SegmentEngine
    from flink_jobs.core.loader import load_rules
    from flink_jobs.core.runner import LocalRunner
    from flink_jobs.core.scoring import FixedScorer
    from flink_jobs.runtime import gc_policy

    # The live bench's feed (bench/job_bench.py: journeys at a twentieth of the event rate, in
    # order, so that many customers are active at once).
    stream = synthetic_events(
        events, customers, journeys_per_second=journeys_per_second, seed=5, out_of_order_share=0.0, late_share=0.0
    )
    scorer = FixedScorer(default={"purchase_propensity": 0.5, "anomaly_score": 0.1})
    engine = SegmentEngine(load_rules([str(ROOT / "rules")]), EngineConfig(), scorer=scorer)
    collector = gc_policy.install(3600)
    states = CachedStates(budget or 64 * 1024**3, write_every, collector)  # 0: room for everyone
    runner = LocalRunner(engine, out_of_orderness=BOUND, states=states)  # type: ignore[arg-type]
    start = time.perf_counter()
    marks = [start]
    feed_held(runner, states, stream, marks)
    states.write()
    seconds = time.perf_counter() - start
    marks = marks[:4] + [time.perf_counter()]
    quarter = len(stream) // 4
    known = states.hits + states.misses
    return {
        "events": len(stream),
        "us_per_event": seconds / len(stream) * 1e6,
        "miss_share": states.misses / known if known else 0.0,
        "new": states.new,
        "encode_us": states.encode_s / len(stream) * 1e6,
        "decode_us": states.decode_s / len(stream) * 1e6,
        "evict_us": states.evict_s / len(stream) * 1e6,
        "cached": len(states.cache),
        "state_kb": states.cache.state_bytes / 1024,
        "quarters_us": [(b - a) / quarter * 1e6 for a, b in zip(marks, marks[1:])],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--customers", type=int, default=60_000)
    parser.add_argument(
        "--cache-memory", type=int, default=150,
        help="MiB: the smaller cache's budget (job.state_cache_memory; the other holds everyone)",
    )
    parser.add_argument("--write-every", type=int, default=5_000, help="events between writes of the changed states")
    parser.add_argument(
        "--journeys-per-second", type=float, default=240.0,
        help="journeys started per second of event time (the live bench starts rate/20: 240 at 4,800 events/s)",
    )
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args.events, args.customers, args.child, args.write_every, args.journeys_per_second)))
        return 0
    print(f"{args.events:,} events asked for up to {args.customers:,} customers, {args.journeys_per_second:g} journeys "
          f"starting per second, changed states written every {args.write_every:,} events; each cache in a fresh process")
    print(f"{'cache':>18} {'µs/event':>9} {'misses':>7} {'encode':>7} {'decode':>7} {'add':>7}  (µs per event)"
          "  by quarter of the feed; states cached at the end, KB each (estimated)")
    for size in (0, args.cache_memory * 1024 * 1024):
        out = subprocess.run(
            [sys.executable, __file__, "--events", str(args.events), "--customers", str(args.customers),
             "--write-every", str(args.write_every), "--journeys-per-second", str(args.journeys_per_second),
             "--child", str(size)],
            capture_output=True, text=True, check=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        label = "everyone" if size == 0 else f"{args.cache_memory:,} MiB"
        print(f"{label:>18} {r['us_per_event']:9.1f} {r['miss_share']:7.0%} {r['encode_us']:7.1f} "
              f"{r['decode_us']:7.1f} {r['evict_us']:7.1f}  {', '.join(f'{q:.0f}' for q in r['quarters_us'])}; "
              f"{r['cached']:,} states, {r['state_kb']:.2f} KB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
