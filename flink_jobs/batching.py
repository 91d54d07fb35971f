"""Batches of source records, one Python call per batch instead of one per event.

A Python call from Flink costs far more than the per-event work most calls would do, so the job
packs records in the JVM (``jvm/KeyGroupBatcher.java``): records are grouped by *batch key*
(``batch_key(customer_id)``, a fixed number of groups), and each group's records since the last
flush travel as one row, keyed by the batch key, to the segment function. Every customer belongs
to exactly one batch key, so its state lives under that key (a map entry per customer).

The batcher runs after the shuffle by batch key. It holds each record until the watermark passes
its event time (read in the JVM by ``jvm/EventKeys.java``), then sends it in its key's batch,
with that watermark, just before forwarding the watermark: the segment function applies each
event in one call, when it arrives, instead of buffering it in customer state and applying it
when a timer fires. Held records are checkpointed (keyed list state). Records ready to send are
never held across a watermark or a checkpoint barrier (so also stop-with-savepoint), nor past end
of input, nor beyond the size and time limits. After each release of batches (and after each
watermark it forwards) the batcher sends an end marker, so the segment function writes the
membership changes of all those calls to Redis at once.

``job.batch_keys`` is part of the state layout, like Flink's max parallelism: a savepoint can
only be restored with the same value.
"""

from __future__ import annotations

import base64
import zlib
from dataclasses import dataclass

RECORD_SEP = "\x1e"
FIELD_SEP = "\x1f"


def batch_key(customer_id: str, batch_keys: int) -> int:
    """The batch key of a customer; equals ``KeyGroupBatcher.batchKey`` in Java (CRC-32 of UTF-8)."""
    return zlib.crc32(customer_id.encode("utf-8")) % batch_keys


@dataclass(frozen=True)
class BatchRecord:
    """One source record as it travels in a batch. ``value``/``key`` are text when the bytes were
    valid UTF-8 (the usual case), the bytes otherwise, None when absent."""

    partition: int
    offset: int
    timestamp: int | None  # Kafka record timestamp, epoch ms
    key: str | bytes | None
    value: str | bytes | None


def _field(tagged: str) -> str | bytes | None:
    tag = tagged[:1]
    if tag == "t":
        return tagged[1:]
    if tag == "b":
        return base64.b64decode(tagged[1:])
    return None


def decode_batch(payload: str) -> list[BatchRecord]:
    """The records of a batch row, in the order the batcher received them."""
    out = []
    for record in payload.split(RECORD_SEP):
        partition, offset, timestamp, key, value = record.split(FIELD_SEP, 4)
        out.append(
            BatchRecord(int(partition), int(offset), int(timestamp) if timestamp else None, _field(key), _field(value))
        )
    return out


def encode_batch(records: list[BatchRecord]) -> str:
    """The inverse of ``decode_batch`` (what the Java batcher writes); for tests and benchmarks."""

    def tagged(v: str | bytes | None) -> str:
        if v is None:
            return "-"
        if isinstance(v, str) and RECORD_SEP not in v and FIELD_SEP not in v:
            return "t" + v
        raw = v.encode("utf-8") if isinstance(v, str) else v
        try:
            text = raw.decode("utf-8")
            if RECORD_SEP not in text and FIELD_SEP not in text:
                return "t" + text
        except UnicodeDecodeError:
            pass
        return "b" + base64.b64encode(raw).decode("ascii")

    return RECORD_SEP.join(
        FIELD_SEP.join(
            (str(r.partition), str(r.offset), "" if r.timestamp is None else str(r.timestamp), tagged(r.key), tagged(r.value))
        )
        for r in records
    )
