"""``segments publish-model CARD``: put a new model version in the running job, without a restart.

Checks the model as the job will (the card on its own, its scores against the catalogue of
``--rules``, the ONNX file against the card's sha256, the model's tensors against the card),
writes it to the rules topic as one record (``ml/published.py``), then waits for the job's
answer on the status topic and prints it: the version now scoring, or why the job rejected it
(the models in use stay). Exit codes: 0 accepted, 1 invalid here or rejected by the job, 2 usage
or configuration errors, 3 no answer within ``--wait`` (is the job running, with job.hot_reload?).
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from pathlib import Path

from ..config import ConfigError, kafka_python_options, load_config
from ..core import loader
from ..core.diagnostics import RuleLoadError
from ..ml.cards import ModelCardError
from ..ml.published import model_record, read_model_record

EXIT_ACCEPTED, EXIT_REJECTED, EXIT_USAGE, EXIT_NO_ANSWER = 0, 1, 2, 3


def add_parser(commands: argparse._SubParsersAction) -> None:
    publish = commands.add_parser(
        "publish-model",
        help="publish a new model version (card + ONNX) to the running job; wait for its answer",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    publish.add_argument("card", metavar="CARD", help="the model card (<name>.card.json; its ONNX file beside it)")
    publish.add_argument("--rules", nargs="+", default=["rules"], metavar="PATH", help="the rules the job runs (their catalogue's scores)")
    publish.add_argument("--config", metavar="FILE", help="the job's settings file (Kafka, topics), as for the job")
    publish.add_argument("--set", action="append", default=[], metavar="SECTION.NAME=VALUE", help="a job setting, as for the job")
    publish.add_argument("--wait", type=float, default=60, metavar="SECONDS", help="how long to wait for the job's answer (0: do not wait)")
    publish.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    argv = (["--config", args.config] if args.config else []) + [a for s in args.set for a in ("--set", s)]
    try:
        config = load_config(argv)
        rules = loader.load_rules(args.rules, horizon=config.job.horizon)
    except ConfigError as exc:
        print(f"error: configuration: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RuleLoadError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    try:
        key, value, card = model_record(Path(args.card))
        read_model_record(key, value, rules.catalog.scores)  # as the job reads it
        from ..ml.serving import open_published  # onnxruntime only here

        open_published(card, base64.b64decode(json.loads(value)["onnx"]))
    except ModelCardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REJECTED

    from kafka import KafkaConsumer, KafkaProducer

    kafka = config.kafka
    client = kafka_python_options(kafka)
    published_at = int(time.time() * 1000)
    producer = KafkaProducer(**client)
    try:
        producer.send(kafka.rules_topic, key=key.encode(), value=value.encode()).get(timeout=30)
    finally:
        producer.close()
    print(f"published {card.name} {card.version} to {kafka.rules_topic} ({len(value):,} bytes)")
    if args.wait <= 0:
        return EXIT_ACCEPTED
    answers = _answers(KafkaConsumer(kafka.status_topic, auto_offset_reset="earliest", enable_auto_commit=False, **client), card.name, published_at, args.wait)
    if not answers:
        print(f"no answer from a job on {kafka.status_topic} within {args.wait:g} s: is one running with job.hot_reload?", file=sys.stderr)
        return EXIT_NO_ANSWER
    code = EXIT_ACCEPTED
    for job, answer in sorted(answers.items()):
        if answer["state"] == "accepted" and answer.get("version") == card.version:
            print(f"job {job}: accepted, {answer['detail']}")
        else:
            print(f"job {job}: {answer['state']}: {answer['detail']}", file=sys.stderr)
            code = EXIT_REJECTED
    return code


def _answers(consumer, model: str, since: int, wait: float) -> dict[str, dict]:
    """job -> its latest answer about ``model`` given after ``since`` (epoch ms), read from the
    status topic until the first answer and a second more (the job's other tasks), or ``wait``."""
    deadline = time.monotonic() + wait
    answers: dict[str, dict] = {}
    try:
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    parts = (record.key or b"").decode().split("/")
                    if len(parts) != 3 or parts[0] != "model" or parts[2] != model or not record.value:
                        continue
                    answer = json.loads(record.value)
                    if answer.get("at", 0) >= since - 1000:  # clocks of one machine or one site
                        answers[parts[1]] = answer
            if answers:
                deadline = min(deadline, time.monotonic() + 1)
    finally:
        consumer.close()
    return answers
