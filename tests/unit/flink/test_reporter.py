"""The metrics section of the job configuration and Flink's Prometheus reporter settings."""

from __future__ import annotations

import pytest

from flink_jobs.config import ConfigError, load_config
from flink_jobs.flink.reporter import (
    FLINK_METRICS,
    REPORTER_FACTORY,
    check_reporter_plugin,
    flink_metrics_configuration,
)


def _load(argv=(), environ=None, tmp_path=None):
    env = dict(environ or {})
    jar = tmp_path / "connector.jar"
    jar.write_bytes(b"PK")
    env.setdefault("FLINK_KAFKA_CONNECTOR_JAR", str(jar))
    return load_config(list(argv), environ=env, stack_env=None)


def test_metrics_defaults_and_overrides(tmp_path):
    config = _load(tmp_path=tmp_path)
    assert (config.metrics.port_start, config.metrics.port_end) == (9260, 9299)
    assert config.metrics.targets_dir.endswith(".cache/observability/targets")
    assert "metrics.port_start = 9260" in config.describe()
    config = _load(
        ["--set", "metrics.flink_reporter_ports=9300 - 9301"],
        {"SEGMENTS_METRICS_PORT_START": "9400", "SEGMENTS_METRICS_PORT_END": "9401", "SEGMENTS_METRICS_ENABLED": "no"},
        tmp_path,
    )
    assert (config.metrics.port_start, config.metrics.port_end, config.metrics.enabled) == (9400, 9401, False)
    assert config.metrics.flink_reporter_ports == "9300-9301"


@pytest.mark.parametrize(
    "setting, message",
    [
        ("metrics.port_end=9000", "metrics.port_end: 9000 is below metrics.port_start (9260)"),
        ("metrics.port_start=0", "metrics.port_start: 0 is out of range"),
        ("metrics.flink_reporter_ports=92x", "metrics.flink_reporter_ports: '92x' is not a port or a port range"),
        ("metrics.flink_reporter_ports=9300-9200", "is not a port or a port range"),
        ("metrics.prot_start=1", "did you mean 'metrics.port_start'?"),
    ],
)
def test_wrong_metrics_settings_are_named(tmp_path, setting, message):
    with pytest.raises(ConfigError, match=__import__("re").escape(message)):
        _load(["--set", setting], tmp_path=tmp_path)


def test_flink_reporter_settings(tmp_path):
    config = _load(tmp_path=tmp_path)
    assert flink_metrics_configuration(config) == {
        "metrics.reporter.prom.factory.class": REPORTER_FACTORY,
        "metrics.reporter.prom.port": "9250-9253",
    }
    off = _load(["--set", "metrics.flink_reporter=false"], tmp_path=tmp_path)
    assert flink_metrics_configuration(off) == {}


def test_the_wheel_ships_the_reporter_plugin_with_the_configured_factory():
    import zipfile

    jar = check_reporter_plugin()
    with zipfile.ZipFile(jar) as z:
        services = z.read("META-INF/services/org.apache.flink.metrics.reporter.MetricReporterFactory").decode()
        assert REPORTER_FACTORY in services.split()
        assert REPORTER_FACTORY.replace(".", "/") + ".class" in z.namelist()


def test_missing_plugin_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="FLINK_PLUGINS_DIR"):
        check_reporter_plugin(tmp_path)


def test_flink_metric_names_follow_the_reporter_scheme():
    for name in FLINK_METRICS:
        assert name.startswith(("flink_taskmanager_job_task_", "flink_jobmanager_job_")), name
        assert __import__("re").fullmatch(r"[a-zA-Z0-9:_]+", name), name
