"""Fault injection on a standalone Flink cluster from the wheel (two TaskManagers), in the
tradition of Flink's own end-to-end HA tests: the job runs under faults over a live feed, then
the same input runs once more without any, and the two must agree exactly.

1. A standalone cluster with two TaskManagers of one slot (``deploy/local/cluster.sh``, short heartbeats
   so that a lost TaskManager is noticed in seconds), the job submitted to it detached,
   exactly-once to the change topic, checkpoints every 2 s.
2. A live feed of synthetic events while faults are injected one after another, each once the
   job has recovered from the one before:

   - ``kill-after-checkpoint``: SIGKILL a TaskManager right after a checkpoint completed;
   - ``kill-mid-checkpoint``: SIGKILL one while a checkpoint is in progress. A watchdog starts
     a new TaskManager a second later;
   - ``kafka-restart``: the broker stopped (a controlled shutdown) and started again on its data;
   - ``redis-stop``: Redis down for a minute (``--redis-down``), then back with its data (a
     snapshot on the way down, as a persistent Redis restarted for maintenance);
   - ``savepoint-rescale``: stop with a savepoint, resume at parallelism 1, stop with a
     savepoint again, resume at 2;
   - ``older-savepoint``: stop with a savepoint S0 and resume from it; later stop with S1 and
     resume from S0, the older one. The job does again what it did between the two, so the
     change records committed between S0 and S1 (known by their offsets) are published twice:
     they are counted apart as re-emitted and left out of the comparison. Redis must not
     regress meanwhile: no (customer, segment) goes back to an older change than it had at S1.

   Recovery is timed from the fault (the kill, the stop; for Kafka and Redis, the component
   back) to the job RUNNING again with every task running; for Kafka and Redis, to a checkpoint
   completed after it (the job may never leave RUNNING).
3. Then a last event on each partition (its time an hour past the feed, so timers up to it fire),
   and the job is drained: the committed change topic stops growing.
4. The reference: the same topic read by an uninterrupted job on the local mini-cluster, drained
   the same way.
5. Compared:
   - the committed (read_committed) change records of each customer, in order: lost, duplicated, reordered;
   - the Redis state under each run's key prefix.

A table of the faults injected, records in, changes lost, duplicated and reordered, and seconds
until RUNNING again. The first six faults are one of each kind; after that each cycle of 20 is
mostly TaskManager kills with one of each of the others.

    .venv/bin/python deploy/local/faults.py --faults 100        # the long run (about an hour)
    .venv/bin/python deploy/local/faults.py --faults 6 --redis-down 15   # what CI runs (tests/integration/test_faults.py)
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

CLUSTER = str(ROOT / "deploy" / "local" / "cluster.sh")
PYTHON = str(ROOT / ".venv" / "bin" / "python")
STACK = str(ROOT / "deploy" / "local" / "stack.sh")
KINDS = ("kill-after-checkpoint", "kill-mid-checkpoint", "kafka-restart", "redis-stop", "savepoint-rescale", "older-savepoint")
# After one of each: kills most of the time (they are what a cluster sees most), the rest once a cycle.
CYCLE = (*(["kill-after-checkpoint", "kill-mid-checkpoint"] * 4), "kafka-restart",
         *(["kill-after-checkpoint", "kill-mid-checkpoint"] * 2), "redis-stop",
         "kill-after-checkpoint", "savepoint-rescale", "kill-mid-checkpoint", "older-savepoint",
         "kill-after-checkpoint", "kill-mid-checkpoint")
CHECKPOINT_INTERVAL = "2s"
# A lost TaskManager is noticed within a few seconds (Flink's defaults wait 50 s).
HEARTBEATS = {"heartbeat.interval": 1000, "heartbeat.timeout": 5000}
SECOND = 1000


def schedule(faults: int) -> list[str]:
    """The kinds injected, in order: one of each first, then cycles of ``CYCLE``."""
    return list(itertools.islice(itertools.chain(KINDS, itertools.cycle(CYCLE)), faults))


@dataclass
class Fault:
    kind: str
    recovered_s: float
    detail: str = ""


@dataclass
class Report:
    injected: list[str] = field(default_factory=list)  # the kinds, in order
    faults: list[Fault] = field(default_factory=list)  # what was timed (a savepoint fault times two stops)
    records_in: int = 0
    changes: int = 0
    lost: int = 0
    duplicated: int = 0
    reordered: int = 0  # customers whose changes came in another order
    re_emitted: int = 0  # committed between an older savepoint and the stop that abandoned it
    redis_regressed: int = 0  # (customer, segment) seen back at an older change after a rewind
    redis_equal: bool = False
    redis_keys: int = 0

    def table(self) -> str:
        lines = [
            f"records in {self.records_in:,}; committed changes {self.changes:,} (reference); "
            f"lost {self.lost}, duplicated {self.duplicated}, reordered {self.reordered}; "
            f"Redis {'identical' if self.redis_equal else 'DIFFERENT'} ({self.redis_keys:,} keys), "
            f"regressed after a rewind {self.redis_regressed}; "
            f"re-emitted after restoring an older savepoint {self.re_emitted:,} (expected, left out of the comparison)",
            f"{'fault':24} {'injected':>8} {'timed':>6} {'RUNNING again after, s (min / median / max)':>46}",
        ]
        for kind in KINDS:
            times = sorted(f.recovered_s for f in self.faults if f.kind == kind)
            if times:
                lines.append(f"{kind:24} {self.injected.count(kind):>8} {len(times):>6} "
                             f"{times[0]:>14.1f} / {times[len(times) // 2]:.1f} / {times[-1]:.1f}")
        return "\n".join(lines)

    @property
    def ok(self) -> bool:
        return self.changes > 0 and not (self.lost or self.duplicated or self.reordered or self.redis_regressed) and self.redis_equal


class Harness:
    def __init__(self, bootstrap: str, redis_url: str, rest_port: int = 8081, customers: int = 200, seed: int = 5,
                 redis_down_s: float = 60.0) -> None:
        self.bootstrap = bootstrap
        self.redis_url = redis_url
        self.rest = f"http://localhost:{rest_port}"
        self.rest_port = rest_port
        self.run = f"faults-{uuid.uuid4().hex[:6]}"
        self.topics = {t: f"{self.run}-{t}" for t in ("events", "dlq", "late", "changes", "rules", "status", "ref-changes")}
        self.customers = customers
        self.seed = seed
        self.work = ROOT / ".cache" / "faults" / self.run
        self.work.mkdir(parents=True, exist_ok=True)
        self.sent = 0
        self.last_event_time = 0
        self.redis_down_s = redis_down_s
        # Offsets [from, to) of the change topic committed between an older savepoint and the
        # stop after which the job was resumed from it: published again by the resumed job.
        self.abandoned: list[tuple[int, int]] = []
        self.regressed: set[tuple[str, str]] = set()

    # ---- set-up ---------------------------------------------------------------------------------

    def create_topics(self) -> None:
        from kafka.admin import KafkaAdminClient, NewTopic

        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap)
        try:
            admin.create_topics(
                [NewTopic(t, num_partitions=2 if n == "events" else 1, replication_factor=1) for n, t in self.topics.items()]
            )
        finally:
            admin.close()

    def settings(self, changes: str, prefix: str, checkpoints: Path, name: str, parallelism: int = 2) -> list[str]:
        values = {
            "kafka.bootstrap": self.bootstrap,
            "redis.url": self.redis_url,
            "kafka.events_topic": self.topics["events"],
            "kafka.dlq_topic": self.topics["dlq"],
            "kafka.late_topic": self.topics["late"],
            "kafka.changes_topic": changes,
            "kafka.rules_topic": self.topics["rules"],
            "kafka.status_topic": self.topics["status"],
            "kafka.group_id": f"{self.run}-{name}",
            "kafka.starting_offsets": "earliest",
            "redis.key_prefix": prefix,
            "redis.default_ttl": "0",
            "events.out_of_orderness": "1m",
            "events.idleness": "0",
            "job.parallelism": str(parallelism),
            "job.delivery_guarantee": "exactly-once",
            "job.transactional_id_prefix": f"{self.run}-{name}",
            "job.checkpoint_interval": CHECKPOINT_INTERVAL,
            "job.checkpoint_dir": checkpoints.as_uri(),
            # Fixed-delay restarts (2 s apart): the default exponential delay grows towards a
            # minute when failures come every half minute (its backoff resets after an hour of
            # running), which would measure that policy, not the recovery (bench/HISTORY.md).
            "job.restart_attempts": "100000",
            "metrics.enabled": "false",
        }
        return [a for k, v in values.items() for a in ("--set", f"{k}={v}")]

    # ---- the feed ---------------------------------------------------------------------------------

    def _events(self) -> Iterator[tuple[bytes, bytes]]:
        """Synthetic visits, in order (no late or malformed records: the two runs must see the
        same watermarks), event time about as fast as the wall clock times ten."""
        from flink_jobs.synthetic import FeedConfig, generate_feed

        config = FeedConfig(
            customers=self.customers, events=10**9, seed=self.seed, journeys_per_second=2.0,
            out_of_order_share=0.0, late_share=0.0, malformed_share=0.0, duplicate_share=0.01,
        )
        for record in generate_feed(config):
            if record.event_time is not None:
                self.last_event_time = max(self.last_event_time, record.event_time)
            yield record.key, record.value

    def feed(self, rate: float, stop: threading.Event) -> None:
        from kafka import KafkaProducer

        # Retries without end (the default), reconnecting within a second of a broker restart.
        producer = KafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=20, acks="all", reconnect_backoff_max_ms=1000)
        started = time.monotonic()
        for key, value in self._events():
            if stop.is_set():
                break
            producer.send(self.topics["events"], key=key, value=value)
            self.sent += 1
            ahead = self.sent / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
        # The end: an event on each partition an hour past the feed, so both runs fire the same
        # timers (up to it) and no more.
        end = self.last_event_time + 3600 * SECOND
        for partition in (0, 1):
            tick = {"event_id": f"end-{partition}", "customer_id": f"c-end-{partition}", "event_type": "page_view",
                    "event_time": end, "properties": {"url": "/"}}
            producer.send(self.topics["events"], key=tick["customer_id"].encode(), value=json.dumps(tick).encode(), partition=partition)
            self.sent += 1
        producer.flush()
        producer.close()

    # ---- the cluster ----------------------------------------------------------------------------

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.rest}{path}", timeout=5) as response:
            return json.load(response)

    def job_id(self) -> str:
        jobs = [j for j in self._get("/jobs")["jobs"] if j["status"] not in ("CANCELED", "FAILED", "FINISHED")]
        assert len(jobs) == 1, jobs
        return str(jobs[0]["id"])

    def running(self, job: str) -> bool:
        try:
            detail = self._get(f"/jobs/{job}")
        except OSError:
            return False
        return bool(detail["state"] == "RUNNING" and all(v["status"] == "RUNNING" for v in detail["vertices"]))

    def checkpoints(self, job: str) -> tuple[int, int]:
        """(id of the latest completed checkpoint or 0, checkpoints in progress)."""
        data = self._checkpoint_stats(job)
        latest = (data.get("latest") or {}).get("completed") or {}
        in_progress = int(data.get("counts", {}).get("in_progress", 0))
        if any(c.get("status") == "IN_PROGRESS" for c in data.get("history", [])):
            in_progress = max(in_progress, 1)
        return int(latest.get("id") or 0), in_progress

    def _checkpoint_stats(self, job: str) -> dict[str, Any]:
        try:
            return dict(self._get(f"/jobs/{job}/checkpoints"))
        except OSError:
            return {}

    def _await_mid_checkpoint(self, job: str) -> None:
        """Until a checkpoint is in progress. They take tens of milliseconds here, often less than
        the REST statistics' refresh, so after a few seconds without seeing one: the moment the
        next is due (the last one's trigger time plus the interval) plus half its duration."""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self.checkpoints(job)[1] > 0:
                return
            time.sleep(0.02)
        completed = (self._checkpoint_stats(job).get("latest") or {}).get("completed") or {}
        interval_ms = int(CHECKPOINT_INTERVAL.rstrip("s")) * SECOND
        due = int(completed.get("trigger_timestamp") or 0) + interval_ms
        while due < time.time() * 1000:
            due += interval_ms
        time.sleep(max(0.0, (due + int(completed.get("end_to_end_duration") or 0) / 2) / 1000 - time.time()))

    def taskmanager_pids(self) -> list[int]:
        conf = str(ROOT / ".cache" / "flink" / "conf")
        out = subprocess.run(["pgrep", "-f", f"taskexecutor.TaskManagerRunner.*{conf}"], capture_output=True, text=True).stdout
        return sorted(int(p) for p in out.split())

    def start_cluster(self) -> None:
        # One slot each: the job (parallelism 2) runs on both, so every kill fails it, and it waits
        # for the watchdog's new TaskManager to run again.
        env = dict(os.environ, FLINK_TASKMANAGERS="2", FLINK_TM_SLOTS="1", FLINK_CONF_EXTRA=json.dumps(HEARTBEATS), FLINK_REST_PORT=str(self.rest_port))
        started = subprocess.run([CLUSTER, "start"], capture_output=True, text=True, timeout=300, env=env)
        if started.returncode != 0:
            raise SystemExit(f"cluster.sh start failed:\n{started.stderr[-3000:]}")
        deadline = time.monotonic() + 60
        while len(self.taskmanager_pids()) < 2:
            if time.monotonic() > deadline:
                raise SystemExit("the second TaskManager did not start")
            time.sleep(1)

    def stop_cluster(self) -> None:
        subprocess.run([CLUSTER, "stop"], capture_output=True, text=True, timeout=120)

    def submit(self, restore: str | None = None, parallelism: int = 2) -> str:
        from flink_jobs.flink.jvm import flink_home

        args = [
            str(flink_home() / "bin" / "flink"), "run", "-d", "-m", f"localhost:{self.rest_port}",
            *(["-s", restore] if restore else []),
            "-pyexec", PYTHON, "-pyclientexec", PYTHON, "-pym", "flink_jobs.flink.segmentation_job",
            *self.settings(self.topics["changes"], f"{self.run}:f:", self.work / "checkpoints", "faulty", parallelism),
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENTS_")}
        env["PATH"] = f"{Path(PYTHON).parent}:{env['PATH']}"
        out = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
        if out.returncode != 0:
            raise SystemExit(f"flink run failed:\n{out.stdout[-3000:]}{out.stderr[-3000:]}")
        job = self.job_id()
        self._await(lambda: self.running(job) and self.checkpoints(job)[0] > 0, 180, "the job running with a checkpoint")
        return job

    def _await(self, condition: Any, seconds: float, what: str) -> None:
        deadline = time.monotonic() + seconds
        while not condition():
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out waiting for {what}")
            time.sleep(0.2)

    # ---- faults ---------------------------------------------------------------------------------

    def inject(self, job: str, kind: str, victim: int) -> tuple[str, list[Fault]]:
        """Inject one fault; returns the job's id afterwards (a new one after a savepoint) and
        what was timed (a rescale times both of its stops)."""
        if kind in ("kill-after-checkpoint", "kill-mid-checkpoint"):
            return job, [self.kill(job, kind, victim)]
        if kind == "kafka-restart":
            return job, [self.restart_component(job, kind, "kafka", 5.0)]
        if kind == "redis-stop":
            return job, [self.restart_component(job, kind, "redis", self.redis_down_s)]
        if kind == "savepoint-rescale":
            job, down = self.resume(job, parallelism=1)
            job, up = self.resume(job, parallelism=2)
            return job, [Fault(kind, down, "2 -> 1"), Fault(kind, up, "1 -> 2")]
        if kind == "older-savepoint":
            return self.rewind(job)
        raise ValueError(kind)

    def kill(self, job: str, kind: str, victim: int) -> Fault:
        completed, _ = self.checkpoints(job)
        if kind == "kill-after-checkpoint":
            self._await(lambda: self.checkpoints(job)[0] > completed, 60, "a completed checkpoint")
        else:
            self._await_mid_checkpoint(job)
        pids = self.taskmanager_pids()
        pid = pids[victim % len(pids)]
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        self._await(lambda: pid not in self.taskmanager_pids(), 10, "the TaskManager gone")
        time.sleep(1)  # the watchdog notices, and starts another
        subprocess.run([CLUSTER, "taskmanager"], check=True, capture_output=True, env=dict(os.environ, FLINK_REST_PORT=str(self.rest_port)))
        # Running again means every task running after the failure was noticed: wait for it to
        # leave RUNNING first (a few heartbeats), then to come back.
        self._await(lambda: not self.running(job), 30, "the failure noticed")
        self._await(lambda: self.running(job), 180, "the job RUNNING again")
        recovered = time.monotonic() - killed
        after = self.checkpoints(job)[0]
        self._await(lambda: self.checkpoints(job)[0] > after, 120, "a checkpoint after the recovery")
        return Fault(kind, recovered)

    def restart_component(self, job: str, kind: str, component: str, down_s: float) -> Fault:
        """Stop the broker or Redis (``stack.sh stop COMPONENT``), wait, start it again on its
        data and port; timed from its start to a checkpoint completed after it."""
        self._await(lambda: self.running(job), 60, "the job running")
        subprocess.run([STACK, "stop", component], check=True, capture_output=True, timeout=120)
        time.sleep(down_s)
        back = time.monotonic()
        started = subprocess.run([STACK, "start"], capture_output=True, text=True, timeout=300, env=dict(os.environ, STACK_TOPICS="0"))
        if started.returncode != 0:
            raise SystemExit(f"stack.sh start failed after stopping {component}:\n{started.stderr[-3000:]}")
        self._await(lambda: self.running(job), 300, "the job RUNNING again")
        after = self.checkpoints(job)[0]
        self._await(lambda: self.checkpoints(job)[0] > after and self.running(job), 300, "a checkpoint after the restart")
        return Fault(kind, time.monotonic() - back, f"down {down_s:.0f} s")

    def stop_with_savepoint(self, job: str) -> str:
        """``POST /jobs/:id/stop``: a savepoint, then the job finishes; its path. Every
        transaction of the change topic is committed when it returns."""
        request = urllib.request.Request(
            f"{self.rest}/jobs/{job}/stop", method="POST", headers={"Content-Type": "application/json"},
            data=json.dumps({"targetDirectory": (self.work / "savepoints").as_uri(), "drain": False}).encode(),
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            trigger = json.load(response)["request-id"]
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            status = self._get(f"/jobs/{job}/savepoints/{trigger}")
            if status["status"]["id"] == "COMPLETED":
                operation = status["operation"]
                if "location" not in operation:
                    raise SystemExit(f"stop with a savepoint failed: {json.dumps(operation)[:3000]}")
                self._await(lambda: self._get(f"/jobs/{job}")["state"] == "FINISHED", 60, "the job finished")
                return str(operation["location"])
            time.sleep(0.2)
        raise SystemExit("stop with a savepoint: no answer within 180 s")

    def resume(self, job: str, parallelism: int) -> tuple[str, float]:
        """Stop with a savepoint and submit again from it at ``parallelism``; the new job's id and
        the seconds from the stop to it RUNNING."""
        stopped = time.monotonic()
        savepoint = self.stop_with_savepoint(job)
        new = self.submit(savepoint, parallelism)
        return new, time.monotonic() - stopped

    def changes_end(self) -> int:
        """The change topic's end offset (after a stop, no transaction is open)."""
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, isolation_level="read_committed")
        try:
            tp = TopicPartition(self.topics["changes"], 0)
            return int(consumer.end_offsets([tp])[tp])
        finally:
            consumer.close()

    def rewind(self, job: str) -> tuple[str, list[Fault]]:
        """Stop with S0 and resume from it; after a while stop with S1, note Redis, and resume
        from S0. Redis is watched while the job does again what it did: no version may go back."""
        stopped = time.monotonic()
        s0 = self.stop_with_savepoint(job)
        start = self.changes_end()
        job = self.submit(s0)
        first = time.monotonic() - stopped
        completed = self.checkpoints(job)[0]
        self._await(lambda: self.checkpoints(job)[0] >= completed + 5, 120, "five checkpoints after S0")
        stopped = time.monotonic()
        self.stop_with_savepoint(job)
        self.abandoned.append((start, self.changes_end()))
        at_stop = self.redis_versions()
        job = self.submit(s0)
        second = time.monotonic() - stopped
        # The replay of what came after S0 runs now: compare Redis with the stop's for a while.
        until = time.monotonic() + 30
        while time.monotonic() < until:
            now = self.redis_versions()
            self.regressed |= {k for k, (version, member) in at_stop.items()
                               if k not in now or now[k][0] < version or (now[k][0] == version and now[k][1] != member)}
            time.sleep(1)
        return job, [Fault("older-savepoint", first, "stop with S0, resume"), Fault("older-savepoint", second, "stop with S1, resume from S0")]

    def redis_versions(self) -> dict[tuple[str, str], tuple[int, bool]]:
        """(customer, segment) -> (event time of the last change applied, member now)."""
        import redis

        prefix = f"{self.run}:f:"
        client = redis.Redis.from_url(self.redis_url, decode_responses=True)
        out: dict[tuple[str, str], tuple[int, bool]] = {}
        try:
            for key in client.scan_iter(match=f"{prefix}ver:*", count=1000):
                customer = key[len(f"{prefix}ver:"):]
                # Both hashes at one instant: the job's script changes them together.
                pipe = client.pipeline(transaction=True)
                pipe.hgetall(key)
                pipe.hgetall(f"{prefix}cust:{customer}")
                versions, members = pipe.execute()
                for segment, version in versions.items():
                    out[(customer, segment)] = (int(version), segment in members)
        finally:
            client.close()
        return out

    # ---- draining and comparing -------------------------------------------------------------------

    def committed(self, topic: str) -> list[tuple[int, str, dict[str, Any]]]:
        """(offset, customer, change) of every committed record of ``topic``."""
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, isolation_level="read_committed", enable_auto_commit=False)
        try:
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            consumer.seek_to_beginning(tp)
            end = consumer.end_offsets([tp])[tp]
            out = []
            while consumer.position(tp) < end:
                for records in consumer.poll(timeout_ms=1000).values():
                    out += [(r.offset, (r.key or b"").decode(), json.loads(r.value)) for r in records]
            return out
        finally:
            consumer.close()

    def records_in(self) -> int:
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap)
        try:
            return sum(consumer.end_offsets([TopicPartition(self.topics["events"], p) for p in (0, 1)]).values())
        finally:
            consumer.close()

    def consumed(self, group: str) -> bool:
        """Whether the job's consumer group has committed (on checkpoints) the end of the events."""
        from kafka import KafkaConsumer, TopicPartition

        # Reads the group's committed offsets without joining it (nothing is subscribed).
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=group, enable_auto_commit=False)
        try:
            partitions = [TopicPartition(self.topics["events"], p) for p in (0, 1)]
            ends = consumer.end_offsets(partitions)
            return all((consumer.committed(tp) or 0) >= ends[tp] for tp in partitions)
        finally:
            consumer.close()

    def drain(self, topic: str, group: str, quiet_s: float = 12.0, limit_s: float = 900.0) -> None:
        """Until the job has consumed every event (its group's offsets, committed on checkpoints,
        at the end) and then the committed change records stop growing for ``quiet_s``. Stability
        alone is not enough: catching up over a long input, a job can commit nothing for longer
        than that (the 100-fault run's reference stopped short by 125 changes)."""
        deadline = time.monotonic() + limit_s
        while not self.consumed(group):
            if time.monotonic() > deadline:
                raise SystemExit(f"{group} did not consume the events within {limit_s:.0f} s")
            time.sleep(2)
        last, since = -1, time.monotonic()
        while time.monotonic() - since < quiet_s:
            if time.monotonic() > deadline:
                raise SystemExit(f"{topic} did not settle within {limit_s:.0f} s")
            count = len(self.committed(topic))
            if count != last:
                last, since = count, time.monotonic()
            time.sleep(2)

    def run_reference(self) -> None:
        """The same topic, an uninterrupted job on the local mini-cluster, drained the same way."""
        log = open(self.work / "reference.log", "wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENTS_")}
        env["PATH"] = f"{Path(PYTHON).parent}:{env['PATH']}"
        job = subprocess.Popen(
            [PYTHON, "-m", "flink_jobs.flink.segmentation_job",
             *self.settings(self.topics["ref-changes"], f"{self.run}:r:", self.work / "ref-checkpoints", "reference")],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 300
            while not self.committed(self.topics["ref-changes"]):
                if job.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the reference job wrote nothing; see {log.name}")
                time.sleep(2)
            self.drain(self.topics["ref-changes"], f"{self.run}-reference")
        finally:
            os.killpg(job.pid, signal.SIGTERM)
            try:
                job.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(job.pid, signal.SIGKILL)
            log.close()

    def redis_state(self, prefix: str) -> dict[str, Any]:
        import redis

        client = redis.Redis.from_url(self.redis_url, decode_responses=True)
        out: dict[str, Any] = {}
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            kind = client.type(key)
            out[key[len(prefix):]] = client.hgetall(key) if kind == "hash" else client.zrange(key, 0, -1, withscores=True)
        return out

    def compare(self, report: Report) -> None:
        faulty = self.committed(self.topics["changes"])
        reference = self.committed(self.topics["ref-changes"])
        # What the job published between an older savepoint and the stop after which it was
        # resumed from that savepoint: done again after, so left out (and counted).
        kept = [r for r in faulty if not any(start <= r[0] < end for start, end in self.abandoned)]
        report.re_emitted = len(faulty) - len(kept)
        faulty = kept
        report.redis_regressed = len(self.regressed)

        def by_customer(records: list[tuple[int, str, dict[str, Any]]]) -> dict[str, list[tuple[Any, ...]]]:
            out: dict[str, list[tuple[Any, ...]]] = {}
            for _, key, change in records:
                out.setdefault(key, []).append((change["segment"], change["kind"], change["event_time"], change["rule_version"]))
            return out

        got, want = by_customer(faulty), by_customer(reference)
        report.changes = len(reference)
        for customer in set(got) | set(want):
            g, w = got.get(customer, []), want.get(customer, [])
            missing, extra = Counter(w) - Counter(g), Counter(g) - Counter(w)
            report.lost += sum(missing.values())
            report.duplicated += sum(extra.values())
            if not missing and not extra and g != w:
                report.reordered += 1
        f, r = self.redis_state(f"{self.run}:f:"), self.redis_state(f"{self.run}:r:")
        report.redis_equal = f == r
        report.redis_keys = len(r)

    def cleanup(self) -> None:
        import redis
        from kafka.admin import KafkaAdminClient

        client = redis.Redis.from_url(self.redis_url)
        for prefix in (f"{self.run}:f:", f"{self.run}:r:"):
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            for start in range(0, len(keys), 1000):
                client.delete(*keys[start:start + 1000])
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap)
        try:
            admin.delete_topics(list(self.topics.values()))
        finally:
            admin.close()


def run(faults: int, rate: float = 300.0, bootstrap: str | None = None, redis_url: str | None = None, keep: bool = False,
        redis_down_s: float = 60.0) -> Report:
    """The whole suite; returns its report (the caller decides what passes)."""
    from flink_jobs.config import STACK_ENV, read_env_file

    stack = read_env_file(STACK_ENV) if STACK_ENV.exists() else {}
    if stack.get("REDIS_MANAGED") == "0":
        raise SystemExit("the fault suite stops and starts Redis: it needs the stack's own (unset REDIS_URL)")
    harness = Harness(bootstrap or stack["KAFKA_BOOTSTRAP"], redis_url or stack["REDIS_URL"], redis_down_s=redis_down_s)
    report = Report()
    harness.create_topics()
    harness.start_cluster()
    stop = threading.Event()
    feeder = threading.Thread(target=harness.feed, args=(rate, stop), daemon=True)
    try:
        job = harness.submit()
        feeder.start()
        time.sleep(5)
        for n, kind in enumerate(schedule(faults)):
            job, timed = harness.inject(job, kind, victim=n)
            report.injected.append(kind)
            report.faults += timed
            took = ", ".join(f"{f.recovered_s:.1f} s" + (f" ({f.detail})" if f.detail else "") for f in timed)
            print(f"fault {n + 1}/{faults}: {kind}, RUNNING again after {took} ({harness.sent:,} records sent)", flush=True)
        stop.set()
        feeder.join(timeout=60)
        harness.drain(harness.topics["changes"], f"{harness.run}-faulty")
    finally:
        stop.set()
        harness.stop_cluster()
    report.records_in = harness.records_in()
    harness.run_reference()
    harness.compare(report)
    if not keep:
        harness.cleanup()
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faults", type=int, default=100, help="faults to inject (default 100)")
    parser.add_argument("--rate", type=float, default=300.0, help="events per second of the live feed (default 300)")
    parser.add_argument("--redis-down", type=float, default=60.0, help="seconds Redis stays down in redis-stop (default 60)")
    parser.add_argument("--keep", action="store_true", help="keep the run's topics and Redis keys for a look")
    args = parser.parse_args()
    subprocess.run([STACK, "start"], check=True, capture_output=True)
    report = run(args.faults, args.rate, keep=args.keep, redis_down_s=args.redis_down)
    print(report.table())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
