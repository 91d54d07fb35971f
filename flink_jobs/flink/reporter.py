"""Flink's own metrics through its Prometheus reporter, and the Flink metric names we rely on.

The reporter is the plugin the apache-flink wheel ships in ``pyflink/plugins/metrics-prometheus``.
Flink loads plugins from ``FLINK_PLUGINS_DIR``: ``bin/config.sh`` (standalone cluster) and
PyFlink's gateway launcher (local mini-cluster started from Python) both default it to
``$FLINK_HOME/plugins``, so the plugin needs no copying; it needs only these settings:

* local mini-cluster: pass ``flink_metrics_configuration(config)`` into the ``Configuration``
  the execution environment is created with (one JVM, one reporter port), and call
  ``reporter_on_local_classpath()`` before that: the mini-cluster loads no plugins (its log
  says "reporter factory ... could not be found ... Available factories: []");
* standalone cluster / Kubernetes: the same keys in the cluster's ``config.yaml``
  (``deploy/local/cluster.sh`` writes them; each JVM, JobManager and every TaskManager, takes
  the first free port of the range). A job's own Configuration cannot add a reporter to a
  cluster that is already running.

Run ``python -m flink_jobs.flink.reporter`` to print the settings as YAML.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Mapping

from ..config import Config, MetricsConfig

REPORTER_NAME = "prom"
REPORTER_FACTORY = "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"
PLUGIN_FOLDER = "metrics-prometheus"

# Flink metrics the dashboard and alerts use, as the reporter names them:
# "flink_" + logical scope joined by "_" + metric name, characters outside [a-zA-Z0-9:_] as "_"
# (AbstractPrometheusReporter.getScopedName). Counters are exported as gauges. Verified against
# Flink 2.2.1 (flink-dist MetricNames, DefaultCheckpointStatsTracker, GenericValueMetricGroup)
# and flink-connector-kafka's KafkaSourceReaderMetrics.
FLINK_METRICS: Mapping[str, str] = {
    # Kafka source (FLIP-33 standard metrics of the source reader, operator scope).
    # pendingRecords: sum of the consumer's records-lag over the reader's partitions; registered
    # lazily, once a fetch has seen a partition's lag.
    "flink_taskmanager_job_task_operator_pendingRecords": "consumer lag of the Kafka source reader, records",
    "flink_taskmanager_job_task_operator_currentFetchEventTimeLag": "fetch time - record timestamp, ms",
    "flink_taskmanager_job_task_operator_numRecordsIn": "records into an operator (counter)",
    # Every KafkaConsumer metric is mirrored under KafkaSourceReader.KafkaConsumer by name only
    # (records-lag-max -> records_lag_max); the first of several same-named ones wins.
    "flink_taskmanager_job_task_operator_KafkaSourceReader_KafkaConsumer_records_lag_max": "max consumer lag, records",
    "flink_taskmanager_job_task_operator_KafkaSourceReader_commitsFailed": "failed offset commits (counter)",
    # Per partition, labels topic and partition (GenericValueMetricGroup adds no scope part).
    "flink_taskmanager_job_task_operator_KafkaSourceReader_topic_partition_currentOffset": "offset read",
    # The job's batcher (jvm/KeyGroupBatcher.java): watermarks deferred while catching up.
    "flink_taskmanager_job_task_operator_watermarksDeferred": "watermarks the batcher deferred while catching up (counter)",
    # Task (TaskIOMetricGroup), labels task_name and subtask_index.
    "flink_taskmanager_job_task_backPressuredTimeMsPerSecond": "ms per second the task was back-pressured",
    "flink_taskmanager_job_task_busyTimeMsPerSecond": "ms per second the task was busy",
    # Checkpoints and restarts (JobManager, job scope).
    "flink_jobmanager_job_numberOfFailedCheckpoints": "failed checkpoints (counter)",
    "flink_jobmanager_job_numberOfCompletedCheckpoints": "completed checkpoints (counter)",
    "flink_jobmanager_job_lastCheckpointDuration": "duration of the last completed checkpoint, ms",
    "flink_jobmanager_job_lastCheckpointFullSize": "full size of the last completed checkpoint, bytes",
    "flink_jobmanager_job_numRestarts": "job restarts (counter)",
}


def flink_metrics_configuration(config: Config | MetricsConfig) -> dict[str, str]:
    """Flink settings that turn on the Prometheus reporter (empty when
    ``metrics.flink_reporter`` is off). Set them on the Configuration of the environment."""
    metrics = config.metrics if isinstance(config, Config) else config
    if not metrics.flink_reporter:
        return {}
    prefix = f"metrics.reporter.{REPORTER_NAME}"
    return {
        f"{prefix}.factory.class": REPORTER_FACTORY,
        # One port per JVM: JobManager and each TaskManager on a host take the first free one.
        f"{prefix}.port": metrics.flink_reporter_ports,
    }


def plugins_dir() -> Path:
    """The plugins folder Flink will read: ``FLINK_PLUGINS_DIR`` or the wheel's own."""
    if os.environ.get("FLINK_PLUGINS_DIR"):
        return Path(os.environ["FLINK_PLUGINS_DIR"])
    import pyflink  # only here: the rest of the module needs no Flink

    return Path(pyflink.__file__).resolve().parent / "plugins"


def check_reporter_plugin(directory: Path | None = None) -> Path:
    """The reporter plugin's jar; ``FileNotFoundError`` saying what to do when it is missing."""
    directory = directory or plugins_dir()
    jars = sorted((directory / PLUGIN_FOLDER).glob("flink-metrics-prometheus-*.jar"))
    if not jars:
        raise FileNotFoundError(
            f"Flink's Prometheus reporter plugin is not in {directory / PLUGIN_FOLDER}: point FLINK_PLUGINS_DIR "
            "at the apache-flink wheel's pyflink/plugins, or set metrics.flink_reporter=false"
        )
    return jars[0]


def reporter_on_local_classpath() -> None:
    """Put the reporter jar on the classpath of the JVM PyFlink starts for a local mini-cluster:
    PyFlink appends HADOOP_CLASSPATH when it starts that JVM (once per process, at the first
    environment). A standalone cluster loads the same jar from its plugins folder instead."""
    from .jvm import on_local_jvm_classpath

    on_local_jvm_classpath(check_reporter_plugin())


def main(argv: list[str] | None = None) -> int:
    """Print the reporter settings as YAML (for a cluster's config.yaml); with ``--scrape-env``
    first, what a local Prometheus needs to find the exporters, as KEY=VALUE lines. Other
    arguments are the job's (``--config``, ``--set``), so both follow the job's configuration."""
    import yaml

    from ..config import load_config_for_tools

    args = list(sys.argv[1:] if argv is None else argv)
    scrape_env = bool(args) and args[0] == "--scrape-env"
    if scrape_env:
        args = args[1:]
    config = load_config_for_tools(args)
    if scrape_env:
        m = config.metrics
        print(f"FLINK_REPORTER_PORTS={m.flink_reporter_ports if m.flink_reporter else ''}")
        print(f"TARGETS_DIR={m.targets_dir}")
        return 0
    print(yaml.safe_dump(flink_metrics_configuration(config), default_flow_style=False), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
