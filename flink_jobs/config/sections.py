"""The job's configuration as one frozen, typed object: a section per component.

The Redis writer's and the metrics exporter's sections are their own typed configs
(``runtime.redis_writer.RedisConfig``, ``runtime.metrics.MetricsConfig``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Mapping

from ..runtime.metrics import MetricsConfig
from ..runtime.redis_writer import RedisConfig
from .settings import SETTINGS, ConfigError


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap: str
    security_protocol: str
    group_id: str
    starting_offsets: str  # earliest | latest | committed
    bounded: bool  # stop at the offsets that are latest when the job starts
    events_topic: str
    dlq_topic: str
    late_topic: str
    changes_topic: str
    rules_topic: str
    status_topic: str
    sasl_mechanism: str  # SCRAM-SHA-512 | SCRAM-SHA-256 | PLAIN (SASL_* protocols)
    sasl_username: str
    sasl_password: str  # secret: shown as *** (config.describe, --print-config)
    ssl_ca_file: str  # PEM; empty: the system's trust store
    ssl_check_hostname: bool
    properties: Mapping[str, str]  # passed to every Java Kafka client as is, last (overrides the above)


@dataclass(frozen=True)
class EventsConfig:
    out_of_orderness: int  # ms
    idleness: int  # ms; 0 = a silent partition holds the watermark back
    allowed_lateness: int  # ms
    dedup_horizon: int  # ms
    max_event_bytes: int
    max_future: int  # ms
    watermark_interval: int  # ms between watermarks (Flink's pipeline.auto-watermark-interval)
    earliest_event_time: int  # epoch ms; earlier events go to the DLQ


@dataclass(frozen=True)
class JobConfig:
    name: str
    rules_path: tuple[str, ...]
    horizon: int  # ms: the longest window a rule may use, and how long state keeps history
    parallelism: int
    checkpoint_interval: int  # ms; 0 = off (not allowed with exactly-once)
    checkpoint_dir: str  # URI of the checkpoint storage (file:///..., s3://...)
    restart_attempts: int  # -1 = keep restarting (exponential delay), 0 = fail at once, n = n tries
    delivery_guarantee: str  # at-least-once | exactly-once | none
    transactional_id_prefix: str
    python_execution_mode: str  # thread | process
    python_bundle_size: int
    python_bundle_time: int  # ms
    python_state_cache_size: int
    state_cache_memory: int  # bytes of decoded customer states kept per parallel task (0 = off)
    python_full_gc_interval: int  # ms between full cyclic GCs; long-lived objects frozen between (0 = Python's GC)
    connector_jar: str
    hot_reload: bool
    batch_keys: int  # customers are grouped under this many batch keys (fixed for a savepoint's life)
    batch_key_layout: str  # balanced | identity: where batch keys are placed among key groups (fixed, too)
    max_parallelism: int  # Flink's max parallelism (key groups) of every operator (fixed, too)
    batch_max_records: int  # a batch is sent once this many records wait
    batch_max_delay: int  # ms: a record waits at most this long for its batch (watermarks flush too)
    batch_max_held: int  # records held in the JVM until the watermark passes them, per task
    catch_up_release_interval: int  # ms: catching up, watermarks are applied at most this often (0 = each)
    state_write_behind: int  # ms: changed customer states are written to Flink state after about this long
    buffer_timeout: int  # ms a record may wait in a network buffer between tasks (Flink's buffer timeout)
    batcher_jar: str  # the job's JVM operator; empty = compile it from the package on first use
    restore_from: str  # savepoint or retained checkpoint to start from; empty = fresh start
    models: bool  # score customers with the ONNX models (rules may then test scores)
    generic_aggregates: bool  # keep per-event-type aggregates (new rules start full; the models' inputs)
    model_artifacts: str  # folder of model cards and ONNX files; empty = the repository's model_artifacts/


@dataclass(frozen=True)
class ServeConfig:
    host: str
    port: int
    token: str  # bearer token for member listings and reasons; empty: they are refused
    redis_timeout: int  # ms
    max_page: int


@dataclass(frozen=True)
class Config:
    kafka: KafkaConfig
    redis: RedisConfig
    events: EventsConfig
    job: JobConfig
    metrics: MetricsConfig
    serve: ServeConfig
    # setting -> where its value came from ("default", a file, an environment variable, a flag)
    origins: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def origin(self, setting: str) -> str:
        """Where a setting's value came from, for messages that name it."""
        return self.origins.get(setting, "default")

    def error(self, setting: str, message: str) -> ConfigError:
        """The error to raise for a wrong ``setting``: named, with where its value came from."""
        return ConfigError(f"{setting}: {message} (from {self.origin(setting)})")

    def describe(self) -> str:
        """Every setting as ``section.name = value``, for the job's start-up log."""
        lines: list[str] = []
        for section in (self.kafka, self.redis, self.events, self.job, self.metrics, self.serve):
            sname = SECTION_NAMES[type(section)]
            for f in fields(section):
                value = getattr(section, f.name)
                spec = SETTINGS.get(f"{sname}.{f.name}")
                shown = spec.show(value) if spec else value
                lines.append(f"{sname}.{f.name} = {shown}")
        return "\n".join(lines)


SECTION_NAMES: Mapping[type, str] = {
    KafkaConfig: "kafka",
    RedisConfig: "redis",
    EventsConfig: "events",
    JobConfig: "job",
    MetricsConfig: "metrics",
    ServeConfig: "serve",
}
SECTION_TYPES: Mapping[str, type] = {v: k for k, v in SECTION_NAMES.items()}
