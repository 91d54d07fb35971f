"""The events source: Kafka records as raw bytes with their topic, partition, offset and key.

Why the Table API Kafka connector and not the DataStream ``KafkaSource``: PyFlink's
``KafkaSource`` only takes value deserializers, so a Python function never sees the partition
and offset of a record, and the dead-letter topic must say where a bad record came from. The
Table connector with the ``raw`` format exposes them as METADATA columns, and
``to_data_stream`` hands the rows to the DataStream functions; it is the same FLIP-27 Kafka
source underneath (checkpointed offsets, bounded mode). It also lets the
watermark be generated per partition inside the source (see ``build_event_source``). The cost:
its operators get generated uids (``table.exec.uid.generation=ALWAYS``, stable while the
pipeline is built the same way), not ones we name.
"""

from __future__ import annotations

import json
from typing import Mapping

from pyflink.datastream import DataStream
from pyflink.table import DataTypes, Schema, StreamTableEnvironment, TableDescriptor, TableEnvironment

from ..config import Config, KafkaConfig, java_kafka_properties
from ..core.catalog import Catalog
from ..runtime.serde import EventSchema, ParseLimits, gate_spec

SOURCE_TABLE = "events_source"
# Row fields of the source stream, in order: what jvm/EventKeys.java reads.
SOURCE_FIELDS = ("partition", "offset", "kafka_ts", "key", "value")

_STARTUP_MODES: Mapping[str, str] = {
    "earliest": "earliest-offset",
    "latest": "latest-offset",
    "committed": "group-offsets",
}


def kafka_client_options(kafka: KafkaConfig) -> dict[str, str]:
    """Connector options every Kafka table of the job shares (bootstrap, security, extras)."""
    options = {"properties.bootstrap.servers": kafka.bootstrap}
    for key, value in java_kafka_properties(kafka).items():
        options[f"properties.{key}"] = value
    return options


EVENT_TIME_FUNCTION = "segments_event_time"
EVENT_TIME_CLASS = "dev.segments.flink.EventTimeOf"


def register_event_time_function(t_env: TableEnvironment) -> None:
    """Make ``segments_event_time`` (``jvm/EventTimeOf.java``) callable in ``t_env``'s SQL; the
    job's jar (``flink_jobs.flink.jvm``) must be on the JVM's classpath."""
    t_env.create_java_temporary_system_function(EVENT_TIME_FUNCTION, EVENT_TIME_CLASS)


def parse_limits(config: Config) -> ParseLimits:
    """What the parser accepts beyond the catalogue, from the ``events.*`` settings."""
    events = config.events
    return ParseLimits(max_bytes=events.max_event_bytes, max_future=events.max_future, earliest=events.earliest_event_time)


def event_gate(config: Config, catalog: Catalog) -> str:
    """The spec of the JVM's event gate (``jvm/EventGate.java``) for ``catalog`` and the job's
    limits: which records may count for event time."""
    return gate_spec(EventSchema(catalog), parse_limits(config))


def gate_channel(config: Config, key: str) -> str:
    """Where the sources' event gate follows the catalogue the job announces
    (``jvm/GateFollower.java``): the status topic, the announcements' key, and the Kafka client's
    connection settings."""
    kafka = config.kafka
    channel = {"bootstrap": kafka.bootstrap, "topic": kafka.status_topic, "key": key, "properties": java_kafka_properties(kafka)}
    return json.dumps(channel, separators=(",", ":"), sort_keys=True)


def event_time_sql(value_column: str, gate: str, channel: str = "") -> str:
    """SQL for a record's event time in epoch ms, read from the raw JSON, for the watermark only.

    A record counts only if the parser will accept it, judged by the event gate ``gate``
    (``event_gate``: the catalogue and the parser's limits) and its time is at most
    ``events.max_future`` ahead: otherwise 0, which never moves a watermark, so a record bound for
    the dead-letter topic (an undeclared event type, a wrong property type, a time before
    ``events.earliest_event_time``) cannot make valid events late. The gate follows the catalogues
    the job announces on ``channel`` (``gate_channel``; empty: it keeps ``gate``). Python's parser
    stays the authority on each event; this only decides how far the watermark goes. Needs
    ``register_event_time_function``.
    """
    return f"{EVENT_TIME_FUNCTION}(`{value_column}`, {_literal(gate)}, {_literal(channel)})"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _interval(ms: int) -> str:
    """A SQL interval literal (SECOND alone allows at most 2 digits before the point)."""
    seconds, millis = divmod(ms, 1000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return f"INTERVAL '{days} {hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}' DAY TO SECOND(3)"


def build_event_source(t_env: StreamTableEnvironment, config: Config, gate: str, channel: str = "") -> DataStream:
    """A stream of Rows (partition, offset, Kafka timestamp, key bytes, value bytes) that carries
    event-time watermarks.

    The watermark is generated in the Kafka source, per partition (FLIP-27 split watermarks),
    from the event time in the raw JSON of the records the event gate ``gate`` passes, following
    the catalogues the job announces on ``channel`` (``event_time_sql``): bounded out-of-orderness plus 1 ms
    (as ``for_bounded_out_of_orderness``), and ``events.idleness``. Generated after parsing
    instead, one subtask reading several partitions would take the maximum over partitions that
    it happens to read ahead of the others (Kafka fetches a batch per partition), and events of
    the partition behind would be needlessly late.
    """
    kafka, events = config.kafka, config.events
    t_env.get_config().set("table.local-time-zone", "UTC")
    if events.idleness > 0:
        t_env.get_config().set("table.exec.source.idle-timeout", f"{events.idleness} ms")
    delay = _interval(events.out_of_orderness + 1)
    register_event_time_function(t_env)
    schema = (
        Schema.new_builder()
        .column_by_metadata("topic", DataTypes.STRING(), "topic", True)
        .column_by_metadata("partition", DataTypes.INT(), "partition", True)
        .column_by_metadata("offset", DataTypes.BIGINT(), "offset", True)
        .column_by_metadata("kafka_ts", DataTypes.TIMESTAMP_LTZ(3), "timestamp", True)
        .column("key", DataTypes.BYTES())
        .column("value", DataTypes.BYTES())
        .column_by_expression("rowtime", f"TO_TIMESTAMP_LTZ({event_time_sql('value', gate, channel)}, 3)")
        .watermark("rowtime", f"rowtime - {delay}")
        .build()
    )
    builder = TableDescriptor.for_connector("kafka").schema(schema)
    options = {
        **kafka_client_options(kafka),
        "topic": kafka.events_topic,
        "properties.group.id": kafka.group_id,
        "scan.startup.mode": _STARTUP_MODES[kafka.starting_offsets],
        # Only used by group-offsets when the group has none yet.
        "properties.auto.offset.reset": "earliest",
        "key.format": "raw",
        "key.fields": "key",
        "value.format": "raw",
        "value.fields-include": "EXCEPT_KEY",
        # Offsets are committed on checkpoints, for monitoring lag and for `committed` restarts.
        "properties.enable.auto.commit": "false",
    }
    if kafka.bounded:
        options["scan.bounded.mode"] = "latest-offset"
    for key, value in options.items():
        builder = builder.option(key, value)
    t_env.create_temporary_table(SOURCE_TABLE, builder.build())
    # Nothing read from the JSON here: EventKeys.java reads the customer id and event time in
    # one pass (each JSON_VALUE call parses the whole record into a tree).
    table = t_env.sql_query(f"SELECT `partition`, `offset`, `kafka_ts`, `key`, `value` FROM {SOURCE_TABLE}")
    return t_env.to_data_stream(table)


RULES_TABLE = "rules_source"


def build_rules_source(t_env: StreamTableEnvironment, config: Config) -> DataStream:
    """Rows (file name, YAML text or None for a deleted file) from the rules topic, read from the
    start (a compacted topic: the latest text of every file). Bounded like the events source."""
    kafka = config.kafka
    schema = Schema.new_builder().column("name", DataTypes.STRING()).column("text", DataTypes.STRING()).build()
    options = {
        **kafka_client_options(kafka),
        "topic": kafka.rules_topic,
        "properties.group.id": f"{kafka.group_id}-rules",
        "scan.startup.mode": "earliest-offset",
        "key.format": "raw",
        "key.fields": "name",
        "value.format": "raw",
        "value.fields-include": "EXCEPT_KEY",
        "properties.enable.auto.commit": "false",
    }
    if kafka.bounded:
        options["scan.bounded.mode"] = "latest-offset"
    builder = TableDescriptor.for_connector("kafka").schema(schema)
    for key, value in options.items():
        builder = builder.option(key, value)
    t_env.create_temporary_table(RULES_TABLE, builder.build())
    return t_env.to_data_stream(t_env.from_path(RULES_TABLE))
