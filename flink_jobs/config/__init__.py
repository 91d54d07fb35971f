"""The job's configuration: one frozen, typed object (``Config``), loaded from defaults, a file,
the environment and flags, and validated when the job starts (``load_config``); a wrong setting
stops it with a ``ConfigError`` that names the setting, where its value came from, and what is
allowed. Every setting, its default and its meaning: ``settings.SETTINGS`` (``--print-config``
shows them resolved)."""

from ..runtime.metrics import MetricsConfig
from ..runtime.redis_writer import RedisConfig
from .connections import PASSWORD_ENV, check_connections, java_kafka_properties, kafka_python_options
from .loading import load_config, load_config_for_tools, parse_args, resolve_config
from .local_stack import (
    DEFAULT_CHECKPOINT_DIR,
    DEFAULT_METRICS_TARGETS_DIR,
    REPO_ROOT,
    STACK_ENV,
    read_env_file,
)
from .sections import Config, EventsConfig, JobConfig, KafkaConfig
from .settings import ENV_PREFIX, SETTINGS, ConfigError, Setting, env_name, parse_memory_size, parse_timestamp

__all__ = [
    "PASSWORD_ENV",
    "check_connections",
    "java_kafka_properties",
    "kafka_python_options",
    "DEFAULT_CHECKPOINT_DIR",
    "DEFAULT_METRICS_TARGETS_DIR",
    "ENV_PREFIX",
    "REPO_ROOT",
    "SETTINGS",
    "STACK_ENV",
    "Config",
    "ConfigError",
    "EventsConfig",
    "JobConfig",
    "KafkaConfig",
    "MetricsConfig",
    "RedisConfig",
    "Setting",
    "env_name",
    "load_config",
    "load_config_for_tools",
    "parse_args",
    "parse_memory_size",
    "parse_timestamp",
    "read_env_file",
    "resolve_config",
]
