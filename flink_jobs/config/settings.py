"""Every setting of the job: its name, default, how its value is read, and what it is for.

A setting's value can come from a file, the environment or a flag (``loading``), always as text
or YAML: each ``Setting.parse`` turns it into its type or raises ``ConfigError`` naming the
setting and what is allowed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Mapping

from ..core.durations import DAY, format_duration, parse_duration
from ..core.syntax.help import closest
from .local_stack import DEFAULT_CHECKPOINT_DIR, DEFAULT_METRICS_TARGETS_DIR

ENV_PREFIX = "SEGMENTS_"


class ConfigError(ValueError):
    """A setting is wrong; ``str()`` names it and says what is allowed."""



# ---- settings: name, default, parser ---------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    name: str  # section.field
    default: Any
    parse: Callable[[str, Any], Any]  # (name, raw value) -> typed value; raises ConfigError
    help: str

    def show(self, value: Any) -> str:
        if self.parse in _DURATIONS and isinstance(value, int):
            return format_duration(value, weeks=False) if value else "0"
        if self.parse is parse_timestamp and isinstance(value, int):
            moment = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=value)
            return moment.isoformat().replace("+00:00", "Z")
        if _secret(self.name) and value:
            return "***"
        if self.name == "redis.url":
            return mask_url(str(value))
        if self.name == "kafka.properties" and value:
            return "{" + ", ".join(f"{k}=***" if _secret(k) else f"{k}={v}" for k, v in value.items()) + "}"
        return str(value)


def _secret(key: str) -> bool:
    return any(word in key.lower() for word in ("password", "secret", "jaas", "token"))


def mask_url(url: str) -> str:
    """A URL with its password (``scheme://user:password@host``) shown as ***."""
    return re.sub(r"^([a-z][a-z0-9+.-]*://[^:/@]*:)[^@/]*@", r"\1***@", url)


def _text(allow_empty: bool = False) -> Callable[[str, Any], str]:
    def parse(name: str, raw: Any) -> str:
        if not isinstance(raw, (str, int, float)) or isinstance(raw, bool):
            raise ConfigError(f"{name}: expected text, got {raw!r}")
        value = str(raw).strip()
        if not value and not allow_empty:
            raise ConfigError(f"{name}: must not be empty")
        return value

    return parse


def _choice(*allowed: str, upper: bool = False) -> Callable[[str, Any], str]:
    def parse(name: str, raw: Any) -> str:
        value = raw
        if isinstance(raw, str):
            value = raw.strip().upper() if upper else raw.strip().lower()
        if value not in allowed:
            near = closest(str(value), allowed)
            hint = f"; did you mean '{near}'?" if near else ""
            raise ConfigError(f"{name}: {raw!r} is not allowed; allowed values: {', '.join(allowed)}{hint}")
        return value

    return parse


def _int(minimum: int, maximum: int | None = None) -> Callable[[str, Any], int]:
    def parse(name: str, raw: Any) -> int:
        if isinstance(raw, bool):
            raise ConfigError(f"{name}: expected a whole number, got {raw!r}")
        try:
            value = int(str(raw).strip().replace("_", ""))
        except ValueError:
            raise ConfigError(f"{name}: expected a whole number, got {raw!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            upper = f" and at most {maximum}" if maximum is not None else ""
            raise ConfigError(f"{name}: {value} is out of range; allowed: at least {minimum}{upper}")
        return value

    return parse


_MIB = 1024 * 1024
_MEMORY_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "m": _MIB, "mb": _MIB, "g": 1024 * _MIB, "gb": 1024 * _MIB}


def _memory_size(minimum: int, maximum: int) -> Callable[[str, Any], int]:
    """Bytes, written as Flink writes memory sizes: a number of bytes, or one with a unit of
    k, m or g (kb, mb, gb too; powers of 1024), e.g. ``768m``."""

    def parse(name: str, raw: Any) -> int:
        if isinstance(raw, bool):
            raise ConfigError(f"{name}: expected a memory size such as 768m or 2g, got {raw!r}")
        match = re.fullmatch(r"(\d+)\s*([a-z]*)", str(raw).strip().lower().replace("_", ""))
        if not match or match.group(2) not in _MEMORY_UNITS:
            raise ConfigError(
                f"{name}: expected a memory size such as 768m or 2g (units: k, m, g; or bytes), got {raw!r}"
            )
        value = int(match.group(1)) * _MEMORY_UNITS[match.group(2)]
        if not minimum <= value <= maximum:
            raise ConfigError(
                f"{name}: {raw!r} is out of range; allowed: {minimum // _MIB}m to {maximum // _MIB}m"
            )
        return value

    return parse


def parse_memory_size(name: str, raw: Any) -> int:
    """Bytes from a memory size such as ``768m`` (see ``_memory_size``); ConfigError naming
    ``name`` when it is not one."""
    return _memory_size(0, 2**62)(name, raw)


def _duration(name: str, raw: Any) -> int:
    """A duration like ``5s``/``10m``/``1h30m``, a number of milliseconds, or 0."""
    if isinstance(raw, bool):
        raise ConfigError(f"{name}: expected a duration such as 5s, 10m or 1h, got {raw!r}")
    if isinstance(raw, int):
        value = raw
    else:
        text = str(raw).strip()
        if re.fullmatch(r"\d+", text):
            value = int(text)
        else:
            try:
                value = parse_duration(text)
            except ValueError as exc:
                raise ConfigError(f"{name}: {exc}") from None
    if value < 0:
        raise ConfigError(f"{name}: must not be negative, got {raw!r}")
    return value


def parse_timestamp(name: str, raw: Any) -> int:
    """An instant: ISO-8601 text (a date, or a date and time; UTC when no offset is given) or
    epoch milliseconds."""
    if isinstance(raw, bool):
        raise ConfigError(f"{name}: expected a date and time such as 2000-01-01, got {raw!r}")
    if isinstance(raw, int):
        return raw
    text = str(raw).strip()
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"{name}: {raw!r} is not a date and time; write e.g. 1997-01-01, 1997-01-01T00:00:00Z or epoch milliseconds"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return (moment - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(milliseconds=1)


def _duration_between(minimum: int, maximum: int) -> Callable[[str, Any], int]:
    def parse(name: str, raw: Any) -> int:
        value = _duration(name, raw)
        if not minimum <= value <= maximum:
            raise ConfigError(f"{name}: {raw!r} is out of range; allowed: {minimum} ms to {maximum} ms")
        return value

    _DURATIONS.add(parse)
    return parse


_DURATIONS: set[Callable[[str, Any], int]] = {_duration}  # parsers whose values show as durations


def _bool(name: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise ConfigError(f"{name}: {raw!r} is not a boolean; allowed values: true, false")


def _bootstrap(name: str, raw: Any) -> str:
    value = _text()(name, raw)
    for part in value.split(","):
        if not re.fullmatch(r"[A-Za-z0-9_.\-\[\]:]+:\d{1,5}", part.strip()):
            raise ConfigError(
                f"{name}: {part.strip()!r} is not host:port; write e.g. localhost:9092 or b1:9092,b2:9092"
            )
    return ",".join(p.strip() for p in value.split(","))


def _redis_url(name: str, raw: Any) -> str:
    value = _text()(name, raw)
    if not re.match(r"^(redis|rediss|unix)://", value):
        raise ConfigError(
            f"{name}: {value!r} is not a Redis URL; allowed schemes: redis://, rediss://, unix:// "
            "(e.g. redis://localhost:6379/0)"
        )
    return value


def _pem_file(name: str, raw: Any) -> str:
    """A PEM file that must be readable now (certificates and keys of TLS connections); empty
    for none."""
    value = _text(allow_empty=True)(name, raw)
    if not value:
        return ""
    try:
        with open(value, encoding="ascii", errors="replace") as fh:
            head = fh.read(64 * 1024)
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {value} ({exc.strerror}); name a PEM file, or leave it empty") from None
    if "-----BEGIN " not in head:
        raise ConfigError(f"{name}: {value} is not a PEM file (no '-----BEGIN' line); convert it, e.g. openssl x509 -in X.der -inform der -out X.pem")
    return value


def _uri(name: str, raw: Any) -> str:
    value = _text()(name, raw)
    if not re.match(r"^[a-z][a-z0-9+.-]*://", value):
        raise ConfigError(
            f"{name}: {value!r} is not a URI; write e.g. file:///var/flink/checkpoints or s3://bucket/path "
            "(Flink's in-memory checkpoint storage fails once a checkpoint exceeds 5 MB)"
        )
    return value


def _paths(name: str, raw: Any) -> tuple[str, ...]:
    items = raw if isinstance(raw, (list, tuple)) else str(raw).split(",")
    out = tuple(str(p).strip() for p in items if str(p).strip())
    if not out:
        raise ConfigError(f"{name}: name at least one rules file or folder")
    return out


def _properties(name: str, raw: Any) -> Mapping[str, str]:
    if isinstance(raw, Mapping):
        return {str(k): str(v) for k, v in raw.items()}
    if isinstance(raw, str):
        out: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in raw.split(";"))):
            if "=" not in part:
                raise ConfigError(f"{name}: {part!r} is not key=value; separate entries with ';'")
            k, v = part.split("=", 1)
            out[k.strip()] = v.strip()
        return out
    raise ConfigError(f"{name}: expected a mapping of Kafka client properties, got {raw!r}")


def _port_range(name: str, raw: Any) -> str:
    value = _text()(name, str(raw) if isinstance(raw, int) and not isinstance(raw, bool) else raw)
    m = re.fullmatch(r"(\d{1,5})(?:\s*-\s*(\d{1,5}))?", value)
    if not m or not (0 < int(m[1]) <= int(m[2] or m[1]) <= 65535):
        raise ConfigError(f"{name}: {value!r} is not a port or a port range; write e.g. 9250 or 9250-9253")
    return f"{int(m[1])}-{int(m[2])}" if m[2] else str(int(m[1]))


def _key_prefix(name: str, raw: Any) -> str:
    value = _text()(name, raw)
    if any(c.isspace() for c in value):
        raise ConfigError(f"{name}: {value!r} must not contain blanks")
    return value


def env_name(setting: str) -> str:
    return ENV_PREFIX + setting.replace(".", "_").upper()


def _secret_setting(name: str, what: str) -> Setting:
    """A secret: empty by default, given by its variable or a file its _FILE variable names."""
    env = env_name(name)
    return Setting(name, "", _text(allow_empty=True), f"{what}: {env}, or a file named by {env}_FILE")


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in (
        Setting("kafka.bootstrap", "localhost:9092", _bootstrap, "Kafka bootstrap servers, host:port[,host:port]"),
        Setting(
            "kafka.security_protocol",
            "PLAINTEXT",
            _choice("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL", upper=True),
            "Kafka security.protocol",
        ),
        Setting("kafka.group_id", "segmentation-job", _text(), "consumer group of the events source"),
        Setting(
            "kafka.starting_offsets",
            "committed",
            _choice("earliest", "latest", "committed"),
            "where a job without a checkpoint starts reading (committed: the group's offsets, else earliest)",
        ),
        Setting("kafka.bounded", False, _bool, "stop at the offsets that are latest at start (tests, benchmarks)"),
        Setting("kafka.events_topic", "events", _text(), "topic the events are read from"),
        Setting("kafka.dlq_topic", "events.dlq", _text(), "topic invalid records go to"),
        Setting("kafka.late_topic", "events.late", _text(), "topic events beyond the allowed lateness go to"),
        Setting("kafka.changes_topic", "segment-changes", _text(), "topic membership changes go to"),
        Setting("kafka.rules_topic", "segment-rules", _text(), "compacted topic of rule files (key: file name, value: YAML)"),
        Setting(
            "kafka.status_topic",
            "segment-rules-status",
            _text(),
            "compacted topic where the job announces the rules and catalogue it uses (the sources' event gate follows it)",
        ),
        Setting(
            "kafka.sasl_mechanism",
            "SCRAM-SHA-512",
            _choice("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN", upper=True),
            "SASL mechanism, with kafka.security_protocol SASL_SSL or SASL_PLAINTEXT",
        ),
        Setting("kafka.sasl_username", "", _text(allow_empty=True), "SASL user (SASL_* protocols)"),
        _secret_setting("kafka.sasl_password", "SASL password"),
        Setting("kafka.ssl_ca_file", "", _pem_file, "PEM file of the CA that signed the brokers' certificates (SSL, SASL_SSL); empty: the system's"),
        Setting("kafka.ssl_check_hostname", True, _bool, "check that a broker's certificate names the host connected to"),
        Setting("kafka.properties", {}, _properties, "extra Kafka client properties (key=value;key=value)"),
        Setting("redis.url", "redis://localhost:6379/0", _redis_url, "Redis URL (rediss:// for TLS)"),
        Setting("redis.username", "", _text(allow_empty=True), "Redis ACL user; empty: the URL's, or the default user"),
        _secret_setting("redis.password", "Redis password"),
        Setting("redis.tls_ca_file", "", _pem_file, "PEM file of the CA that signed Redis's certificate (rediss://); empty: the system's"),
        Setting("redis.tls_cert_file", "", _pem_file, "PEM client certificate, for a Redis that asks for one (tls-auth-clients)"),
        Setting("redis.tls_key_file", "", _pem_file, "PEM private key of redis.tls_cert_file"),
        Setting("redis.key_prefix", "seg:", _key_prefix, "prefix of every Redis key the job writes"),
        Setting("redis.default_ttl", 30 * 24 * 3600 * 1000, _duration, "TTL of customer keys without a segment TTL; 0 = none"),
        Setting("events.out_of_orderness", 5000, _duration, "bounded out-of-orderness of the watermark"),
        Setting("events.idleness", 30_000, _duration, "a partition silent this long stops holding the watermark; 0 = never"),
        Setting("events.allowed_lateness", 0, _duration, "events this far behind a customer's time are still applied"),
        Setting("events.dedup_horizon", 24 * 3600 * 1000, _duration, "how long event ids are remembered (event time)"),
        Setting("events.max_event_bytes", 64 * 1024, _int(256, 16 * 1024 * 1024), "larger records go to the DLQ"),
        Setting("events.max_future", 24 * 3600 * 1000, _duration, "event times further ahead of ingestion go to the DLQ"),
        Setting(
            "events.earliest_event_time",
            946_684_800_000,
            parse_timestamp,
            "events before this time go to the DLQ (a broken clock, or seconds sent as milliseconds); set it earlier "
            "to import old history. ISO-8601 (UTC when no offset is given) or epoch milliseconds",
        ),
        Setting(
            "events.watermark_interval",
            50,
            _duration_between(10, 60_000),
            "how often watermarks advance: segment changes wait up to this long after the out-of-orderness bound",
        ),
        Setting("job.name", "segmentation", _text(), "Flink job name"),
        Setting(
            "job.rules_path",
            ("rules",),
            _paths,
            "rules files or folders, comma-separated; the event catalogue (catalog.yaml) is one of the files",
        ),
        Setting(
            "job.horizon",
            400 * DAY,
            _duration_between(DAY, 10 * 365 * DAY),
            "the longest window a rule may use, and how far back the state keeps each event type's daily "
            "aggregates; a longer one costs state per customer",
        ),
        Setting(
            "job.parallelism",
            1,
            _int(0, 1024),
            "parallelism of every operator; 0 = the cluster's parallelism.default (the Kubernetes operator's "
            "spec.job.parallelism, so that it rescales the job)",
        ),
        Setting("job.checkpoint_interval", 10_000, _duration, "checkpoint interval; 0 = off"),
        Setting("job.checkpoint_dir", DEFAULT_CHECKPOINT_DIR, _uri, "checkpoint storage URI, e.g. file:///var/flink/checkpoints or s3://bucket/path"),
        Setting(
            "job.restart_attempts",
            -1,
            _int(-1, 1_000_000),
            "restarts after a failure: -1 = unlimited with exponential delay, 0 = none, n = n attempts",
        ),
        Setting(
            "job.delivery_guarantee",
            "at-least-once",
            _choice("at-least-once", "exactly-once", "none"),
            "Kafka sinks' delivery guarantee",
        ),
        Setting("job.transactional_id_prefix", "segmentation", _text(), "Kafka transactional id prefix (exactly-once)"),
        Setting("job.python_execution_mode", "thread", _choice("thread", "process"), "PyFlink execution mode"),
        Setting("job.python_bundle_size", 1000, _int(1, 1_000_000), "python.fn-execution.bundle.size (process mode)"),
        # 10 ms, not PyFlink's 100: in process mode a watermark (so every timer) waits for the open
        # bundle; 100 ms tripled live latency and gained nothing catching up (bench/HISTORY.md).
        Setting("job.python_bundle_time", 10, _duration, "python.fn-execution.bundle.time (process mode)"),
        Setting("job.python_state_cache_size", 10_000, _int(0, 10_000_000), "python.state.cache-size (process mode)"),
        # 768 MiB: room for the ~100k customers of the live bench's feed, all active within
        # minutes; fewer cached states made the live tail several times longer (bench/HISTORY.md).
        Setting(
            "job.state_cache_memory",
            768 * _MIB,
            _memory_size(0, 64 * 1024 * _MIB),
            "memory for decoded customer states the engine function keeps between steps, per parallel task, "
            "such as 768m or 2g (0 = keep none): a hit saves a state read and a decode. The cache measures a "
            "sample of its states (2-8 KB each with rules/) and holds as many as fit. Python memory: outside "
            "the JVM heap in thread mode; reserve it in the TaskManager (deploy/local/cluster.sh adds it to "
            "taskmanager.memory.task.off-heap.size). Size it to the customers active within a few minutes",
        ),
        Setting(
            "job.python_full_gc_interval",
            3_600_000,
            _duration,
            "Python workers freeze long-lived objects (the state cache) out of the cyclic GC and collect "
            "everything this often; 0 = Python's default GC (pauses of 0.2-0.5 s as the cache grows)",
        ),
        Setting("job.hot_reload", True, _bool, "follow kafka.rules_topic and switch to new rules without a restart"),
        Setting("job.connector_jar", "", _text(allow_empty=True), "path of flink-sql-connector-kafka.jar"),
        Setting(
            "job.batch_keys",
            32,
            _int(1, 32_768),
            "batch keys customers are grouped under: one Python call per batch key with records per release, so "
            "fewer keys mean fewer calls (part of the state layout: keep it across savepoints, a restore with "
            "another value stops the job at start; at least job.parallelism, a multiple of it balances best)",
        ),
        Setting(
            "job.batch_key_layout",
            "balanced",
            _choice("balanced", "identity"),
            "balanced: batch keys are spread evenly over the key groups, so every parallel task gets the same "
            "number (give or take one); identity: the layout of versions before it, for their savepoints (part "
            "of the state layout, like job.batch_keys)",
        ),
        Setting(
            "job.max_parallelism",
            128,
            _int(1, 32_768),
            "Flink's max parallelism: the highest job.parallelism a savepoint can be rescaled to (part of the state "
            "layout; 128 is Flink's own default below parallelism 86)",
        ),
        Setting(
            "job.batch_max_records",
            2000,
            _int(1, 1_000_000),
            "records after which the JVM sends a batch to Python (the records a watermark releases go in one "
            "batch per batch key, however many)",
        ),
        Setting("job.batch_max_delay", 50, _duration, "longest a record waits in the JVM for its batch"),
        Setting(
            "job.batch_max_held",
            200_000,
            _int(1, 100_000_000),
            "records the JVM holds for the watermark to pass them, per parallel task; beyond it the oldest go "
            "to Python early (which then buffers them in customer state)",
        ),
        Setting(
            "job.catch_up_release_interval",
            1000,
            _duration_between(0, 60_000),
            "while catching up (watermark over 60 s behind the clock), the JVM applies watermarks at most this "
            "often, so that a short events.watermark_interval does not multiply the Python calls of a replay; "
            "0 = every watermark",
        ),
        Setting(
            "job.state_write_behind",
            1_000,
            _duration_between(1, 3_600_000),
            "while live (watermark within 60 s of the clock), a changed customer state is written to Flink state "
            "at its batch key's first call after half to all of this long (at random, so that keys do not come "
            "due together), else at the next checkpoint: longer means fewer encodes, and a longer pause at each "
            "checkpoint",
        ),
        Setting(
            "job.buffer_timeout",
            10,
            _duration_between(1, 10_000),
            "longest a record or watermark waits in a network buffer between tasks (Flink's default is 100 ms)",
        ),
        Setting(
            "job.restore_from",
            "",
            _text(allow_empty=True),
            "savepoint or retained checkpoint (.../chk-N) to start from (upgrades, recovery after a cancel); empty = fresh",
        ),
        Setting(
            "job.models",
            True,
            _bool,
            "score customers with the ONNX models in job.model_artifacts (rules may then test their scores)",
        ),
        Setting(
            "job.generic_aggregates",
            True,
            _bool,
            "keep counts and sums of every event type at 1 min, 1 h and 1 day resolution (up to 2 days, 35 days, "
            "400 days), so a rule published later over such a window starts with the history the state holds, and "
            "the models have their inputs; off: about 40% less engine CPU and half the state per customer, but a new "
            "rule's windows count from when it is published",
        ),
        Setting(
            "job.model_artifacts",
            "",
            _text(allow_empty=True),
            "folder of model cards and ONNX files; empty = $SEGMENTS_MODEL_ARTIFACTS or the repository's model_artifacts/",
        ),
        Setting(
            "job.batcher_jar",
            "",
            _text(allow_empty=True),
            "jar with the job's batching operator; empty = compile flink_jobs/flink/jvm on first use (needs javac)",
        ),
        Setting("metrics.enabled", True, _bool, "serve the Python workers' metrics over HTTP for Prometheus"),
        Setting("metrics.host", "127.0.0.1", _text(), "address the Python exporters bind (0.0.0.0 in a pod)"),
        Setting(
            "metrics.advertise_host",
            "",
            _text(allow_empty=True),
            "host:port's host in the file_sd targets; empty: metrics.host, or this machine's name when that is 0.0.0.0",
        ),
        Setting("metrics.port_start", 9260, _int(1, 65535), "first port a Python exporter tries"),
        Setting("metrics.port_end", 9299, _int(1, 65535), "last port a Python exporter tries"),
        Setting(
            "metrics.targets_dir",
            DEFAULT_METRICS_TARGETS_DIR,
            _text(allow_empty=True),
            "folder of Prometheus file_sd files, one per Python process; empty = do not register",
        ),
        Setting("metrics.flink_reporter", True, _bool, "enable Flink's Prometheus reporter (Kafka lag, checkpoints, backpressure)"),
        Setting("metrics.flink_reporter_ports", "9250-9253", _port_range, "port range of Flink's Prometheus reporter, one port per JVM"),
        # `segments serve`: the lookup API and segment browser (flink_jobs/service/).
        Setting("serve.host", "127.0.0.1", _text(), "address `segments serve` binds (0.0.0.0 in a pod)"),
        Setting("serve.port", 8480, _int(1, 65535), "port of `segments serve`"),
        Setting(
            "serve.token",
            "",
            _text(allow_empty=True),
            "bearer token for member listings and reasons (set SEGMENTS_SERVE_TOKEN); empty: those are refused",
        ),
        Setting("serve.redis_timeout", 500, _duration, "a Redis call taking longer answers 503"),
        Setting("serve.max_page", 1000, _int(1, 100_000), "most members one page of /v1/segments/{id}/members returns"),
    )
}


# ---- loading ------------------------------------------------------------------------------------


# Settings that were replaced: the message says what to write instead.
REPLACED = {
    "job.state_cache_customers": "job.state_cache_memory, a memory budget per parallel task such as 768m "
    "(about 5 KB per customer state with rules/; the cache holds as many states as fit)",
}
