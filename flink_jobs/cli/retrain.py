"""Retrain the purchase-propensity model on your own events; keep it only if it is not worse.

    python -m flink_jobs.cli.retrain --events events.jsonl           # a replay file (JSON lines)
    python -m flink_jobs.cli.retrain --topic segment-events --since 2026-06-01T00:00:00Z
    python -m flink_jobs.cli.retrain --cdnow                         # the reference data set

Events are read as the job reads them: parsed and validated against the catalogue of ``--rules``
(invalid records are counted and skipped, as the job sends them to its dead-letter topic). What
is trained, how it is compared with the model in use and what "worse" means: ``ml/retrain.py``.
Run it on a schedule (deploy/cron/retrain.cron, deploy/kubernetes/base/retrain-cronjob.yaml); publish
what it writes with ``segments publish-model``. Exit codes: 0 a model was written, 1 none (worse,
or too little data to tell), 2 usage errors.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from ..config import ConfigError, parse_timestamp
from ..core import loader
from ..core.diagnostics import RuleLoadError
from ..core.durations import parse_duration
from .event_reading import read_file, read_topic


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
