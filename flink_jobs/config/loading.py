"""The job's configuration: one frozen, typed object, validated when the job starts.

Sources, later ones winning:

1. defaults (``settings.SETTINGS``), with the local stack's ``KAFKA_BOOTSTRAP``, ``REDIS_URL``
   and ``FLINK_KAFKA_CONNECTOR_JAR`` taken from the environment or from
   ``.cache/stack/stack.env`` when present (``local_stack``: a job started next to
   ``deploy/local/stack.sh`` finds it);
2. a YAML file (``--config FILE`` or ``SEGMENTS_CONFIG``), sections as in ``SETTINGS``;
3. environment variables ``SEGMENTS_<SECTION>_<NAME>``, e.g. ``SEGMENTS_KAFKA_BOOTSTRAP``, or
   ``SEGMENTS_<SECTION>_<NAME>_FILE`` naming a file that holds the value (secrets mounted as
   files, e.g. ``SEGMENTS_KAFKA_SASL_PASSWORD_FILE``);
4. command-line flags: ``--set section.name=value`` and the shortcuts in ``_FLAG_SHORTCUTS``.

A wrong setting stops the job at start with a ``ConfigError`` that names the setting, where its
value came from, and what is allowed.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import fields
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

from ..core.engine import lateness_problem
from ..core.syntax.help import closest
from .connections import check_settings
from .local_stack import STACK_ENV, stack_defaults
from .sections import SECTION_TYPES, Config
from .settings import ENV_PREFIX, REPLACED, SETTINGS, ConfigError, env_name

# Flags that set one setting each: `--parallelism 2` is `--set job.parallelism=2`.
_FLAG_SHORTCUTS: dict[str, str] = {
    "--bootstrap": "kafka.bootstrap",
    "--events-topic": "kafka.events_topic",
    "--redis-url": "redis.url",
    "--rules": "job.rules_path",
    "--parallelism": "job.parallelism",
    "--mode": "job.python_execution_mode",
    "--delivery": "job.delivery_guarantee",
    "--checkpoint-interval": "job.checkpoint_interval",
}


# ---- loading ------------------------------------------------------------------------------------


def _flatten_file(data: Any, path: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping of sections ({', '.join(SECTION_TYPES)}), got {type(data).__name__}")
    out: dict[str, Any] = {}
    for section, body in data.items():
        if section not in SECTION_TYPES:
            raise ConfigError(f"{path}: unknown section {section!r}{_suggest(str(section), SECTION_TYPES)}; sections: {', '.join(SECTION_TYPES)}")
        if body is None:
            continue
        if not isinstance(body, Mapping):
            raise ConfigError(f"{path}: section {section!r} must be a mapping of settings")
        for key, value in body.items():
            out[f"{section}.{key}"] = value
    return out


def _suggest(word: str, choices: Iterable[str]) -> str:
    near = closest(word, list(choices))
    return f" (did you mean '{near}'?)" if near else ""


def _check_known(name: str, origin: str) -> None:
    if name in REPLACED:
        raise ConfigError(f"setting {name!r} in {origin} was replaced by {REPLACED[name]}")
    if name not in SETTINGS:
        raise ConfigError(
            f"unknown setting {name!r} in {origin}{_suggest(name, SETTINGS)}; "
            "see flink_jobs/config/settings.py SETTINGS for the list"
        )


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="segmentation_job", description="Real-time customer segmentation job")
    parser.add_argument("--config", help="YAML configuration file")
    parser.add_argument(
        "--set", action="append", default=[], metavar="SECTION.NAME=VALUE", help="override one setting (repeatable)"
    )
    for flag, setting in _FLAG_SHORTCUTS.items():
        parser.add_argument(flag, dest=f"shortcut_{setting}", help=f"same as --set {setting}=...")
    parser.add_argument("--bounded", action="store_true", help="same as --set kafka.bounded=true")
    parser.add_argument("--print-config", action="store_true", help="print the resolved configuration and exit")
    return parser.parse_args(list(argv))


def load_config(
    argv: Sequence[str] = (),
    *,
    environ: Mapping[str, str] | None = None,
    stack_env: Path | None = STACK_ENV,
) -> Config:
    """Resolve and validate the configuration; raise ``ConfigError`` naming the wrong setting."""
    args = parse_args(argv)
    return resolve_config(args, environ=os.environ if environ is None else environ, stack_env=stack_env)


def load_config_for_tools(argv: Sequence[str] = ()) -> Config:
    """The job's configuration (SEGMENTS_* variables, ``--config``, ``--set``) for a tool that
    reads it without running the job, such as the cluster settings derived from it: without the
    local stack's defaults, which only a job started next to it uses."""
    return load_config(argv, stack_env=None)


def resolve_config(args: argparse.Namespace, *, environ: Mapping[str, str], stack_env: Path | None) -> Config:
    raw: dict[str, tuple[Any, str]] = {name: (s.default, "default") for name, s in SETTINGS.items()}
    raw.update(stack_defaults(environ, stack_env))

    config_file = args.config or environ.get(ENV_PREFIX + "CONFIG")
    if config_file:
        try:
            with open(config_file, encoding="utf-8") as fh:
                data = yaml.safe_load(fh)
        except OSError as exc:
            raise ConfigError(f"config file {config_file}: cannot read it ({exc.strerror})") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {config_file}: not valid YAML: {exc}") from None
        for name, value in _flatten_file(data, config_file).items():
            _check_known(name, config_file)
            raw[name] = (value, config_file)

    by_env = {env_name(n): n for n in SETTINGS}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or key == ENV_PREFIX + "CONFIG":
            continue
        variable = key.removesuffix("_FILE")
        if variable != key and variable in by_env:
            # SEGMENTS_<NAME>_FILE: the value is the file's content (a mounted secret), without
            # the line end an editor adds; the variable itself wins when both are set.
            name = by_env[variable]
            if variable not in environ:
                raw[name] = (_read_value_file(name, value, key), f"the file {value} (environment variable {key})")
            continue
        if key not in by_env:
            replaced = {env_name(n): n for n in REPLACED}.get(key)
            if replaced:
                raise ConfigError(f"environment variable {key} ({replaced}) was replaced by {REPLACED[replaced]}")
            raise ConfigError(f"unknown environment variable {key}{_suggest(key, by_env)}")
        raw[by_env[key]] = (value, f"environment variable {key}")

    for item in args.set:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: write --set section.name=value")
        name, value = item.split("=", 1)
        name = name.strip()
        _check_known(name, "--set")
        raw[name] = (value, f"--set {name}")
    for flag, setting in _FLAG_SHORTCUTS.items():
        value = getattr(args, f"shortcut_{setting}", None)
        if value is not None:
            raw[setting] = (value, flag)
    if args.bounded:
        raw["kafka.bounded"] = (True, "--bounded")

    typed: dict[str, Any] = {}
    for name, (value, origin) in raw.items():
        spec = SETTINGS[name]
        try:
            typed[name] = value if (origin == "default" and value == spec.default) else spec.parse(name, value)
        except ConfigError as exc:
            raise ConfigError(f"{exc} (from {origin})") from None
    sections = {
        section: cls(**{f.name: typed[f"{section}.{f.name}"] for f in fields(cls)})
        for section, cls in SECTION_TYPES.items()
    }
    config = Config(**sections, origins={n: o for n, (_, o) in raw.items()})
    _check_consistency(config)
    check_settings(config)
    return config


def _read_value_file(name: str, path: str, variable: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read().rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {path} ({exc.strerror}) (from environment variable {variable})") from None


def _check_consistency(config: Config) -> None:
    """Settings that are wrong together; each message names one of them."""

    job, events = config.job, config.events
    if job.models and not job.generic_aggregates:
        raise config.error(
            "job.generic_aggregates",
            "the models read their inputs from the generic aggregates; set job.generic_aggregates=true, or job.models=false",
        )
    if job.delivery_guarantee == "exactly-once" and job.checkpoint_interval == 0:
        raise config.error(
            "job.delivery_guarantee",
            "exactly-once needs checkpoints (Kafka transactions commit on checkpoint); "
            "set job.checkpoint_interval, e.g. 10s, or use at-least-once",
        )
    if job.max_parallelism < job.parallelism:
        raise config.error(
            "job.max_parallelism",
            f"must be at least job.parallelism ({job.parallelism}); it is fixed for a savepoint's life, so leave room to scale",
        )
    if job.batch_keys < job.parallelism:
        raise config.error(
            "job.batch_keys",
            f"must be at least job.parallelism ({job.parallelism}): each parallel task works on whole batch keys, "
            "so a task without one would stay idle",
        )
    problem = lateness_problem(events.dedup_horizon, events.allowed_lateness, "events.allowed_lateness")
    if problem is not None:
        raise config.error("events.dedup_horizon", problem)
    if len(config.kafka.group_id) > 200:
        raise config.error("kafka.group_id", "is longer than 200 characters")
    metrics = config.metrics
    if metrics.port_end < metrics.port_start:
        raise config.error("metrics.port_end", f"{metrics.port_end} is below metrics.port_start ({metrics.port_start})")
