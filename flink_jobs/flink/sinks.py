"""Kafka sinks for (key, value) string rows: segment changes, late events, dead letters.

Written through the Table API Kafka connector because PyFlink's DataStream ``KafkaSink`` can
only serialize the whole element as the key, and records must be keyed by customer id (so a
customer's changes stay in order in one partition).
"""

from __future__ import annotations

from pyflink.datastream import DataStream
from pyflink.table import DataTypes, Schema, StatementSet, StreamTableEnvironment, TableDescriptor

from ..config import Config
from .sources import kafka_client_options

_GUARANTEES = {"at-least-once": "at-least-once", "exactly-once": "exactly-once", "none": "none"}


def build_kafka_sink(
    t_env: StreamTableEnvironment,
    statements: StatementSet,
    stream: DataStream,
    *,
    name: str,
    topic: str,
    config: Config,
    delivery_guarantee: str | None = None,
) -> None:
    """Write a stream of ``descriptors.KEY_VALUE_TYPE`` rows to ``topic`` (key and value as UTF-8
    bytes), with ``job.delivery_guarantee`` unless ``delivery_guarantee`` is given."""
    guarantee = delivery_guarantee or config.job.delivery_guarantee
    schema = Schema.new_builder().column("k", DataTypes.STRING()).column("v", DataTypes.STRING()).build()
    options = {
        **kafka_client_options(config.kafka),
        "topic": topic,
        "key.format": "raw",
        "key.fields": "k",
        "value.format": "raw",
        "value.fields-include": "EXCEPT_KEY",
        "sink.delivery-guarantee": _GUARANTEES[guarantee],
    }
    if guarantee == "exactly-once":
        # One prefix per sink: two sinks sharing transactional ids would fence each other.
        options["sink.transactional-id-prefix"] = f"{config.job.transactional_id_prefix}-{name}"
    builder = TableDescriptor.for_connector("kafka").schema(schema)
    for key, value in options.items():
        builder = builder.option(key, value)
    table_name = f"{name.replace('-', '_')}_sink"
    t_env.create_temporary_table(table_name, builder.build())
    statements.add_insert(table_name, t_env.from_data_stream(stream))
