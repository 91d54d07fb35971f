"""What the job says about its rules and models, read from Kafka: the status topic's answers
(``rules/<job>``, ``model/<job>/<name>``), the last rule set published on the rules topic, and
the rules a job runs. ``segments publish``/``status`` and ``segments serve`` read them."""

from __future__ import annotations

import json
import time
from typing import Any, Iterable

from ..config import Config, kafka_python_options
from ..core import loader
from ..core.diagnostics import RuleLoadError
from ..core.model import RuleSet
from ..runtime.rule_files import RULE_SET_KEY


def _consumer(config: Config, topic: str) -> tuple[Any, dict[Any, int]]:
    """A consumer assigned to every partition of ``topic`` from the start, and their end offsets."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**kafka_python_options(config.kafka), enable_auto_commit=False)
    partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    return consumer, consumer.end_offsets(partitions)


def _records(consumer: Any, ends: dict[Any, int], wait: float = 0.0, until: Any = None) -> Iterable[Any]:
    """Every record up to the end offsets; then, with ``until``, new ones until ``until()`` holds
    (and a second more, for a job's other tasks) or ``wait`` seconds have passed."""
    deadline = time.monotonic() + wait
    while any(consumer.position(tp) < end for tp, end in ends.items()):
        for records in consumer.poll(timeout_ms=500).values():
            yield from records
    if until is None:
        return
    while time.monotonic() < deadline:
        if until():
            deadline = min(deadline, time.monotonic() + 1)
        for records in consumer.poll(timeout_ms=200).values():
            yield from records


def read_status(config: Config, wait: float = 0.0, until: Any = None) -> dict[str, dict[str, Any]]:
    """key -> latest value of the status topic's rules and models records (``rules/<job>``,
    ``model/<job>/<name>``). With ``until(answers)``, keep reading new ones up to ``wait``
    seconds until it holds."""
    consumer, ends = _consumer(config, config.kafka.status_topic)
    out: dict[str, dict[str, Any]] = {}
    try:
        for record in _records(consumer, ends, wait, (lambda: until(out)) if until else None):
            key = (record.key or b"").decode()
            if key.startswith(("rules/", "model/")) and record.value:
                out[key] = json.loads(record.value)
    finally:
        consumer.close()
    return out


def _latest_set(config: Config) -> dict[str, str] | None:
    """The files of the last rule set published on the rules topic, if any."""
    consumer, ends = _consumer(config, config.kafka.rules_topic)
    latest: dict[str, str] | None = None
    try:
        for record in _records(consumer, ends):
            if (record.key or b"").decode() == RULE_SET_KEY:
                latest = json.loads(record.value)["files"] if record.value else None
    finally:
        consumer.close()
    return latest


def current_rules(config: Config, status: dict[str, dict[str, Any]]) -> tuple[str | None, RuleSet | None]:
    """The version the job runs (its latest answer) and those rules when they can be found: the
    set last published on the rules topic, or the job's start rules (``job.rules_path``)."""
    answers = [v for k, v in status.items() if k.startswith("rules/")]
    if not answers:
        return None, None
    version = str(answers[-1]["version"])
    candidates: list[RuleSet] = []
    published = _latest_set(config)
    if published:
        try:
            candidates.append(loader.load_rules_from_texts(published, horizon=config.job.horizon))
        except RuleLoadError:
            pass
    try:
        candidates.append(loader.load_rules(list(config.job.rules_path), horizon=config.job.horizon))
    except RuleLoadError:
        pass
    return version, next((c for c in candidates if c.version == version), None)
