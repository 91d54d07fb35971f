"""Batches of source records, one Python call per batch instead of one per event.

A Python call from Flink costs far more than the per-event work most calls would do, so the job
packs records in the JVM (``flink/jvm/KeyGroupBatcher.java``): records are grouped by *batch key*
(``batch_key(customer_id)``, a fixed number of groups), and each group's records since the last
flush travel as one row, keyed by the batch key, to the segment function. Every customer belongs
to exactly one batch key, so its state lives under that key (a map entry per customer).

The batcher runs after the shuffle by batch key. It holds each record until the watermark passes
its event time (read in the JVM by ``flink/jvm/EventKeys.java``), then sends it in its key's batch,
with that watermark, just before forwarding the watermark: the segment function applies each
event in one call, when it arrives, instead of buffering it in customer state and applying it
when a timer fires. Held records are checkpointed (keyed list state). Records ready to send are
never held across a watermark or a checkpoint barrier (so also stop-with-savepoint), nor past end
of input, nor beyond the size and time limits. After each release of batches (and after each
watermark it forwards) the batcher sends an end marker, so the segment function writes the
membership changes of all those calls to Redis at once.

Batch key ``i`` is a Flink key of its own, placed (``job.batch_key_layout=balanced``) in key
group ``i * job.max_parallelism / job.batch_keys``, so the parallel tasks get equal shares
(``KeyGroupBatcher.placedKeys``). ``job.batch_keys``, the layout and ``job.max_parallelism`` are
part of the state layout: a savepoint can only be restored with the same values.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

# A record's header in a batch (jvm/EventKeys.java, EventKeys.record): partition int32, offset
# int64, Kafka timestamp int64 (NO_TIMESTAMP: none), key length int32, value length int32 (-1:
# null), big-endian; the key's and the value's bytes follow. Records are concatenated.
_HEADER = struct.Struct(">iqqii")
NO_TIMESTAMP = -(2**63)


def batch_key(customer_id: str, batch_keys: int) -> int:
    """The batch key of a customer; equals ``KeyGroupBatcher.batchKey`` in Java (CRC-32 of UTF-8)."""
    return zlib.crc32(customer_id.encode("utf-8")) % batch_keys


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """One source record as it travels in a batch: key and value as Kafka holds them (None when
    absent)."""

    partition: int
    offset: int
    timestamp: int | None  # Kafka record timestamp, epoch ms
    key: bytes | None
    value: bytes | None


def decode_batch(payload: bytes) -> list[BatchRecord]:
    """The records of a batch row, in the order the batcher sent them."""
    out = []
    header, size, end = _HEADER.unpack_from, _HEADER.size, len(payload)
    at = 0
    while at < end:
        partition, offset, timestamp, key_length, value_length = header(payload, at)
        at += size
        key = value = None
        if key_length >= 0:
            key = payload[at : at + key_length]
            at += key_length
        if value_length >= 0:
            value = payload[at : at + value_length]
            at += value_length
        if at > end:
            raise ValueError(f"batch cut short: a record at byte {at - size} runs past its end ({end} bytes)")
        out.append(BatchRecord(partition, offset, None if timestamp == NO_TIMESTAMP else timestamp, key, value))
    return out


def encode_batch(records: list[BatchRecord]) -> bytes:
    """The inverse of ``decode_batch`` (what the Java batcher sends); for tests and benchmarks."""
    parts = []
    for r in records:
        key, value = r.key, r.value
        parts.append(
            _HEADER.pack(
                r.partition,
                r.offset,
                NO_TIMESTAMP if r.timestamp is None else r.timestamp,
                -1 if key is None else len(key),
                -1 if value is None else len(value),
            )
        )
        parts.append(key or b"")
        parts.append(value or b"")
    return b"".join(parts)
