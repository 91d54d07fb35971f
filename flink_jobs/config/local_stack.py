"""Where a job started next to this repository's local stack finds it (``deploy/local``).

The job's configuration does not depend on this repository's layout; only its defaults do: the
local stack's addresses and the Kafka connector jar (``.cache/stack/stack.env``, written by
``deploy/local/stack.sh``, or where ``deploy/local/fetch-jars.sh`` puts the jar), and local
folders for checkpoints and Prometheus's file discovery under ``.cache/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

REPO_ROOT = Path(__file__).resolve().parents[2]
STACK_ENV = REPO_ROOT / ".cache" / "stack" / "stack.env"
VERSIONS_ENV = REPO_ROOT / "deploy" / "local" / "versions.env"
# Local default; the JobManager's in-memory storage (Flink's default) fails above 5 MB of state.
DEFAULT_CHECKPOINT_DIR = (REPO_ROOT / ".cache" / "flink" / "checkpoints").as_uri()
# Where the Python metrics exporters register themselves for a local Prometheus (file_sd); the
# same folder deploy/local/prometheus.sh points Prometheus at.
DEFAULT_METRICS_TARGETS_DIR = str(REPO_ROOT / ".cache" / "observability" / "targets")
# Variables of the local stack that give settings their defaults.
STACK_VARIABLES = ("KAFKA_BOOTSTRAP", "REDIS_URL", "FLINK_KAFKA_CONNECTOR_JAR")


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a shell-sourceable file (comments and blanks skipped)."""
    out: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return out
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        out[key.strip().removeprefix("export ").strip()] = value.strip().strip("'\"")
    return out


def default_connector_jar(stack: Mapping[str, str]) -> str:
    if stack.get("FLINK_KAFKA_CONNECTOR_JAR"):
        return stack["FLINK_KAFKA_CONNECTOR_JAR"]
    # Where deploy/local/fetch-jars.sh puts it, even when the stack is not running.
    version = read_env_file(VERSIONS_ENV).get("FLINK_KAFKA_CONNECTOR_VERSION")
    if version:
        candidate = REPO_ROOT / ".cache" / "jars" / "flink" / version / f"flink-sql-connector-kafka-{version}.jar"
        if candidate.exists():
            return str(candidate)
    return ""


def stack_defaults(environ: Mapping[str, str], stack_env: Path | None) -> dict[str, tuple[Any, str]]:
    """Defaults from the local stack: setting -> (value, where it came from)."""
    stack = read_env_file(stack_env) if stack_env is not None else {}
    merged = {**stack, **{k: v for k, v in environ.items() if k in STACK_VARIABLES}}
    origin = "the local stack (KAFKA_BOOTSTRAP/REDIS_URL/FLINK_KAFKA_CONNECTOR_JAR)"
    out: dict[str, tuple[Any, str]] = {}
    if merged.get("KAFKA_BOOTSTRAP"):
        out["kafka.bootstrap"] = (merged["KAFKA_BOOTSTRAP"], origin)
    if merged.get("REDIS_URL"):
        out["redis.url"] = (merged["REDIS_URL"], origin)
    jar = default_connector_jar(merged) if stack_env is not None else merged.get("FLINK_KAFKA_CONNECTOR_JAR", "")
    if jar:
        out["job.connector_jar"] = (jar, origin)
    return out
