"""End-to-end benchmark of the segmentation job on the real local stack (Kafka, Redis, Flink).

Over one pre-loaded Kafka topic of synthetic events (personas, duplicates, disorder, malformed
records; default 1M events, 100k customers, all rules in rules/), in the same run:

  job        the segmentation job as shipped (bounded run; thread mode unless --set says otherwise),
             scoring every customer instant with the ONNX models (job.models, on by default)
  nomodels   the same job without the models (job.models=false): its throughput next to `job`
             is the cost of inference
  floor      a no-op keyed PyFlink pipeline: same Kafka source, key_by(customer) in Python,
             a KeyedProcessFunction that counts in ValueState: the per-event PyFlink floor
  batched    the job's JVM batcher + a Python batch function that only counts: the floor of
             the batched design
  python     a plain single-process Python consumer (kafka-python) doing the same rules with the
             same core (parse, SegmentEngine via the local runner, Redis pipelines)

Each Flink variant runs in its own process (a fresh JVM); events/s are over the time after the
fixed cost of a run, measured by the same pipeline over an empty topic. The TaskManager's peak
resident memory is the peak RSS of the mini-cluster JVM (in thread mode Python runs inside it)
plus, in process mode, its Python worker processes.

Latency: the job runs unbounded while a producer sends live events (event time = now) at half
the measured job rate (or at --latency-rate), generated beforehand and sent by librdkafka, with
the feed's own lag to the broker printed next to the job's figures. Event-to-segment latency is
the change record's Kafka timestamp minus the change's event time (live, Redis is written in the
same call, just before the record is emitted), p50 and p99, with the watermark bound it includes
printed next to it. The first --latency-warmup seconds of the feed are not counted: until both
partitions have sent an event the watermark does not move, and the JVM has not compiled its hot
paths yet (a job that has run for a while no longer pays either). The latency run uses the
job's settings (and --set). Per 15 s of the counted feed it also prints p99 and the busiest
TaskManager thread's share of a core (the segment task in thread mode): live, a customer's state
grows as its events come in, and with it the cost of each event, so a rate the job keeps up for
a minute may be one it cannot keep up for five. Last it prints the share of the job's state cache
lookups that missed (read from the job's own metrics): the live feed keeps more customers active
than the default cache holds, and each miss reads, decodes and evicts a state.

Job settings come from --set only: SEGMENTS_* variables of the shell are not passed to the runs
(a note says so), so that two runs of a comparison cannot differ unseen.

Figures are printed, never asserted.

    .venv/bin/python bench/job_bench.py [--events 1000000] [--customers 100000]
        [--only job,nomodels,floor,batched,python,latency] [--latency-seconds 60] [--latency-warmup 20]
        [--latency-rate EVENTS_PER_S] [--latency-dump latency.csv] [--parallelism 2]
        [--set job.python_execution_mode=process]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PARTITIONS = 2
BOUND_MS = 5_000  # the bench feed's disorder stays within 3 s


def _stack_env() -> dict[str, str]:
    from flink_jobs.config import read_env_file

    subprocess.run([str(ROOT / "deploy" / "local" / "stack.sh"), "start"], check=True, capture_output=True)
    return read_env_file(ROOT / ".cache" / "stack" / "stack.env")


def _admin(bootstrap: str):
    from kafka.admin import KafkaAdminClient

    return KafkaAdminClient(bootstrap_servers=bootstrap)


def _held_records(bootstrap: str, topic: str) -> int:
    """Records a topic holds now: end minus beginning offsets (retention may have deleted the
    oldest, which the end offsets alone would still count)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or set()]
    held = 0
    if parts:
        begins, ends = consumer.beginning_offsets(parts), consumer.end_offsets(parts)
        held = sum(ends[p] - begins[p] for p in parts)
    consumer.close()
    return held


def _create_topics(bootstrap: str, names: list[str], partitions: int = 1, configs: dict[str, str] | None = None) -> None:
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = _admin(bootstrap)
    try:
        admin.create_topics([NewTopic(n, partitions, 1, topic_configs=configs or {}) for n in names])
    except TopicAlreadyExistsError:
        pass
    admin.close()


def _feed_config(events: int, customers: int):
    from flink_jobs.synthetic import FeedConfig

    # Dense event time (about 2k events per second of event time), as live traffic at scale.
    return FeedConfig(customers=customers, events=events, journeys_per_second=events / 500, seed=11)


def preload(bootstrap: str, events: int, customers: int) -> str:
    """The input topic, produced once and reused by later runs with the same size."""
    from kafka import KafkaProducer

    from flink_jobs.synthetic import generate_feed

    topic = f"bench.events.{events}.{customers}.v1"
    have = _held_records(bootstrap, topic) if topic in _admin(bootstrap).list_topics() else -1
    records = list(generate_feed(_feed_config(events, customers)))
    if have == len(records):
        print(f"input: {topic} already holds {have:,} records", flush=True)
        return topic
    if have >= 0:
        _admin(bootstrap).delete_topics([topic])
        time.sleep(2)
    # Kept until deleted: with the broker's default retention (7 days, by the records' produce
    # time) a reused input lost its records, and the job runs read nothing (12.5M "events/s").
    _create_topics(bootstrap, [topic], PARTITIONS, {"retention.ms": "-1"})
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=50, batch_size=512 * 1024, acks=1)
    start = time.perf_counter()
    for i, r in enumerate(records):
        producer.send(topic, key=r.key, value=r.value)
        if i % 100_000 == 0 and i:
            print(f"  produced {i:,}", flush=True)
    producer.flush()
    producer.close()
    print(f"input: produced {len(records):,} records to {topic} in {time.perf_counter() - start:.0f} s", flush=True)
    return topic


# ---- child processes: one pipeline each, in a fresh JVM ---------------------------------------


def _job_settings(topic: str, run: str) -> list[str]:
    values = {
        "kafka.events_topic": topic,
        "kafka.dlq_topic": f"bench.{run}.dlq",
        "kafka.late_topic": f"bench.{run}.late",
        "kafka.changes_topic": f"bench.{run}.changes",
        "kafka.rules_topic": f"bench.{run}.rules",
        "kafka.status_topic": f"bench.{run}.status",
        "kafka.group_id": f"bench-{run}",
        "kafka.starting_offsets": "earliest",
        "redis.key_prefix": f"bench:{run}:",
        "redis.default_ttl": "1h",
        "events.out_of_orderness": f"{BOUND_MS}ms",
        "events.idleness": "0",
        "job.checkpoint_interval": "30s",
        # Retained on cancel, as in production: the run's own directory, removed by _cleanup
        # (in the job's default one, every bench run left 50-150 MB behind).
        "job.checkpoint_dir": _checkpoints(run).as_uri(),
        "job.restart_attempts": "0",
        "job.hot_reload": "false",
        # The run's own folder: the live run reads the job's state cache counts from there.
        "metrics.targets_dir": str(_metrics_targets(run)),
    }
    argv = []
    for k, v in values.items():
        argv += ["--set", f"{k}={v}"]
    return argv


def _metrics_targets(run: str) -> Path:
    return ROOT / ".cache" / "bench-metrics" / run


def _cache_lookups(run: str) -> dict[str, float]:
    """``segments_state_cache_lookups_total`` by result (hit, miss, new), and the states cached
    (customers) and their estimated memory (bytes), read from the running job's Python
    exporter(s) registered in the run's metrics folder."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for registration in _metrics_targets(run).glob("*.json"):
        for group in json.loads(registration.read_text()):
            for target in group["targets"]:
                try:
                    text = urllib.request.urlopen(f"http://{target}/metrics", timeout=10).read().decode()
                except OSError:
                    continue
                for family in text_string_to_metric_families(text):
                    for sample in family.samples:
                        if sample.name == "segments_state_cache_lookups_total":
                            result = sample.labels["result"]
                            out[result] = out.get(result, 0.0) + sample.value
                        elif sample.name in ("segments_state_cache_customers", "segments_state_cache_bytes"):
                            kind = sample.name.rsplit("_", 1)[1]
                            out[kind] = out.get(kind, 0.0) + sample.value
    return out


def child(mode: str, topic: str, run: str, parallelism: int, bounded: bool) -> None:
    from pyflink.common import Types
    from pyflink.datastream import KeyedProcessFunction
    from pyflink.datastream.state import ValueStateDescriptor

    from flink_jobs.config import load_config
    from flink_jobs.core.loader import load_rules
    from flink_jobs.flink.batcher import build_batches
    from flink_jobs.flink.segmentation_job import build_pipeline, create_environment
    from flink_jobs.flink.sources import SOURCE_TABLE, build_event_source, event_gate

    argv = _job_settings(topic, run) + ["--set", f"job.parallelism={parallelism}"] + (["--bounded"] if bounded else [])
    for extra in os.environ.get("BENCH_SETTINGS", "").split():
        argv += ["--set", extra]
    if mode == "nomodels":
        argv += ["--set", "job.models=false"]
    config = load_config(argv, environ={k: v for k, v in os.environ.items() if not k.startswith("SEGMENTS_")})
    env = create_environment(config)
    if mode in ("job", "nomodels"):
        build_pipeline(env, config)
    else:
        from pyflink.table import StreamTableEnvironment

        t_env = StreamTableEnvironment.create(env)
        gate = event_gate(config, load_rules(list(config.job.rules_path), horizon=config.job.horizon).catalog)
        records = build_event_source(t_env, config, gate)

        class Count(KeyedProcessFunction):
            def open(self, ctx):
                self._n = ctx.get_state(ValueStateDescriptor("n", Types.LONG()))

            def process_element(self, value, ctx):
                self._n.update((self._n.value() or 0) + 1)
                return
                yield

        if mode == "floor":
            # Keyed by customer as the job is, the customer id read in the JVM (Flink SQL).
            ids = t_env.to_data_stream(
                t_env.sql_query(f"SELECT JSON_VALUE(CAST(`value` AS STRING), '$.customer_id') FROM {SOURCE_TABLE}")
            )
            ids.key_by(lambda r: r[0] or "", key_type=Types.STRING()).process(Count()).name("no-op keyed")
        else:
            build_batches(records, config, gate).process(Count()).name("no-op batched")
    start = time.time()
    if bounded:
        env.execute(f"bench-{mode}")
        print(json.dumps({"seconds": time.time() - start}), flush=True)
    else:
        env.execute_async(f"bench-{mode}")
        print(json.dumps({"started": start}), flush=True)
        sys.stdin.read()  # until the parent closes it


def _descendants(pid: int) -> list[int]:
    out = []
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return out
    for k in kids:
        out.append(int(k))
        out += _descendants(int(k))
    return out


def _taskmanager_pids(pid: int) -> list[int]:
    """The mini-cluster JVM under the run's process, and the Python workers under that JVM
    (process mode starts one per Python operator instance; thread mode runs Python in the JVM)."""
    out = []
    for k in _descendants(pid):
        try:
            if "java" in Path(f"/proc/{k}/comm").read_text():
                out.append(k)
                out += _descendants(k)
        except OSError:
            pass
    return out


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_child(mode: str, topic: str, parallelism: int, settings: str | None = None) -> tuple[float, int]:
    """Seconds of a bounded run and the peak RSS (KiB) of its JVM plus its Python workers.
    ``settings``: job settings for this run instead of the ones given with --set."""
    run = f"{mode}-{uuid.uuid4().hex[:6]}"
    bootstrap = os.environ["KAFKA_BOOTSTRAP"]
    _create_topics(bootstrap, [f"bench.{run}.{t}" for t in ("dlq", "late", "changes", "rules", "status")])
    env = dict(os.environ) if settings is None else {**os.environ, "BENCH_SETTINGS": settings}
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", mode, "--topic", topic, "--run", run, "--parallelism", str(parallelism)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    peak = 0

    def watch() -> None:
        nonlocal peak
        while proc.poll() is None:
            peak = max(peak, sum(_rss_kb(pid) for pid in _taskmanager_pids(proc.pid)))
            time.sleep(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out, err = proc.communicate()
    watcher.join()
    if proc.returncode != 0:
        raise SystemExit(f"{mode} run failed:\n{err[-4000:]}")
    seconds = json.loads(out.strip().splitlines()[-1])["seconds"]
    _cleanup(bootstrap, run)
    return seconds, peak


def _checkpoints(run: str) -> Path:
    return ROOT / ".cache" / "bench-checkpoints" / run


def _cleanup(bootstrap: str, run: str) -> None:
    import redis
    from kafka.errors import UnknownTopicOrPartitionError

    admin = _admin(bootstrap)
    try:
        admin.delete_topics([f"bench.{run}.{t}" for t in ("dlq", "late", "changes", "rules", "status")])
    except UnknownTopicOrPartitionError:
        pass  # the plain Python run creates none
    admin.close()
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    for key in client.scan_iter(f"bench:{run}:*", count=10_000):
        client.delete(key)
    shutil.rmtree(_checkpoints(run), ignore_errors=True)
    shutil.rmtree(_metrics_targets(run), ignore_errors=True)


class _Discard(list):
    def append(self, item) -> None:
        pass


# ---- the plain Python consumer ----------------------------------------------------------------


def plain_python(topic: str, total: int) -> float:
    """Events/s of one Python process: kafka-python consumer, parse, engine, Redis pipelines."""
    from kafka import KafkaConsumer

    from flink_jobs.core.engine import EngineConfig, SegmentEngine
    from flink_jobs.core.loader import load_rules
    from flink_jobs.core.runner import LocalRunner
    from flink_jobs.runtime.redis_writer import RedisMembershipWriter
    from flink_jobs.runtime.serde import EventSchema, Invalid, parse_event

    rules = load_rules([str(ROOT / "rules")])
    engine = SegmentEngine(rules, EngineConfig())
    schema = EventSchema(rules.catalog)
    ttl = {s.id: s.ttl for s in rules.segments}
    pending: list = []
    runner = LocalRunner(engine, out_of_orderness=BOUND_MS, on_change=pending.append)
    runner.changes = _Discard()  # keep only what is not yet written
    run = f"python-{uuid.uuid4().hex[:6]}"
    writer = RedisMembershipWriter(os.environ["REDIS_URL"], f"bench:{run}:", 3_600_000)
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=os.environ["KAFKA_BOOTSTRAP"],
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=5000,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    seen = 0
    start = time.perf_counter()
    while seen < total:
        polled = consumer.poll(timeout_ms=1000)
        now = int(time.time() * 1000)
        for records in polled.values():
            for r in records:
                seen += 1
                parsed = parse_event(r.value, now_ms=now, schema=schema)
                if not isinstance(parsed, Invalid):
                    runner.feed(parsed)
        if pending:
            writer.write([(c.customer_id, c.segment_id, c.kind, c.event_time, ttl.get(c.segment_id)) for c in pending])
            pending.clear()
    runner.advance(2**62)
    writer.write([(c.customer_id, c.segment_id, c.kind, c.event_time, ttl.get(c.segment_id)) for c in pending])
    seconds = time.perf_counter() - start
    consumer.close()
    writer.close()
    _cleanup(os.environ["KAFKA_BOOTSTRAP"], run)
    return seconds


# ---- latency at a given rate ------------------------------------------------------------------


def latency(
    rate: float, seconds: int, customers: int, parallelism: int, warmup: int = 0, publish_at: float | None = None
) -> "LiveRun":
    """Event-to-change latencies (ms) of the job fed live at ``rate`` events/s for ``warmup +
    seconds``; changes of the first ``warmup`` seconds are not counted (the watermark waits for
    both partitions' first events, the JVM compiles its hot paths).

    With ``publish_at``, the feed opens with one page view of every customer (so that all of them
    have a state), and ``publish_at`` seconds into the counted feed a rule set is published to the
    job: the shipped rules plus a 30-day page-view segment filled from the aggregates the job
    holds. The job then sweeps every customer's state to the new set while the feed goes on; the
    sweep's enters (backdated to before the publish) say when each customer was reached.

    The feed is generated before the job starts and sent in 2 ms ticks, each tick's events
    stamped with the tick's time, by librdkafka (confluent-kafka), so it takes little of the
    machine the job runs on. How long its events took from that stamp to the broker's
    acknowledgement (the feed's own lag, sampled) is returned too: a producer that fell behind
    would show up as job latency."""
    from confluent_kafka import Producer
    from kafka import KafkaConsumer

    from flink_jobs.synthetic import FeedConfig, generate_feed

    bootstrap = os.environ["KAFKA_BOOTSTRAP"]
    run = f"live-{uuid.uuid4().hex[:6]}"
    topic = f"bench.{run}.events"
    feed = []
    for r in generate_feed(
        FeedConfig(customers=customers, events=int(rate * (seconds + warmup)) + 1, journeys_per_second=rate / 20, seed=5,
                   out_of_order_share=0.0, late_share=0.0)
    ):
        feed.append((r.key, r.value if r.kind == "malformed" else json.loads(r.value)))
    if publish_at is not None:
        from flink_jobs.synthetic import customer_id

        first = [
            {"event_id": f"first-{n}", "customer_id": customer_id(n), "event_type": "page_view", "properties": {"url": "/"}}
            for n in range(customers)
        ]
        feed = [(e["customer_id"].encode(), e) for e in first] + feed
    _create_topics(bootstrap, [topic], PARTITIONS)
    _create_topics(bootstrap, [f"bench.{run}.{t}" for t in ("dlq", "late", "changes", "rules", "status")])
    errors = open(ROOT / ".cache" / f"bench-{run}.log", "w+")  # the job's log, shown if it fails
    child_env = dict(os.environ)
    if publish_at is not None:
        child_env["BENCH_SETTINGS"] = f"{child_env.get('BENCH_SETTINGS', '')} job.hot_reload=true".strip()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", "job", "--topic", topic, "--run", run, "--parallelism", str(parallelism), "--live"],
        env=child_env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=errors,
        text=True,
    )
    if not proc.stdout.readline():
        proc.wait(timeout=60)
        errors.seek(0)
        raise SystemExit(f"the live job did not start:\n{errors.read()[-4000:]}")
    time.sleep(15)  # the job starting up
    # librdkafka: about 6 µs of this process's CPU per record (json included) where the
    # kafka-python feed took about 78 (47% of a core at 6,000 events/s), on the 2 cores the job
    # being measured runs on.
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": 1})
    feed_lag: list[float] = []

    def acked(stamped: int, err, _msg) -> None:
        if err is None:
            feed_lag.append(time.time() * 1000 - stamped)

    start = time.time()
    sent = 0
    busiest: list[float] = []
    stop_sampling = threading.Event()
    threading.Thread(
        target=_sample_busiest, args=(_taskmanager_pids(proc.pid), start + warmup, stop_sampling, busiest), daemon=True
    ).start()
    published_ms = None
    while sent < len(feed):
        now = time.time()
        if publish_at is not None and published_ms is None and now >= start + warmup + publish_at:
            published_ms = int(now * 1000)
            from flink_jobs.runtime.rule_files import RULE_SET_KEY

            producer.produce(f"bench.{run}.rules", key=RULE_SET_KEY.encode(), value=_sweep_rule_set(published_ms))
        stamp = int(now * 1000)
        due = min(len(feed), int((now - start) * rate) + 1)
        while sent < due:
            key, value = feed[sent]
            if isinstance(value, dict):
                value["event_time"] = stamp
                value = json.dumps(value).encode()
            if sent % 16 == 0:
                producer.produce(topic, key=key, value=value, on_delivery=functools.partial(acked, stamp))
            else:
                producer.produce(topic, key=key, value=value)
            sent += 1
        producer.poll(0)
        time.sleep(0.002)
    if producer.flush(30):
        raise SystemExit("the live feed could not deliver all its records within 30 s")
    sending = time.time() - start
    stop_sampling.set()
    time.sleep(BOUND_MS / 1000 + 5)
    consumer = KafkaConsumer(
        f"bench.{run}.changes", bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=5000
    )
    lat = []
    points = []
    by_interval: dict[int, list[float]] = {}
    swept = []  # ms from the publish to each backdated enter of the new segment
    for m in consumer:
        change = json.loads(m.value)
        if published_ms is not None and change["segment"] == SWEEP_SEGMENT and change["event_time"] < published_ms:
            swept.append(m.timestamp - published_ms)
            continue  # the sweep's own enters: not an event's latency
        if change["event_time"] >= (start + warmup) * 1000:
            lat.append(m.timestamp - change["event_time"])
            points.append((change["event_time"], m.timestamp - change["event_time"] - BOUND_MS))
            interval = int((change["event_time"] / 1000 - start - warmup) // INTERVAL_S)
            by_interval.setdefault(interval, []).append(m.timestamp - change["event_time"] - BOUND_MS)
    consumer.close()
    whole = [i for i in sorted(by_interval) if (i + 1) * INTERVAL_S <= seconds]  # not the last, partial one
    p99_series = [_pct(by_interval[i], 0.99) for i in whole]
    if proc.poll() is not None:
        errors.seek(0)
        raise SystemExit(f"the live job ended early ({proc.returncode}):\n{errors.read()[-4000:]}")
    lookups = _cache_lookups(run)
    proc.stdin.close()
    proc.terminate()
    proc.wait(timeout=60)
    # The job process exits with its mini-cluster; anything left is killed with it.
    errors.close()
    Path(errors.name).unlink()
    _cleanup(bootstrap, run)
    _admin(bootstrap).delete_topics([topic])
    return LiveRun(lat, sent, sent / sending, feed_lag, p99_series, busiest, sorted(points), lookups, published_ms, sorted(swept))


SWEEP_SEGMENT = "bench_sweep_viewed_30d"


def _sweep_rule_set(published_ms: int) -> bytes:
    """The shipped rules plus a segment over the history every customer has (a page view)."""
    files = {p.name: p.read_text() for p in sorted((ROOT / "rules").glob("*.yaml"))}
    files["bench_sweep.yaml"] = (
        "version: 1\nsegments:\n"
        f"  - id: {SWEEP_SEGMENT}\n    description: Viewed a page in the last 30 days.\n    owner: bench\n"
        "    when:\n      count: page_view\n      within: 30d\n      at_least: 1\n"
    )
    record = {"files": files, "request": "bench-sweep", "published_by": "job_bench", "published_at": published_ms}
    return json.dumps(record).encode()


class LiveRun(NamedTuple):
    latencies: list[float]  # ms, event time -> change record
    sent: int
    sent_rate: float  # events/s the feed achieved
    feed_lag: list[float]  # ms, event time -> broker ack, a sample of the feed's events
    # per INTERVAL_S of the counted feed: p99 beyond the bound (ms) and the busiest TaskManager
    # thread's share of a core (%); a job that cannot keep up shows both climbing
    p99_series: list[float]
    busiest_series: list[float]
    points: list[tuple[float, float]]  # (event time in epoch ms, ms beyond the bound) per change
    # the job's state cache lookups over the whole run by result (hit, miss, new); a miss reads
    # and decodes a state and evicts another, which live at a high rate costs a tenth of a core
    cache_lookups: dict[str, float]
    published_ms: int | None = None  # when the rule set was published (--publish-at)
    swept: list[float] = []  # ms from the publish to each customer's enter of the new segment


INTERVAL_S = 15


def _thread_cpu_ns(pids: list[int]) -> dict[tuple[int, int], int]:
    """CPU time (ns) of every thread of these processes, from /proc/<pid>/task/<tid>/schedstat."""
    out = {}
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                out[(pid, int(tid))] = int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    return out


def _sample_busiest(pids: list[int], start: float, stop: threading.Event, into: list[float]) -> None:
    """Every INTERVAL_S from ``start``: the busiest thread's CPU share over the interval (%). In
    thread mode that is the segment task, which runs the Python function."""
    time.sleep(max(0.0, start - time.time()))
    before = _thread_cpu_ns(pids)
    while not stop.wait(INTERVAL_S):
        now = _thread_cpu_ns(pids)
        into.append(max((now[t] - before.get(t, now[t]) for t in now), default=0) / (INTERVAL_S * 1e7))
        before = now


def _print_sweep(live: LiveRun, customers: int) -> None:
    swept = live.swept
    if not swept:
        print(f"sweep: no customer entered {SWEEP_SEGMENT} (was the set accepted? the job's status topic says)", flush=True)
        return
    published = live.published_ms
    assert published is not None
    done = published + swept[-1]
    phases = {
        "before the publish": [ms for t, ms in live.points if t < published],
        "during the sweep": [ms for t, ms in live.points if published <= t <= done],
        "after it": [ms for t, ms in live.points if t > done],
    }
    print(
        f"sweep: {len(swept):,} of {customers:,} customers entered {SWEEP_SEGMENT} from their history, the first "
        f"{swept[0] / 1000:.1f} s after the publish, half by {_pct(swept, 0.5) / 1000:.1f} s, 99% by "
        f"{_pct(swept, 0.99) / 1000:.1f} s, all by {swept[-1] / 1000:.1f} s",
        flush=True,
    )
    print(
        "latency beyond the bound by the event's time: "
        + "; ".join(
            f"{name} p50 {_pct(v, 0.5):,.0f} ms, p99 {_pct(v, 0.99):,.0f} ms, max {max(v):,.0f} ms ({len(v):,} changes)"
            if v else f"{name}: no changes"
            for name, v in phases.items()
        ),
        flush=True,
    )


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 1000) - 1] if len(values) > 1 else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--parallelism", type=int, default=1)
    parser.add_argument("--only", default="job,floor,batched,python,latency")
    parser.add_argument("--latency-seconds", type=int, default=60)
    parser.add_argument("--latency-warmup", type=int, default=20, help="seconds of live feed before latencies count")
    parser.add_argument("--job-rate", type=float, help="events/s of the job from an earlier run, for --only latency")
    parser.add_argument(
        "--latency-rate", type=float, help="feed the latency run at this many events/s instead of half the job's rate"
    )
    parser.add_argument(
        "--publish-at",
        type=float,
        help="in the latency run, publish the shipped rules plus a new 30-day segment this many seconds into the "
        "counted feed (every customer sends a page view first): how long the job takes to sweep every customer "
        "to the new set, and the latency before, during and after it",
    )
    parser.add_argument(
        "--latency-dump",
        type=Path,
        help="write every counted change's latency as CSV (its event time in epoch ms, which live is the wall "
        "clock it was sent at; ms beyond the bound), to line a tail up with the job's logs (checkpoints, collections)",
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="SECTION.NAME=VALUE", help="a job setting for every Flink run"
    )
    parser.add_argument(
        "--floor-thread",
        action="store_true",
        help="run the floor in thread mode at parallelism 1, the fastest per-event PyFlink pipeline here (in "
        "process mode every state access of a per-event pipeline is a round trip to the JVM: many times slower)",
    )
    parser.add_argument("--child")
    parser.add_argument("--topic")
    parser.add_argument("--run")
    parser.add_argument("--live", action="store_true")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.topic, args.run, args.parallelism, bounded=not args.live)
        return 0

    ignored = sorted(k for k in os.environ if k.startswith("SEGMENTS_"))
    if ignored:
        # The Flink runs read their settings from --set only, so that a shell's variables cannot
        # make two runs of a comparison differ unseen.
        print(f"note: {', '.join(ignored)} not passed to the jobs: give job settings with --set", flush=True)
    os.environ["BENCH_SETTINGS"] = " ".join(args.set)
    env = _stack_env()
    os.environ.update({k: env[k] for k in ("KAFKA_BOOTSTRAP", "REDIS_URL", "FLINK_KAFKA_CONNECTOR_JAR")})
    bootstrap = env["KAFKA_BOOTSTRAP"]
    wanted = args.only.split(",")
    # The pre-loaded topic is for the throughput runs; a latency run alone feeds a topic of its own.
    throughput = any(mode in wanted for mode in ("job", "nomodels", "floor", "batched", "python"))
    topic = preload(bootstrap, args.events, args.customers) if throughput else ""
    total = _held_records(bootstrap, topic) if throughput else 0
    empty = f"bench.empty.{uuid.uuid4().hex[:6]}"  # each Flink run's fixed cost is measured over it
    if throughput:
        _create_topics(bootstrap, [empty], PARTITIONS)
    rows = []
    rates = {}
    # In the order asked, repeats included: `--only job,nomodels,nomodels,job` interleaves A, B, B, A.
    for mode in [m for m in wanted if m in ("job", "nomodels", "floor", "batched")]:
        parallelism, settings = args.parallelism, None
        if mode == "floor" and args.floor_thread:
            parallelism, settings = 1, "job.python_execution_mode=thread"
        fixed, _ = run_child(mode, empty, parallelism, settings)
        seconds, peak = run_child(mode, topic, parallelism, settings)
        rate = total / max(seconds - fixed, 1e-9)
        rates[mode] = rate
        rows.append((mode, seconds, fixed, rate, peak))
        print(f"{mode:8} {seconds:7.1f} s run, {fixed:5.1f} s fixed, {rate:9,.0f} events/s, TaskManager peak RSS {peak / 1024:,.0f} MiB", flush=True)
    if "python" in wanted:
        seconds = plain_python(topic, total)
        rates["python"] = total / seconds
        rows.append(("python", seconds, 0.0, total / seconds, 0))
        print(f"python   {seconds:7.1f} s run, {total / seconds:9,.0f} events/s (one process, no Flink)", flush=True)
    if throughput:
        _admin(bootstrap).delete_topics([empty])
    if rows:
        print()
        print(
            f"{total:,} records ({args.events:,} events asked, {args.customers:,} customers), "
            f"parallelism {args.parallelism}{', ' + ' '.join(args.set) if args.set else ''}"
            + ("; floor in thread mode at parallelism 1" if args.floor_thread else "")
        )
        print(f"{'pipeline':10} {'events/s':>10} {'vs floor':>9} {'TM peak MiB':>13}")
        for mode, _, _, rate, peak in rows:
            vs = f"{rate / rates['floor']:.0%}" if "floor" in rates else "-"
            print(f"{mode:10} {rate:10,.0f} {vs:>9} {peak / 1024 if peak else float('nan'):13,.0f}")
    if args.job_rate:
        rates.setdefault("job", args.job_rate)
    if "latency" in wanted and (args.latency_rate or "job" in rates):
        rate = args.latency_rate or rates["job"] / 2
        what = "as asked" if args.latency_rate else "half the job's rate"
        live = latency(rate, args.latency_seconds, args.customers, args.parallelism, args.latency_warmup, args.publish_at)
        if args.latency_dump:
            args.latency_dump.write_text(
                "event_time_ms,ms_beyond_bound\n" + "".join(f"{t:.0f},{ms:.0f}\n" for t, ms in live.points)
            )
        lat = live.latencies
        print()
        print(
            f"latency at {rate:,.0f} events/s ({what}); the feed sent {live.sent:,} events at "
            f"{live.sent_rate:,.0f}/s, its own lag to the broker p50 {_pct(live.feed_lag, 0.5):,.0f} ms, "
            f"p99 {_pct(live.feed_lag, 0.99):,.0f} ms; {len(lat):,} changes (after {args.latency_warmup} s of warm-up): "
            f"event time -> change record p50 {_pct(lat, 0.5):,.0f} ms, p99 {_pct(lat, 0.99):,.0f} ms "
            f"(includes the {BOUND_MS} ms watermark bound: beyond it p50 {_pct(lat, 0.5) - BOUND_MS:,.0f} ms, "
            f"p99 {_pct(lat, 0.99) - BOUND_MS:,.0f} ms)",
            flush=True,
        )
        print(
            f"per {INTERVAL_S} s: p99 beyond the bound {', '.join(f'{v:,.0f}' for v in live.p99_series)} ms; "
            f"busiest TaskManager thread {', '.join(f'{v:.0f}' for v in live.busiest_series)}% of a core "
            "(if both climb, the job cannot keep this rate up: run longer with --latency-seconds to see)",
            flush=True,
        )
        if live.published_ms is not None:
            _print_sweep(live, args.customers)
        hits, misses, new = (live.cache_lookups.get(k, 0.0) for k in ("hit", "miss", "new"))
        if hits + misses:
            print(
                f"state cache: {misses / (hits + misses):.0%} of the lookups of known customers missed ({hits:,.0f} hits, "
                f"{misses:,.0f} misses, {new:,.0f} new customers); at the end {live.cache_lookups.get('customers', 0):,.0f} "
                f"states cached in about {live.cache_lookups.get('bytes', 0) / 2**20:,.0f} MiB; size it with --set "
                "job.state_cache_memory=768m (the SegmentsStateCacheMisses alert tickets above 25% for 30 min)",
                flush=True,
            )
        else:
            print("state cache: no lookups read from the job's metrics (metrics.enabled off?)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
