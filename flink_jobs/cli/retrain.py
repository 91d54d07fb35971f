"""Retrain the purchase-propensity model on your own events; keep it only if it is not worse.

    python -m flink_jobs.cli.retrain --events events.jsonl           # a replay file (JSON lines)
    python -m flink_jobs.cli.retrain --topic segment-events --since 2026-06-01T00:00:00Z
    python -m flink_jobs.cli.retrain --cdnow                         # the reference data set

Events are read as the job reads them: parsed and validated against the catalogue of ``--rules``
(invalid records are counted and skipped, as the job sends them to its dead-letter topic). What
is trained, how it is compared with the model in use and what "worse" means: ``ml/retrain.py``.
Run it on a schedule (deploy/cron/retrain.cron, deploy/kubernetes/retrain-cronjob.yaml); publish
what it writes with ``segments publish-model``. Exit codes: 0 a model was written, 1 none (worse,
or too little data to tell), 2 usage errors.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

from ..config import ConfigError, parse_timestamp
from ..core import loader
from ..core.catalog import Catalog
from ..core.diagnostics import RuleLoadError
from ..core.durations import parse_duration
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


def read_topic(bootstrap: str, topic: str, since: int | None, until: int | None, catalog: Catalog) -> tuple[list[Event], int]:
    """Valid events of a topic from ``since`` to ``until`` (record timestamps, epoch ms; the whole
    topic when not given), and how many records were not."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
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
        schema, limits = EventSchema(catalog), ParseLimits()
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flink_jobs.cli.retrain", description=(__doc__ or "").split("\n\n")[0])
    given = parser.add_mutually_exclusive_group(required=True)
    given.add_argument("--events", metavar="FILE", help="a replay of events, one JSON object per line")
    given.add_argument("--topic", metavar="TOPIC", help="the events topic (with --bootstrap, --since, --until)")
    given.add_argument("--cdnow", action="store_true", help="the CDNOW purchase log the shipped model was trained on")
    parser.add_argument("--bootstrap", default="localhost:9092", help="Kafka, for --topic (default localhost:9092)")
    parser.add_argument("--since", metavar="TIME", help="topic records from this time (ISO 8601 or epoch ms)")
    parser.add_argument("--until", metavar="TIME", help="topic records up to this time")
    parser.add_argument("--rules", nargs="+", default=["rules"], metavar="PATH", help="the rules whose catalogue the events follow")
    parser.add_argument("--artifacts", metavar="DIR", help="the models in use (default model_artifacts/)")
    parser.add_argument("--out", default=".cache/models/retrained", metavar="DIR", help="where a model that is not worse goes")
    parser.add_argument("--horizon", metavar="DURATION", help="label horizon, e.g. 90d (default: a third of the span, at most 273d)")
    parser.add_argument("--tolerance", type=float, default=0.01, help="how much lower average precision still counts as not worse")
    args = parser.parse_args(argv)

    from ..ml.cards import artifacts_folder
    from ..ml.retrain import retrain  # scikit-learn: the `train` extra

    try:
        horizon = parse_duration(args.horizon) if args.horizon else None
        since = parse_timestamp("--since", args.since) if args.since else None
        until = parse_timestamp("--until", args.until) if args.until else None
    except (ValueError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.cdnow:
            from ..ml.datasets import cdnow_events
            from ..ml.replay import training_catalog

            catalog = training_catalog()  # the CDNOW log as the models were trained on it
            events, invalid, source = cdnow_events(), 0, "CDNOW master transaction log (lifetimes 0.11.3)"
        else:
            catalog = loader.load_rules(args.rules).catalog
            if args.events:
                events, invalid = read_file(Path(args.events), catalog)
                source = f"replay file {args.events}"
            else:
                events, invalid = read_topic(args.bootstrap, args.topic, since, until, catalog)
                source = f"topic {args.topic} ({args.since or 'start'} .. {args.until or 'end'})"
    except RuleLoadError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if invalid:
        print(f"      {invalid:,} invalid records skipped", file=sys.stderr)
    if not events:
        print("error: no valid events to train on", file=sys.stderr)
        return 2
    return retrain(events, catalog, artifacts_folder(args.artifacts), Path(args.out), horizon, args.tolerance, source)


if __name__ == "__main__":
    sys.exit(main())
