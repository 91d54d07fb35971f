"""What the service knows besides Redis, kept fresh by one background thread: the job's answers on
the status topic (the active rule version, any rejection), the rules it runs (descriptions,
owners), and enters and exits per segment over the last hour, tallied per minute from the change
topic. Handlers read ``Live.snapshot``, replaced whole (never mutated) by the thread."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from ..config import Config, kafka_python_options
from ..core.model import RuleSet
from .status import current_rules, read_status

log = logging.getLogger(__name__)

MINUTE_MS = 60_000
WINDOW_MINUTES = 60


@dataclass(frozen=True)
class SegmentInfo:
    id: str
    description: str
    owner: str


@dataclass(frozen=True)
class Snapshot:
    read_at: float = 0.0  # wall clock of the last complete read; 0 = never
    status: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    rule_version: str | None = None
    segments: tuple[SegmentInfo, ...] = ()
    # segment -> [(minute start ms, enters, exits)] over the last hour, oldest first
    activity: Mapping[str, tuple[tuple[int, int, int], ...]] = field(default_factory=dict)
    error: str | None = None  # why the last read failed, if it did


class Tally:
    """Enters and exits per segment per minute of the changes' record time, the last hour."""

    def __init__(self) -> None:
        self.minutes: dict[str, dict[int, list[int]]] = {}

    def add(self, segment: str, kind: str, at_ms: int) -> None:
        bucket = self.minutes.setdefault(segment, {}).setdefault(at_ms - at_ms % MINUTE_MS, [0, 0])
        bucket[0 if kind == "enter" else 1] += 1

    def view(self, now_ms: int) -> dict[str, tuple[tuple[int, int, int], ...]]:
        oldest = now_ms - now_ms % MINUTE_MS - (WINDOW_MINUTES - 1) * MINUTE_MS
        out = {}
        for segment, minutes in self.minutes.items():
            for minute in [m for m in minutes if m < oldest]:
                del minutes[minute]
            out[segment] = tuple((m, e, x) for m, (e, x) in sorted(minutes.items()))
        return out


class Live:
    """Reads the status topic every ``interval`` seconds and follows the change topic."""

    def __init__(self, config: Config, interval: float = 5.0) -> None:
        self.config = config
        self.interval = interval
        self.snapshot = Snapshot()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="segments-serve-live", daemon=True)
        self._tally = Tally()
        self._consumer: Any = None
        self._rules: tuple[str | None, RuleSet | None] = (None, None)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        next_status = 0.0
        while not self._stop.is_set():
            try:
                if time.monotonic() >= next_status:
                    self._read_status()
                    next_status = time.monotonic() + self.interval
                self._follow_changes()
            except Exception as exc:  # Kafka away: keep serving what we have, say why, retry
                log.warning("reading the job's topics failed: %s", exc)
                self.snapshot = replace(self.snapshot, error=f"{type(exc).__name__}: {exc}")
                self._close()
                self._stop.wait(self.interval)
        self._close()

    def _read_status(self) -> None:
        status = read_status(self.config)
        answers = [v for k, v in status.items() if k.startswith("rules/")]
        version = str(answers[-1]["version"]) if answers else None
        if version is None or version != self._rules[0] or self._rules[1] is None:
            # Read the rules only when the version moved (a version's rules never change).
            version, rules = current_rules(self.config, status)
            self._rules = (version, rules)
        rules = self._rules[1]
        segments = tuple(SegmentInfo(s.id, s.description, s.owner) for s in rules.segments) if rules else ()
        now = int(time.time() * 1000)
        self.snapshot = Snapshot(time.time(), status, version, segments, self._tally.view(now), None)

    def _follow_changes(self) -> None:
        from kafka import KafkaConsumer, TopicPartition

        if self._consumer is None:
            kafka = self.config.kafka
            consumer = KafkaConsumer(
                **kafka_python_options(kafka),
                enable_auto_commit=False,
                isolation_level="read_committed",
            )
            topic = kafka.changes_topic
            partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
            consumer.assign(partitions)
            since = int(time.time() * 1000) - WINDOW_MINUTES * MINUTE_MS
            offsets = consumer.offsets_for_times({tp: since for tp in partitions}) if partitions else {}
            for tp in partitions:
                found = offsets.get(tp)
                if found is None:
                    consumer.seek_to_end(tp)
                else:
                    consumer.seek(tp, found.offset)
            self._consumer = consumer
        for records in self._consumer.poll(timeout_ms=500, max_records=5000).values():
            for record in records:
                try:
                    change = json.loads(record.value)
                    self._tally.add(str(change["segment"]), str(change["kind"]), int(record.timestamp))
                except (ValueError, KeyError, TypeError):
                    continue

    def _close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close()
            finally:
                self._consumer = None
