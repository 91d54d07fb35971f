"""Events read as the job reads them (parsed and validated against a catalogue), from a JSON-lines
file or a range of a Kafka topic: for retraining, backtests and previews."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Mapping

from ..core.catalog import Catalog
from ..core.model import Event
from ..runtime.serde import EventSchema, ParseLimits, parse_event


def read_file(path: Path, catalog: Catalog) -> tuple[list[Event], int]:
    """Valid events of a JSON-lines file, and how many lines were not."""
    schema, limits = EventSchema(catalog), ParseLimits()
    now = int(time.time() * 1000)  # as the job judges them: nothing after today
    events: list[Event] = []
    invalid = 0
    with path.open("rb") as lines:
        for line in lines:
            if not line.strip():
                continue
            parsed = parse_event(line.strip(), now_ms=now, schema=schema, limits=limits)
            if isinstance(parsed, Event):
                events.append(parsed)
            else:
                invalid += 1
    return events, invalid


def kafka_options(bootstrap: str) -> dict[str, Any]:
    """kafka-python options for ``bootstrap`` with the security settings of the environment
    (``SEGMENTS_KAFKA_SECURITY_PROTOCOL``, ``SEGMENTS_KAFKA_SASL_*``, ...), as the job has them."""
    from ..config import kafka_python_options, load_config_for_tools

    options = kafka_python_options(load_config_for_tools().kafka)
    options["bootstrap_servers"] = bootstrap
    return options


def read_topic(
    bootstrap: str,
    topic: str,
    since: int | None,
    until: int | None,
    catalog: Catalog,
    limits: ParseLimits | None = None,
    options: Mapping[str, Any] | None = None,
) -> tuple[list[Event], int]:
    """Valid events of a topic from ``since`` to ``until`` (record timestamps, epoch ms; the whole
    topic when not given), and how many records were not (judged with ``limits``, the job's by
    default). ``options``: kafka-python's client options (default: ``kafka_options(bootstrap)``)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**(dict(options) if options else kafka_options(bootstrap)), enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            raise ValueError(f"topic {topic} not found on {bootstrap}")
        consumer.assign(partitions)
        ends = consumer.end_offsets(partitions)
        consumer.seek_to_beginning(*partitions)
        if since is not None:
            for tp, found in consumer.offsets_for_times({tp: since for tp in partitions}).items():
                consumer.seek(tp, found.offset if found is not None else ends[tp])
        schema, limits = EventSchema(catalog), limits or ParseLimits()
        now = int(time.time() * 1000)
        events: list[Event] = []
        invalid = 0
        done = {tp for tp in partitions if consumer.position(tp) >= ends[tp]}
        reported = 0
        while len(done) < len(partitions):
            for tp, records in consumer.poll(timeout_ms=1000, max_records=5000).items():
                for record in records:
                    if record.offset >= ends[tp] or (until is not None and record.timestamp > until):
                        done.add(tp)
                        break
                    parsed = parse_event(record.value, now_ms=now, schema=schema, limits=limits, ingest_ms=record.timestamp)
                    if isinstance(parsed, Event):
                        events.append(parsed)
                    else:
                        invalid += 1
                if consumer.position(tp) >= ends[tp]:
                    done.add(tp)
            if len(events) >= reported + 100_000:
                reported = len(events)
                print(f"  {topic}: {reported:,} events read", file=sys.stderr, flush=True)
        return events, invalid
    finally:
        consumer.close()
