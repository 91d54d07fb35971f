"""The job configuration: sources, precedence, and start-up errors that name the setting."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from flink_jobs.config import SETTINGS, ConfigError, env_name, load_config


@pytest.fixture
def jar(tmp_path):
    path = tmp_path / "flink-sql-connector-kafka.jar"
    path.write_bytes(b"PK")
    return str(path)


def _load(argv=(), environ=None, jar=None):
    env = dict(environ or {})
    if jar is not None:
        env.setdefault("FLINK_KAFKA_CONNECTOR_JAR", jar)
    return load_config(list(argv), environ=env, stack_env=None)


def test_defaults(jar):
    config = _load(jar=jar)
    assert config.kafka.bootstrap == "localhost:9092"
    assert config.kafka.events_topic == "events"
    assert config.kafka.bounded is False
    assert config.job.delivery_guarantee == "at-least-once"
    assert config.job.python_execution_mode == "thread"
    assert config.events.out_of_orderness == 5_000
    # Live latency rests on the short intervals; catching up, the batcher coalesces watermarks.
    assert config.events.watermark_interval == 50
    assert config.job.batch_max_delay == 50
    assert config.job.catch_up_release_interval == 1_000
    # One Python call per batch key per release: 32, placed evenly over Flink's 128 key groups.
    assert (config.job.batch_keys, config.job.batch_key_layout, config.job.max_parallelism) == (32, "balanced", 128)
    assert config.job.rules_path == ("rules",)
    assert config.job.connector_jar == jar
    # New rules over long windows start from the history held; the models have their inputs.
    assert config.job.generic_aggregates is True


def test_config_is_frozen(jar):
    config = _load(jar=jar)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.kafka.bootstrap = "x:1"  # type: ignore[misc]


def test_precedence_file_then_env_then_flags(tmp_path, jar):
    path = tmp_path / "job.yaml"
    path.write_text(
        "kafka:\n  bootstrap: file:9092\n  group_id: from-file\nevents:\n  out_of_orderness: 2m\njob:\n  parallelism: 3\n"
    )
    environ = {"SEGMENTS_KAFKA_BOOTSTRAP": "env:9092", "KAFKA_BOOTSTRAP": "stack:9092", "SEGMENTS_JOB_PARALLELISM": "4"}
    config = _load(["--config", str(path), "--parallelism", "2", "--set", "redis.url=redis://r:1/2"], environ, jar)
    assert config.kafka.bootstrap == "env:9092"
    assert config.kafka.group_id == "from-file"
    assert config.events.out_of_orderness == 120_000
    assert config.job.parallelism == 2
    assert config.redis.url == "redis://r:1/2"


def test_local_stack_variables_are_defaults_only(jar):
    config = _load([], {"KAFKA_BOOTSTRAP": "localhost:19092", "REDIS_URL": "redis://localhost:7/0"}, jar)
    assert config.kafka.bootstrap == "localhost:19092"
    assert config.redis.url == "redis://localhost:7/0"


def test_typed_values(jar):
    config = _load(
        [
            "--bounded",
            "--set", "events.idleness=1h30m",
            "--set", "events.allowed_lateness=2500",
            "--set", "job.rules_path=rules/a.yaml, rules/b",
            "--set", "kafka.properties=sasl.mechanism=PLAIN; sasl.jaas.config=secret",
            "--set", "kafka.security_protocol=sasl_ssl",
        ],
        jar=jar,
    )
    assert config.kafka.bounded is True
    assert config.events.idleness == 5_400_000
    assert config.events.allowed_lateness == 2_500
    assert config.job.rules_path == ("rules/a.yaml", "rules/b")
    assert config.kafka.properties == {"sasl.mechanism": "PLAIN", "sasl.jaas.config": "secret"}
    assert config.kafka.security_protocol == "SASL_SSL"

    assert _load(["--set", "job.state_cache_memory=2g"], jar=jar).job.state_cache_memory == 2 * 1024**3
    assert _load(["--set", "job.state_cache_memory=512 MB"], jar=jar).job.state_cache_memory == 512 * 1024**2
    assert _load(["--set", "job.state_cache_memory=0"], jar=jar).job.state_cache_memory == 0
    assert _load(jar=jar).job.state_cache_memory == 768 * 1024**2
    assert "sasl.jaas.config=***" in config.describe()


@pytest.mark.parametrize(
    "argv, environ, message",
    [
        (
            ["--set", "job.python_execution_mode=threads"],
            {},
            "job.python_execution_mode: 'threads' is not allowed; allowed values: thread, process; "
            "did you mean 'thread'? (from --set job.python_execution_mode)",
        ),
        (
            ["--delivery", "exactly_once"],
            {},
            "job.delivery_guarantee: 'exactly_once' is not allowed; allowed values: at-least-once, exactly-once, "
            "none; did you mean 'exactly-once'? (from --delivery)",
        ),
        (
            [],
            {"SEGMENTS_KAFKA_STARTING_OFFSETS": "beginning"},
            "kafka.starting_offsets: 'beginning' is not allowed; allowed values: earliest, latest, committed "
            "(from environment variable SEGMENTS_KAFKA_STARTING_OFFSETS)",
        ),
        (
            ["--bootstrap", "localhost"],
            {},
            "kafka.bootstrap: 'localhost' is not host:port; write e.g. localhost:9092 or b1:9092,b2:9092 (from --bootstrap)",
        ),
        (
            ["--redis-url", "localhost:6379"],
            {},
            "redis.url: 'localhost:6379' is not a Redis URL; allowed schemes: redis://, rediss://, unix:// "
            "(e.g. redis://localhost:6379/0) (from --redis-url)",
        ),
        (
            ["--parallelism", "-1"],
            {},
            "job.parallelism: -1 is out of range; allowed: at least 0 and at most 1024 (from --parallelism)",
        ),
        (
            ["--set", "events.out_of_orderness=5 sec"],
            {},
            "events.out_of_orderness: '5 sec' is not a duration; write a number followed by a unit (ms, s, m, h, d, w), "
            "for example 30s, 10m, 24h, 7d or 1h30m (from --set events.out_of_orderness)",
        ),
        (
            ["--set", "job.buffer_timeout=0"],
            {},
            "job.buffer_timeout: '0' is out of range; allowed: 1 ms to 10000 ms (from --set job.buffer_timeout)",
        ),
        (
            ["--set", "job.state_write_behind=0"],
            {},
            "job.state_write_behind: '0' is out of range; allowed: 1 ms to 3600000 ms (from --set job.state_write_behind)",
        ),
        (
            ["--set", "job.catch_up_release_interval=2m"],
            {},
            "job.catch_up_release_interval: '2m' is out of range; allowed: 0 ms to 60000 ms "
            "(from --set job.catch_up_release_interval)",
        ),
        (
            ["--set", "job.generic_aggregates=false"],
            {},
            "job.generic_aggregates: the models read their inputs from the generic aggregates; set "
            "job.generic_aggregates=true, or job.models=false (from --set job.generic_aggregates)",
        ),
        (
            ["--parallelism", "200"],
            {},
            "job.max_parallelism: must be at least job.parallelism (200); it is fixed for a savepoint's life, so "
            "leave room to scale (from default)",
        ),
        (
            ["--parallelism", "48"],
            {},
            "job.batch_keys: must be at least job.parallelism (48): each parallel task works on whole batch keys, "
            "so a task without one would stay idle (from default)",
        ),
        (
            ["--set", "job.batch_key_layout=random"],
            {},
            "job.batch_key_layout: 'random' is not allowed; allowed values: balanced, identity "
            "(from --set job.batch_key_layout)",
        ),
        (
            ["--set", "kafka.bounded=maybe"],
            {},
            "kafka.bounded: 'maybe' is not a boolean; allowed values: true, false (from --set kafka.bounded)",
        ),
        (
            ["--set", "kafka.boostrap=x:1"],
            {},
            "unknown setting 'kafka.boostrap' in --set (did you mean 'kafka.bootstrap'?); "
            "see flink_jobs/config/settings.py SETTINGS for the list",
        ),
        (
            ["--set", "job.state_cache_memory=1t"],
            {},
            "job.state_cache_memory: expected a memory size such as 768m or 2g (units: k, m, g; or bytes), "
            "got '1t' (from --set job.state_cache_memory)",
        ),
        (
            ["--set", "job.state_cache_customers=100000"],
            {},
            "setting 'job.state_cache_customers' in --set was replaced by job.state_cache_memory, a memory budget "
            "per parallel task such as 768m (about 5 KB per customer state with rules/; the cache holds as many "
            "states as fit)",
        ),
        (
            [],
            {"SEGMENTS_JOB_STATE_CACHE_CUSTOMERS": "100000"},
            "environment variable SEGMENTS_JOB_STATE_CACHE_CUSTOMERS (job.state_cache_customers) was replaced by "
            "job.state_cache_memory, a memory budget per parallel task such as 768m (about 5 KB per customer state "
            "with rules/; the cache holds as many states as fit)",
        ),
        ([], {"SEGMENTS_KAFKA_BOOTSRAP": "x:1"}, "unknown environment variable SEGMENTS_KAFKA_BOOTSRAP (did you mean 'SEGMENTS_KAFKA_BOOTSTRAP'?)"),
        (
            ["--delivery", "exactly-once", "--checkpoint-interval", "0"],
            {},
            "job.delivery_guarantee: exactly-once needs checkpoints (Kafka transactions commit on checkpoint); "
            "set job.checkpoint_interval, e.g. 10s, or use at-least-once (from --delivery)",
        ),
        (
            ["--set", "events.allowed_lateness=2d"],
            {},
            "events.dedup_horizon: must be at least events.allowed_lateness (2d), or a late duplicate could be "
            "counted twice (from default)",
        ),
    ],
)
def test_wrong_settings_fail_naming_the_setting(argv, environ, message, jar):
    with pytest.raises(ConfigError) as err:
        _load(argv, environ, jar)
    assert str(err.value) == message


def test_unknown_key_in_file_is_named_with_the_file(tmp_path, jar):
    path = tmp_path / "job.yaml"
    path.write_text("redis:\n  ulr: redis://x:1/0\n")
    with pytest.raises(ConfigError) as err:
        _load(["--config", str(path)], {}, jar)
    assert str(err.value) == (
        f"unknown setting 'redis.ulr' in {path} (did you mean 'redis.url'?); see flink_jobs/config/settings.py SETTINGS for the list"
    )
    path.write_text("kafak:\n  bootstrap: x:1\n")
    with pytest.raises(ConfigError, match=r"unknown section 'kafak' \(did you mean 'kafka'\?\)"):
        _load(["--config", str(path)], {}, jar)


def test_wrong_value_in_file_names_the_file(tmp_path, jar):
    path = tmp_path / "job.yaml"
    path.write_text("job:\n  parallelism: many\n")
    with pytest.raises(ConfigError) as err:
        _load(["--config", str(path)], {}, jar)
    assert str(err.value) == f"job.parallelism: expected a whole number, got 'many' (from {path})"


def test_missing_connector_jar_says_how_to_get_it(tmp_path):
    # Checked where the job starts (the configuration alone does not need the jar).
    from flink_jobs.flink.segmentation_job import connector_jar

    with pytest.raises(ConfigError, match=r"^job.connector_jar: no Kafka connector jar: run deploy/local/fetch-jars.sh"):
        connector_jar(_load([], {}))
    with pytest.raises(ConfigError, match=r"is not a file"):
        connector_jar(_load(["--set", f"job.connector_jar={tmp_path / 'nope.jar'}"], {}))


def test_every_setting_has_an_environment_variable():
    assert env_name("kafka.security_protocol") == "SEGMENTS_KAFKA_SECURITY_PROTOCOL"
    assert len({env_name(n) for n in SETTINGS}) == len(SETTINGS)


def test_checkpoint_dir_must_be_a_uri(jar):
    assert _load(jar=jar).job.checkpoint_dir.startswith("file:///")
    with pytest.raises(ConfigError, match=r"^job.checkpoint_dir: '/tmp/cp' is not a URI; write e.g. file:///"):
        _load(["--set", "job.checkpoint_dir=/tmp/cp"], jar=jar)


def test_the_engine_settings_follow_the_config(jar):
    from flink_jobs.flink.segmentation_job import engine_config

    assert engine_config(_load(jar=jar)).generic_aggregates is True
    off = engine_config(_load(["--set", "job.generic_aggregates=false", "--set", "job.models=false", "--set", "events.allowed_lateness=1m"], jar=jar))
    assert (off.generic_aggregates, off.allowed_lateness, off.dedup_horizon) == (False, 60_000, 24 * 3600 * 1000)


def test_old_history_needs_an_earlier_earliest_event_time_and_long_windows_a_longer_horizon(jar):
    from flink_jobs.flink.segmentation_job import engine_config

    default = _load(jar=jar)
    assert default.events.earliest_event_time == 946_684_800_000  # 2000-01-01
    assert default.job.horizon == 400 * 24 * 3600 * 1000
    cdnow = _load(["--set", "events.earliest_event_time=1997-01-01", "--set", "job.horizon=600d"], jar=jar)
    assert cdnow.events.earliest_event_time == 852_076_800_000
    assert engine_config(cdnow).horizon == 600 * 24 * 3600 * 1000
    assert "events.earliest_event_time = 1997-01-01T00:00:00Z" in cdnow.describe()
    with pytest.raises(ConfigError, match=r"^events.earliest_event_time: 'last year' is not a date and time; write e.g."):
        _load(["--set", "events.earliest_event_time=last year"], jar=jar)
    with pytest.raises(ConfigError, match=r"^job.horizon: '12h' is out of range"):
        _load(["--set", "job.horizon=12h"], jar=jar)


def test_the_models_are_checked_at_start_naming_the_setting(jar, tmp_path):
    from flink_jobs.core.loader import load_rules
    from flink_jobs.flink.segmentation_job import scorer_loader

    rules = load_rules([str(Path(__file__).resolve().parents[3] / "rules")])
    assert scorer_loader(_load(jar=jar), rules) is not None  # on by default, with the shipped models
    assert scorer_loader(_load(["--set", "job.models=false"], jar=jar), rules) is None
    with pytest.raises(ConfigError, match=r"^job.model_artifacts: .*no model cards .* \(from --set job.model_artifacts\)"):
        scorer_loader(_load(["--set", f"job.model_artifacts={tmp_path}"], jar=jar), rules)
