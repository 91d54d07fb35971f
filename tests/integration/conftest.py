"""Fixtures for tests against the real local stack (Kafka, Redis) and Flink's mini-cluster.

The session fixture runs ``deploy/local/stack.sh start`` (idempotent: a running stack is reused
and left running; one it started is stopped at the end unless KEEP_STACK=1) and reads
``.cache/stack/stack.env``. Each test gets its own topics (one partition each, so the
order records are read in, and so the watermark, is the order they were produced in) and its own
Redis key prefix, and removes them afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pytest

from flink_jobs.config import Config, load_config, read_env_file

REPO = Path(__file__).resolve().parents[2]
RULES = Path(__file__).resolve().parent / "rules"
T0 = 1_767_261_600_000  # 2026-01-01T10:00:00Z
SECOND = 1000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE


@dataclass(frozen=True)
class Stack:
    bootstrap: str
    redis_url: str
    connector_jar: str


@pytest.fixture(scope="session")
def stack() -> Iterable[Stack]:
    script = str(REPO / "deploy" / "local" / "stack.sh")
    # A stack that was already up is reused and left running; one this session started is
    # stopped at its end (set KEEP_STACK=1 to keep it for a look).
    was_running = subprocess.run([script, "status"], capture_output=True, timeout=120).returncode == 0
    started = subprocess.run([script, "start"], capture_output=True, text=True, timeout=600)
    if started.returncode != 0:
        pytest.fail(f"deploy/local/stack.sh start failed:\n{started.stdout}\n{started.stderr}")
    env = read_env_file(REPO / ".cache" / "stack" / "stack.env")
    for key in ("KAFKA_BOOTSTRAP", "REDIS_URL", "FLINK_KAFKA_CONNECTOR_JAR"):
        os.environ[key] = env[key]
    # Thread mode finds libpython through `python` on PATH, in the JVM PyFlink starts from here.
    venv_bin = str(Path(sys.executable).parent)
    if not os.environ.get("PATH", "").startswith(venv_bin + os.pathsep):
        os.environ["PATH"] = venv_bin + os.pathsep + os.environ.get("PATH", "")
    yield Stack(env["KAFKA_BOOTSTRAP"], env["REDIS_URL"], env["FLINK_KAFKA_CONNECTOR_JAR"])
    if not was_running and not os.environ.get("KEEP_STACK"):
        subprocess.run([script, "stop"], capture_output=True, timeout=120)


def event(event_id: str, customer_id: str, event_type: str, at: int, **properties: Any) -> dict[str, Any]:
    """An event ``at`` ms after T0."""
    return {
        "event_id": event_id,
        "customer_id": customer_id,
        "event_type": event_type,
        "event_time": T0 + at,
        "properties": properties,
    }


@dataclass
class Scenario:
    """One test's topics and Redis prefix, with helpers to produce, run the job and read results."""

    stack: Stack
    name: str
    topics: dict[str, str]
    prefix: str
    produced: list[Any] = field(default_factory=list)  # RecordMetadata of every record produced

    def settings(self, **overrides: Any) -> list[str]:
        values = {
            "kafka.events_topic": self.topics["events"],
            "kafka.dlq_topic": self.topics["dlq"],
            "kafka.late_topic": self.topics["late"],
            "kafka.changes_topic": self.topics["changes"],
            "kafka.rules_topic": self.topics["rules"],
            "kafka.status_topic": self.topics["status"],
            "kafka.group_id": f"it-{self.name}",
            "kafka.starting_offsets": "earliest",
            "redis.key_prefix": self.prefix,
            "redis.default_ttl": "1h",
            "events.out_of_orderness": "5m",
            "events.idleness": "0",
            "job.rules_path": str(RULES),
            "job.parallelism": "1",
            "job.checkpoint_interval": "1s",
            "job.restart_attempts": "0",
        }
        values.update(overrides)
        argv: list[str] = []
        for key, value in values.items():
            if value is not None:  # None: leave the setting out (a version that does not know it)
                argv += ["--set", f"{key}={value}"]
        return argv

    def config(self, *, bounded: bool = True, **overrides: Any) -> Config:
        argv = self.settings(**overrides) + (["--bounded"] if bounded else [])
        return load_config(argv, environ={k: v for k, v in os.environ.items() if not k.startswith("SEGMENTS_")})

    def produce(self, records: Iterable[dict | bytes], key: bytes | None = None) -> None:
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=self.stack.bootstrap, acks="all", linger_ms=0)
        futures = []
        for record in records:
            if isinstance(record, dict):
                value = json.dumps(record).encode()
                record_key = key if key is not None else str(record.get("customer_id", "")).encode()
            else:
                value, record_key = record, key
            futures.append(producer.send(self.topics["events"], key=record_key, value=value))
        producer.flush()
        self.produced += [f.get(timeout=30) for f in futures]
        producer.close()

    def run_bounded(self, **overrides: Any) -> None:
        """Run the job over what was produced, in the local mini-cluster, until it finishes."""
        from flink_jobs.flink.segmentation_job import build_pipeline, create_environment

        config = self.config(bounded=True, **overrides)
        env = create_environment(config)
        build_pipeline(env, config)
        env.execute(f"it-{self.name}")

    def start_unbounded(self, **overrides: Any):
        """Start the job without an end; returns its JobClient (cancel it when done)."""
        from flink_jobs.flink.segmentation_job import build_pipeline, create_environment

        config = self.config(bounded=False, **overrides)
        env = create_environment(config)
        build_pipeline(env, config)
        return env.execute_async(f"it-{self.name}")

    def read(self, topic: str, *, at_least: int = 0, timeout: float = 0.0) -> list[tuple[str | None, dict]]:
        """Every record of one of the scenario's topics as (key, JSON value), in offset order.
        With ``at_least``, wait up to ``timeout`` seconds for that many."""
        deadline = time.monotonic() + timeout
        while True:
            records = _read_all(self.stack.bootstrap, self.topics[topic])
            if len(records) >= at_least or time.monotonic() >= deadline:
                return records
            time.sleep(0.5)

    def redis(self):
        import redis

        return redis.Redis.from_url(self.stack.redis_url, decode_responses=True)

    def redis_state(self) -> dict[str, Any]:
        """Every key under the scenario's prefix (without it) -> its content."""
        client = self.redis()
        out: dict[str, Any] = {}
        for key in sorted(client.scan_iter(match=f"{self.prefix}*")):
            kind = client.type(key)
            short = key[len(self.prefix):]
            if kind == "hash" and short.startswith("why:"):
                out[short] = {k: json.loads(v) for k, v in client.hgetall(key).items()}
            elif kind == "hash":
                out[short] = {k: int(v) for k, v in client.hgetall(key).items()}
            elif kind == "zset":
                out[short] = [(m, int(s)) for m, s in client.zrange(key, 0, -1, withscores=True)]
            else:
                out[short] = kind
        return out


def _read_all(bootstrap: str, topic: str) -> list[tuple[str | None, dict]]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed"
    )
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end = consumer.end_offsets(partitions)
        out: list[tuple[int, int, str | None, dict]] = []
        deadline = time.monotonic() + 30
        while any(consumer.position(tp) < end[tp] for tp in partitions) and time.monotonic() < deadline:
            for tp, messages in consumer.poll(timeout_ms=500).items():
                for m in messages:
                    if m.offset < end[tp]:
                        key = m.key.decode() if m.key is not None else None
                        out.append((tp.partition, m.offset, key, json.loads(m.value)))
        return [(k, v) for _, _, k, v in sorted(out, key=lambda r: (r[0], r[1]))]
    finally:
        consumer.close()


@pytest.fixture(autouse=True)
def _restore_environ() -> Iterable[None]:
    """Undo what a test's jobs put into this process's environment. In the local mini-cluster,
    PyFlink runs process-mode Python workers in this interpreter ("loopback") and sets their
    variables here, PYFLINK_GATEWAY_DISABLED among them: a job started afterwards as a
    subprocess would inherit it and refuse to launch its JVM."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def scenario(stack: Stack, request) -> Iterable[Scenario]:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    name = f"{request.node.name[:30].replace('_', '-').strip('-')}-{uuid.uuid4().hex[:6]}"
    topics = {kind: f"it-{name}-{kind}" for kind in ("events", "dlq", "late", "changes", "rules", "status")}
    admin = KafkaAdminClient(bootstrap_servers=stack.bootstrap)
    admin.create_topics([NewTopic(t, num_partitions=1, replication_factor=1) for t in topics.values()])
    s = Scenario(stack, name, topics, prefix=f"it:{name}:")
    try:
        yield s
    finally:
        try:
            admin.delete_topics(list(topics.values()))
        finally:
            admin.close()
        client = s.redis()
        keys = list(client.scan_iter(match=f"{s.prefix}*"))
        if keys:
            client.delete(*keys)


def model_versions_of(runner) -> dict[str, str] | None:
    """The model versions a change record names, as the job writes them with ``runner``'s scorer."""
    scorer = runner.engine.scorer
    return dict(scorer.versions) if scorer is not None else None
