"""The segmentation job: events from Kafka -> per-customer segment engine -> Kafka and Redis.

::

    Kafka events (watermarks per partition: bounded out-of-orderness, idleness)
                     ▼
    key_by(batch key) ─► hold each record until the watermark passes it, then batch by key
                     │   (JVM: KeyGroupBatcher; nothing ready held across watermarks, checkpoints)
                     ▼
    same key (no shuffle) ─► SegmentFunction (runtime.batch_engine): parse + validate ──invalid──► events.dlq
                     │   SegmentEngine.step per customer ──late──► events.late
                     │   Redis memberships (one pipeline per release)
                     ▼
                 changes ─► segment-changes (Kafka)

Run it: ``python -m flink_jobs.flink.segmentation_job [--config FILE] [--set section.name=value]``
(see ``flink_jobs/config/settings.py``); ``--bounded`` stops at the offsets that are latest at start.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import uuid
from pathlib import Path
from typing import Sequence

from pyflink.common import Configuration, Duration, WatermarkStrategy
from pyflink.datastream import CheckpointingMode, DataStream, OutputTag, StreamExecutionEnvironment
from pyflink.table import StreamTableEnvironment

from ..config import PASSWORD_ENV, Config, ConfigError, check_connections, load_config
from ..core.diagnostics import RuleLoadError
from ..core.engine import EngineConfig
from ..core.loader import load_rules
from ..core.model import RuleSet
from ..ml.cards import ModelCardError, cards_for
from ..ml.observed import load_scorer
from ..runtime.batch_engine import BatchEngine, ScorerLoader
from .batcher import build_batches, placed_keys
from .descriptors import DLQ_TAG, GATE_TAG, KEY_VALUE_TYPE, LATE_TAG, RULE_FILES
from .functions import BroadcastTimeAssigner, SegmentBroadcastFunction, SegmentFunction
from .jvm import JarBuildError, ensure_jar, on_local_jvm_classpath
from .reporter import flink_metrics_configuration, reporter_on_local_classpath
from .sinks import build_kafka_sink
from .sources import build_event_source, build_rules_source, event_gate, gate_channel, parse_limits

log = logging.getLogger("segmentation_job")


def flink_configuration(config: Config) -> Configuration:
    """Flink settings that must be known before the environment exists."""
    job = config.job
    conf = Configuration()
    conf.set_string("pipeline.name", job.name)
    conf.set_string("pipeline.auto-watermark-interval", f"{config.events.watermark_interval} ms")
    conf.set_string("python.execution-mode", job.python_execution_mode)
    # Process mode starts `python` from PATH unless told: use this interpreter (the venv's).
    conf.set_string("python.executable", sys.executable)
    conf.set_string("python.client.executable", sys.executable)
    conf.set_string("python.fn-execution.bundle.size", str(job.python_bundle_size))
    conf.set_string("python.fn-execution.bundle.time", str(job.python_bundle_time))
    conf.set_string("python.state.cache-size", str(job.python_state_cache_size))
    # Generated but deterministic uids for the Table API parts (Kafka source and sinks).
    conf.set_string("table.exec.uid.generation", "ALWAYS")
    if job.restart_attempts < 0:
        conf.set_string("restart-strategy.type", "exponential-delay")
    elif job.restart_attempts == 0:
        conf.set_string("restart-strategy.type", "none")
    else:
        conf.set_string("restart-strategy.type", "fixed-delay")
        conf.set_string("restart-strategy.fixed-delay.attempts", str(job.restart_attempts))
        conf.set_string("restart-strategy.fixed-delay.delay", "2 s")
    conf.set_string("execution.checkpointing.dir", job.checkpoint_dir)
    # Sync markers rely on aligned checkpoints (see jvm/KeyGroupBatcher.java).
    conf.set_string("execution.checkpointing.unaligned.enabled", "false")
    # A cancelled (or lost) job can be started again from its last checkpoint (job.restore_from).
    conf.set_string("execution.checkpointing.externalized-checkpoint-retention", "RETAIN_ON_CANCELLATION")
    if job.restore_from:
        conf.set_string("execution.state-recovery.path", job.restore_from)
    for key, value in flink_metrics_configuration(config).items():
        conf.set_string(key, value)
    return conf


def create_environment(config: Config) -> StreamExecutionEnvironment:
    if config.kafka.security_protocol.startswith("SASL_"):
        # The Java clients read the password from the JVM's environment (connections.PASSWORD_ENV);
        # a local JVM starts from this process. A cluster's JVMs need it in theirs.
        os.environ[PASSWORD_ENV] = config.kafka.sasl_password
    # Thread mode finds libpython (and pemja) by running `python` from PATH inside the JVM that
    # PyFlink starts from this process: make that this interpreter, or a job started without an
    # activated venv fails with "Failed to find libpython" / "No module named 'pemja'".
    bin_dir = str(Path(sys.executable).parent)
    if not os.environ.get("PATH", "").startswith(bin_dir + os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    if config.metrics.flink_reporter:
        try:
            reporter_on_local_classpath()
        except FileNotFoundError as exc:
            raise ConfigError(f"metrics.flink_reporter: {exc}") from exc
    if config.job.python_execution_mode == "process":
        # In a local mini-cluster PyFlink would run the process-mode workers inside this very
        # interpreter ("loopback"): one GIL for every Python operator instance, and the workers'
        # environment set in this process. Worker processes of their own, as on a cluster.
        os.environ["_python_worker_execution_mode"] = "process"
    jars = [connector_jar(config), batcher_jar(config)]
    on_local_jvm_classpath(*jars)  # a local JVM sees them from every thread (see there)
    env = StreamExecutionEnvironment.get_execution_environment(flink_configuration(config))
    # Appended, not set through pipeline.jars: `flink run` puts flink-python's jar there already.
    env.add_jars(*(jar.as_uri() for jar in jars))
    if config.job.parallelism:  # 0: the cluster's parallelism.default (the operator's spec.job.parallelism)
        env.set_parallelism(config.job.parallelism)
    # Explicit, so the batch keys' placement (computed from it, see batcher.placed_keys) and the
    # state's key groups stay the same whatever parallelism a savepoint is restored with.
    env.set_max_parallelism(config.job.max_parallelism)
    # Each hop between tasks (source -> engine, engine -> sinks) holds records and watermarks up to
    # this long; Flink's 100 ms default was most of the latency left after the watermark wait.
    env.set_buffer_timeout(config.job.buffer_timeout)
    if config.job.checkpoint_interval > 0:
        env.enable_checkpointing(config.job.checkpoint_interval, CheckpointingMode.EXACTLY_ONCE)
    return env


def connector_jar(config: Config) -> Path:
    """The Kafka connector jar (``job.connector_jar``); ``ConfigError`` naming the setting when
    it is not there."""
    jar = config.job.connector_jar
    origin = config.origin("job.connector_jar")
    if not jar:
        raise ConfigError(
            "job.connector_jar: no Kafka connector jar: run deploy/local/fetch-jars.sh flink (or deploy/local/stack.sh "
            f"start), or set it to the path of flink-sql-connector-kafka-<version>.jar (from {origin})"
        )
    path = Path(jar).resolve()
    if not path.is_file():
        raise ConfigError(f"job.connector_jar: {jar} is not a file (from {origin})")
    return path


def batcher_jar(config: Config) -> Path:
    """The jar of the job's JVM batching operator (``job.batcher_jar``, or compiled on demand)."""
    if config.job.batcher_jar:
        path = Path(config.job.batcher_jar).resolve()
        if not path.is_file():
            raise ConfigError(f"job.batcher_jar: {path} is not a file")
        return path
    try:
        return ensure_jar(connector=connector_jar(config))
    except JarBuildError as exc:
        raise ConfigError(f"job.batcher_jar: {exc}") from exc


def engine_config(config: Config) -> EngineConfig:
    return EngineConfig(
        dedup_horizon=config.events.dedup_horizon,
        allowed_lateness=config.events.allowed_lateness,
        horizon=config.job.horizon,
        generic_aggregates=config.job.generic_aggregates,
    )


def scorer_loader(config: Config, rules: RuleSet) -> ScorerLoader | None:
    """What loads the models in the workers: those in ``job.model_artifacts`` that publish a score
    the rules' catalogue declares. Checked here, so a broken card stops the job at start
    (``ConfigError`` naming the setting), not in every TaskManager."""
    if not config.job.models:
        return None
    try:
        kept, left_out = cards_for(config.job.model_artifacts or None, rules.catalog.scores)
    except ModelCardError as exc:
        raise ConfigError(f"job.model_artifacts: {exc} (from {config.origin('job.model_artifacts')})") from exc
    if left_out:
        log.info(
            "models left out, the catalogue declares none of their scores: %s",
            ", ".join(f"{c.name} ({', '.join(c.score_names)})" for c in left_out),
        )
    published = {name for card in kept for name in card.score_names}
    missing = [name for name in rules.catalog.scores if name not in published]
    if missing:
        log.warning("no model publishes the declared score(s) %s: rules on them match no one", ", ".join(missing))
    if not kept:
        return None
    models = [card.name for card in kept]
    log.info("models: %s", ", ".join(f"{c.name} {c.version}" for c in kept))
    return functools.partial(load_scorer, config.job.model_artifacts, rules.catalog.scores, models=models)


def side_output(stream: DataStream, tag: OutputTag) -> DataStream:
    """The records ``stream``'s operator sends to ``tag``, as the JVM typed them.

    Not ``DataStream.get_side_output``: it appends a Python identity map, chained into the segment
    engine's task. In thread mode each embedded Python operator has its own Python thread state
    on the task's thread, and the first one opened (Flink opens a chain tail first: a map's)
    becomes the thread's ``PyGILState`` state. Then a native extension that takes the GIL with
    ``PyGILState_Ensure`` inside the engine (onnxruntime's module init does) waits for the GIL its
    own thread already holds, for ever. The side outputs are ``Row``s of a Java ``RowTypeInfo``
    (``descriptors.KEY_VALUE_TYPE``), which the Table API sinks read as they are.
    """
    return DataStream(stream._j_data_stream.getSideOutput(tag.get_java_output_tag()))


def build_pipeline(env: StreamExecutionEnvironment, config: Config, rules: RuleSet | None = None) -> None:
    """Add the job's operators to ``env`` (rules from ``config.job.rules_path`` unless given)."""
    if rules is None:
        rules = load_rules(list(config.job.rules_path), horizon=config.job.horizon)
    t_env = StreamTableEnvironment.create(env)
    t_env.get_config().set("table.exec.uid.generation", "ALWAYS")
    statements = t_env.create_statement_set()

    gate = event_gate(config, rules.catalog)
    # The sources judge records by the catalogue in use: the one of `rules` until the segment
    # function announces another (a restore, the rules topic) under this run's key.
    gate_key = f"gate/{config.job.name}/{uuid.uuid4().hex[:12]}" if config.job.hot_reload else None
    channel = gate_channel(config, gate_key) if gate_key else ""
    batches = build_batches(build_event_source(t_env, config, gate, channel), config, gate, channel)
    job = config.job
    engine = BatchEngine(
        rules,
        engine_config(config),
        limits=parse_limits(config),
        redis=config.redis,
        batch_keys=job.batch_keys,
        placed_keys=list(placed_keys(job)[0]),
        source_topic=config.kafka.events_topic,
        metrics_config=config.metrics,
        scorer=scorer_loader(config, rules),
        cache_memory=job.state_cache_memory,
        full_gc_interval=job.python_full_gc_interval,
        write_behind=job.state_write_behind,
        gate_key=gate_key,
    )
    if config.job.hot_reload:
        rule_files = (
            build_rules_source(t_env, config)
            .assign_timestamps_and_watermarks(
                WatermarkStrategy.for_monotonous_timestamps()
                .with_idleness(Duration.of_seconds(1))
                .with_timestamp_assigner(BroadcastTimeAssigner())
            )
            .uid("rule-files")
            .name("rule files")
        )
        changes = batches.connect(rule_files.broadcast(RULE_FILES)).process(
            SegmentBroadcastFunction(engine), output_type=KEY_VALUE_TYPE
        )
    else:
        changes = batches.process(SegmentFunction(engine), output_type=KEY_VALUE_TYPE)
    changes = changes.uid("segment-engine").name("segment engine")
    build_kafka_sink(
        t_env, statements, side_output(changes, DLQ_TAG), name="dlq", topic=config.kafka.dlq_topic, config=config
    )
    build_kafka_sink(
        t_env, statements, side_output(changes, LATE_TAG), name="late", topic=config.kafka.late_topic, config=config
    )
    build_kafka_sink(t_env, statements, changes, name="changes", topic=config.kafka.changes_topic, config=config)
    if gate_key:
        # Not transactional: the sources must see an announcement at once, not at the next
        # checkpoint (it is idempotent: the same key and value whenever it is repeated).
        build_kafka_sink(
            t_env,
            statements,
            side_output(changes, GATE_TAG),
            name="event-gate",
            topic=config.kafka.status_topic,
            config=config,
            delivery_guarantee="at-least-once",
        )
    statements.attach_as_datastream()


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        config = load_config(argv)
    except ConfigError as exc:
        print(f"error: configuration: {exc}", file=sys.stderr)
        return 2
    if "--print-config" in argv:
        print(config.describe())
        return 0
    try:
        rules = load_rules(list(config.job.rules_path), horizon=config.job.horizon)
    except RuleLoadError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    log.info("configuration:\n%s", config.describe())
    log.info("rules %s: %d segments", rules.version, len(rules.segments))
    try:
        # Kafka and Redis reached as the job will reach them: a wrong password, certificate or
        # address stops it here, naming the setting, not in a restart loop on the cluster.
        check_connections(config)
        env = create_environment(config)
    except ConfigError as exc:
        print(f"error: configuration: {exc}", file=sys.stderr)
        return 2
    try:
        build_pipeline(env, config, rules)
    except ConfigError as exc:
        print(f"error: configuration: {exc}", file=sys.stderr)
        return 2
    env.execute(config.job.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
