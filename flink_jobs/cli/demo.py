"""The demo: stream a synthetic shop through the real job on the local stack, watch segments fill,
and click through them in the segment browser.

    python -m flink_jobs.cli.demo [--events 24000] [--customers 2000] [--rate 400]

Run by ``deploy/local/demo.sh`` after the stack is up. Each run uses its own topics
(``demo-<run>-events`` ...) and Redis key prefix (``demo:<run>:``) so runs never mix. The job
runs in the local mini-cluster as a subprocess, and ``segments serve`` beside it (the lookup API
and the segment browser; its URL and token are printed). The feed has three parts:

1. the order history of the 300 days before (``--history-days``): lapsed and dormant buyers for
   the value segments and the models' RFM clusters;
2. ``--browsing-days`` (10) of visits up to a minute ago, regulars coming back most days, sent as
   fast as the job takes them: the weekly engagement segments and the day's carts have members
   when the live part starts;
3. live visits at wall-clock time (``--events`` at about ``--rate`` per second): what a running
   shop sends; the latency shown is this part's, over the last 30 seconds.

At the end a few customers' memberships are shown and the job is stopped; at a terminal the
segment browser keeps serving until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import deque
from datetime import datetime, timezone
from pathlib import Path

import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

from ..config import DEFAULT_METRICS_TARGETS_DIR, REPO_ROOT, STACK_ENV, read_env_file
from ..config.settings import SETTINGS
from ..core.loader import load_rules
from ..synthetic import FeedConfig, generate_feed

LOG_DIR = REPO_ROOT / ".cache" / "demo"
LATENCY_WINDOW_S = 30


def _iso(ms: int | str) -> str:
    return datetime.fromtimestamp(int(ms) / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _quantile(buckets: list[tuple[float, float]], q: float) -> str:
    """A quantile from cumulative histogram buckets (what PromQL's histogram_quantile does)."""
    buckets = sorted(buckets)
    total = buckets[-1][1] if buckets else 0
    if not total:
        return "-"
    rank, prev_le, prev_n = q * total, 0.0, 0.0
    for le, n in buckets:
        if n >= rank:
            if le == float("inf"):
                return f">{prev_le:g}s"
            seconds = prev_le + (le - prev_le) * ((rank - prev_n) / (n - prev_n) if n > prev_n else 1)
            return f"{seconds * 1000:,.0f}ms" if seconds < 10 else f"{seconds:,.1f}s"
        prev_le, prev_n = le, n
    return "-"


def _end_offsets(bootstrap: str, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        partitions = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or ())]
        return sum(consumer.end_offsets(partitions).values()) if partitions else 0
    finally:
        consumer.close()


class Demo:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        stack = read_env_file(STACK_ENV) if STACK_ENV.exists() else {}
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP") or stack.get("KAFKA_BOOTSTRAP")
        redis_url = os.environ.get("REDIS_URL") or stack.get("REDIS_URL")
        if not bootstrap or not redis_url:
            raise SystemExit("the local stack is not running: start it with deploy/local/stack.sh start")
        self.bootstrap: str = bootstrap
        self.redis_url: str = redis_url
        self._metrics_url: str | None = None
        self.run = datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S")
        self.topics = {name: f"demo-{self.run}-{name}" for name in ("events", "dlq", "late", "changes", "rules", "status")}
        self.prefix = f"demo:{self.run}:"
        self.rules = load_rules([args.rules])
        spec = SETTINGS["events.out_of_orderness"]
        self.out_of_orderness = spec.show(spec.default)  # the demo runs the job with its default
        self.redis = redis.Redis.from_url(self.redis_url, decode_responses=True)
        self.job: subprocess.Popen | None = None
        self.job_log = LOG_DIR / f"job-{self.run}.log"
        self.serve: subprocess.Popen | None = None
        self.serve_log = LOG_DIR / f"serve-{self.run}.log"
        self.token = secrets.token_urlsafe(12)
        self.url = ""
        self._latency: deque[tuple[float, list[tuple[float, float]]]] = deque()

    # ---- steps ----------------------------------------------------------------------------------

    def create_topics(self) -> None:
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="segments-demo")
        try:
            admin.create_topics(
                [NewTopic(t, num_partitions=2 if n in ("events", "changes") else 1, replication_factor=1) for n, t in self.topics.items()]
            )
        finally:
            admin.close()

    def start_job(self) -> None:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable, "-m", "flink_jobs.flink.segmentation_job",
            *self.shared_settings(),
            "--set", f"kafka.dlq_topic={self.topics['dlq']}",
            "--set", f"kafka.late_topic={self.topics['late']}",
            "--set", f"kafka.group_id=demo-{self.run}",
            "--set", "kafka.starting_offsets=earliest",
        ]
        env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
        self.job_started = time.time()
        with open(self.job_log, "wb") as log:
            self.job = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def shared_settings(self) -> list[str]:
        """What the job and ``segments serve`` must agree on: Kafka, Redis, this run's topics."""
        return [
            "--set", f"kafka.bootstrap={self.bootstrap}",
            "--set", f"redis.url={self.redis_url}",
            "--set", f"redis.key_prefix={self.prefix}",
            "--set", f"kafka.events_topic={self.topics['events']}",
            "--set", f"kafka.changes_topic={self.topics['changes']}",
            "--set", f"kafka.rules_topic={self.topics['rules']}",
            "--set", f"kafka.status_topic={self.topics['status']}",
            "--set", f"job.rules_path={self.args.rules}",
        ]

    def start_serve(self) -> None:
        """``segments serve`` on this run's Redis keys and topics, with a token of its own."""
        port = self.args.serve_port
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:  # taken: any free port
                with socket.socket() as free:
                    free.bind(("127.0.0.1", 0))
                    port = free.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENTS_")}
        env["SEGMENTS_SERVE_TOKEN"] = self.token
        cmd = [sys.executable, "-m", "flink_jobs.cli.segments", "serve", "--port", str(port), *self.shared_settings()]
        with open(self.serve_log, "wb") as log:
            self.serve = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.url = f"http://127.0.0.1:{port}/"

    def stop_serve(self) -> None:
        if self.serve is not None and self.serve.poll() is None:
            self.serve.terminate()
            try:
                self.serve.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.serve.kill()

    def browser_lines(self) -> list[str]:
        return [
            f"segment browser: {self.url}  (token for reasons and member lists: {self.token})",
            f"  a customer, as a website asks on login: curl {self.url}v1/customers/<customer_id>/segments",
        ]

    def stop_job(self) -> None:
        if self.job is None or self.job.poll() is not None:
            return
        os.killpg(self.job.pid, signal.SIGTERM)
        try:
            self.job.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.job.pid, signal.SIGKILL)
            self.job.wait()

    def metrics_url(self) -> str | None:
        """The job's Python exporter, found where it registered for Prometheus (file_sd)."""
        if self._metrics_url:
            return self._metrics_url
        folder = Path(DEFAULT_METRICS_TARGETS_DIR)
        started = self.job_started if self.job is not None else 0
        files = [p for p in folder.glob("segments-python-*.json") if p.stat().st_mtime >= started - 1]
        if not files:
            return None
        newest = max(files, key=lambda p: p.stat().st_mtime)
        target = json.loads(newest.read_text())[0]["targets"][0]
        self._metrics_url = f"http://{target}/metrics"
        return self._metrics_url

    def figures(self) -> str:
        """A few live figures from the job's own metrics, as an SRE's dashboard shows them."""
        url = self.metrics_url()
        if url is None:
            return "metrics: (the job's exporter has not registered yet)"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                text = response.read().decode()
        except OSError as exc:
            return f"metrics: {url} unreachable ({exc})"
        samples: dict[str, float] = {}
        buckets: list[tuple[float, float]] = []  # cumulative since the job started
        psi: list[tuple[float, str]] = []
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "segments_ingest_to_segment_latency_seconds_bucket":
                    buckets.append((float(sample.labels["le"]), sample.value))
                elif sample.name == "segments_model_feature_psi":
                    psi.append((sample.value, f"{sample.labels['model']}.{sample.labels['feature']}"))
                elif not sample.labels or sample.name == "segments_events_invalid_total":
                    samples[sample.name] = samples.get(sample.name, 0.0) + sample.value
        now = time.monotonic()
        recent = self._recent(now, buckets)
        received = samples.get("segments_events_received_total", 0.0)
        last = getattr(self, "_last_received", None)
        rate = (received - last[1]) / (now - last[0]) if last and now > last[0] else 0.0
        self._last_received = (now, received)
        return (
            f"metrics: {url}  events/s {rate:,.0f}  received {received:,.0f}  "
            f"invalid {samples.get('segments_events_invalid_total', 0):,.0f}  "
            f"duplicate {samples.get('segments_events_duplicate_total', 0):,.0f}  "
            f"late {samples.get('segments_events_late_total', 0):,.0f}  "
            f"ingest->segment, last {LATENCY_WINDOW_S} s: p50 {_quantile(recent, 0.5)} p99 {_quantile(recent, 0.99)} "
            f"(with the {self.out_of_orderness} out-of-orderness wait)"
            # Input drift against each model card's reference (SegmentsModelDrift alerts above 0.2).
            + (f"\n  drift (PSI, highest): {', '.join(f'{name} {value:.2f}' for value, name in sorted(psi, reverse=True)[:4])}" if psi else "")
        )

    def _recent(self, now: float, buckets: list[tuple[float, float]]) -> list[tuple[float, float]]:
        """The histogram of the last LATENCY_WINDOW_S seconds: these counts less those of the
        newest scrape at least that old (what PromQL's rate() does), not everything since the
        start (whose tail is the catch-up over the history, not the job live)."""
        self._latency.append((now, buckets))
        while len(self._latency) > 1 and now - self._latency[1][0] >= LATENCY_WINDOW_S:
            self._latency.popleft()
        then = dict(self._latency[0][1]) if now - self._latency[0][0] >= LATENCY_WINDOW_S else {}
        return [(le, n - then.get(le, 0.0)) for le, n in buckets]

    def sizes(self) -> dict[str, int]:
        pipe = self.redis.pipeline()
        for segment in self.rules.segments:
            pipe.zcard(f"{self.prefix}members:{segment.id}")
        return {s.id: n for s, n in zip(self.rules.segments, pipe.execute())}

    def show(self, produced: int, started: float, final: bool = False) -> None:
        sizes = self.sizes()
        elapsed = time.monotonic() - started
        lines = [
            f"demo run {self.run}: {produced} records produced in {elapsed:.0f}s"
            + ("" if final else " (job running)"),
            f"{'segment':28} {'members':>8}",
        ]
        lines += [f"{sid:28} {n:>8}" for sid, n in sizes.items()]
        figures = self.figures()
        lines += ["", figures, *self.browser_lines()]
        if sys.stdout.isatty() and not final:
            sys.stdout.write("\033[H\033[J" + "\n".join(lines) + "\n")
        else:
            print(" | ".join(f"{sid}={n}" for sid, n in sizes.items() if n) or "no members yet", flush=True)
            print(f"  {figures}", flush=True)

    def produce_and_watch(self) -> int:
        args = self.args
        producer = KafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=20, acks=1)
        started = time.monotonic()
        self._next_show = started + 2
        produced = 0
        # Parts 1 and 2: the order history and the weeks of browsing up to a minute ago, as fast
        # as they go (regulars visit about twelve times as often as others; bots hardly).
        history_end = int(time.time() * 1000) - 60_000
        span = int(args.browsing_days * 86_400_000)
        history = FeedConfig(
            customers=args.customers, events=10 * args.history_events, seed=args.seed, start_ms=history_end - span,
            # about 11 events a visit, with regulars' long sessions
            journeys_per_second=args.history_events / 11 / max(span / 1000, 1),
            history_days=args.history_days, visit_weights={"regular": 12.0, "bot": 0.02},
        )
        for record in generate_feed(history):
            if record.event_time is not None and record.event_time > history_end:
                break
            producer.send(self.topics["events"], key=record.key, value=record.value)
            produced += 1
            self._tick(produced, started, producer)
        producer.flush()
        print(f"{produced:,} records of history sent (orders over {args.history_days} days, visits over "
              f"{args.browsing_days:g} days); the live part starts now", flush=True)
        # Part 3: live visits at wall-clock time (each record sent when the clock reaches it).
        live_start = int(time.time() * 1000)
        live = FeedConfig(
            customers=args.customers, events=args.events, seed=args.seed, start_ms=live_start,
            journeys_per_second=args.rate / 4.5, phase="live",  # about 4.5 events a visit
        )
        for record in generate_feed(live):
            if record.event_time is not None:
                wait = record.event_time / 1000 - time.time()
                if wait > 0:
                    time.sleep(wait)
            producer.send(self.topics["events"], key=record.key, value=record.value)
            produced += 1
            self._tick(produced, started, producer)
        producer.flush()
        producer.close()
        return produced

    def _tick(self, produced: int, started: float, producer: KafkaProducer) -> None:
        if time.monotonic() >= self._next_show:
            producer.flush()
            self.show(produced, started)
            self._next_show = time.monotonic() + 2
            self._check_job()

    def settle(self, produced: int) -> None:
        """Wait until the change topic stops growing (the job caught up), at most --settle s."""
        deadline = time.monotonic() + self.args.settle
        last, quiet = -1, 0
        while time.monotonic() < deadline and quiet < 3:
            time.sleep(2)
            self._check_job()
            count = _end_offsets(self.bootstrap, self.topics["changes"])
            quiet = quiet + 1 if count == last and count > 0 else 0
            last = count

    def _check_job(self) -> None:
        if self.job is not None and self.job.poll() is not None:
            tail = self.job_log.read_text(errors="replace")[-3000:]
            raise SystemExit(f"the job stopped (exit code {self.job.returncode}); end of {self.job_log}:\n{tail}")

    def report(self, produced: int) -> None:
        sizes = self.sizes()
        counts = {name: _end_offsets(self.bootstrap, topic) for name, topic in self.topics.items()}
        print()
        print(f"=== after {produced} records: {counts['changes']} membership changes, "
              f"{counts['dlq']} malformed records in {self.topics['dlq']}, {counts['late']} late events in {self.topics['late']}")
        print(f"{'segment':28} {'members':>8}  description")
        by_id = self.rules.by_id()
        for sid, n in sizes.items():
            print(f"{sid:28} {n:>8}  {by_id[sid].description[:70]}")
        empty = [sid for sid, n in sizes.items() if not n]
        print(f"segments without members: {', '.join(empty)}" if empty else f"every one of the {len(sizes)} segments has members")
        print()
        print("a few customers, as a website would read them on login "
              f"(HGETALL {self.prefix}cust:<customer_id>):")
        shown: set[str] = set()
        for sid in ("high_purchase_intent", "abandoned_cart", "repeat_product_viewer", "high_value_customer"):
            for customer in self.redis.zrange(f"{self.prefix}members:{sid}", 0, 4):  # type: ignore[union-attr]
                if customer in shown:
                    continue
                memberships = self.redis.hgetall(f"{self.prefix}cust:{customer}")
                print(f"  {customer}: " + ", ".join(f"{s} (since {_iso(t)})" for s, t in sorted(memberships.items())))  # type: ignore[union-attr]
                shown.add(customer)
                break
        if not shown:
            print("  (no members yet)")
        print()
        print(self.figures())
        print(f"job log: {self.job_log}")
        for line in self.browser_lines():
            print(line)
        print(f"keys are kept for a look: redis-cli -u {self.redis_url} --scan --pattern '{self.prefix}*'")
        print("stop the local stack with: deploy/local/stack.sh stop")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=24_000, help="live events to send (default 24000: a minute at 400/s)")
    parser.add_argument("--customers", type=int, default=2_000, help="customers in the feed (default 2000)")
    # Well below what the job sustains on 2 cores beside its own feed (bench/HISTORY.md): a steady
    # 400/s lets the segments fill while you watch rather than in a catch-up at the end.
    parser.add_argument("--rate", type=float, default=400, help="live events per second, about (default 400)")
    parser.add_argument(
        "--browsing-days", type=float, default=10, help="days of visits before the live part, sent first (default 10)"
    )
    parser.add_argument(
        "--history-events", type=int, default=30_000, help="about how many events those days hold (default 30000)"
    )
    parser.add_argument("--serve-port", type=int, default=8480, help="port of the segment browser (default 8480; a free one if taken)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--history-days",
        type=int,
        default=300,
        help="send a third of the customers' orders of this many days before the live feed first, as a shop "
        "imports its order history (default 300; 0: none): lapsed and dormant buyers for the value segments and models",
    )
    parser.add_argument("--rules", default=str(REPO_ROOT / "rules"))
    parser.add_argument("--settle", type=float, default=60, help="seconds to wait for the job to catch up (default 60)")
    args = parser.parse_args(argv)
    demo = Demo(args)
    print(f"demo run {demo.run}: topics {', '.join(demo.topics.values())}; rules {demo.rules.version} "
          f"({len(demo.rules.segments)} segments); job log {demo.job_log}", flush=True)
    demo.create_topics()
    demo.start_job()
    demo.start_serve()
    for line in demo.browser_lines():
        print(line, flush=True)
    try:
        produced = demo.produce_and_watch()
        print(f"all {produced} records produced; waiting for the job to catch up ...", flush=True)
        demo.settle(produced)
        demo.report(produced)
        demo.stop_job()
        if sys.stdin.isatty() and sys.stdout.isatty():
            print(f"\nthe job is stopped; the segment browser keeps serving what it wrote: {demo.url} (Ctrl-C to end)", flush=True)
            try:
                while demo.serve is not None and demo.serve.poll() is None:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
    finally:
        demo.stop_job()
        demo.stop_serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
