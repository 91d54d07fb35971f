import struct

import pytest

from flink_jobs.runtime.batch_engine import DueIndex
from flink_jobs.runtime.batching import BatchRecord, batch_key, decode_batch, encode_batch


def test_batch_key_is_crc32_of_the_utf8_id_like_the_jvm_batcher():
    # java.util.zip.CRC32 and zlib.crc32 are the same standard CRC-32 (ISO-HDLC polynomial).
    import zlib

    assert batch_key("c-1", 128) == zlib.crc32(b"c-1") % 128
    assert batch_key("kunde-ü", 7) == zlib.crc32("kunde-ü".encode("utf-8")) % 7
    assert {batch_key(f"c-{i}", 16) for i in range(200)} == set(range(16))


def test_records_round_trip_through_the_batch_bytes():
    records = [
        BatchRecord(0, 41, 1_767_225_600_000, b"c-1", b'{"event_id": "e1"}'),
        BatchRecord(1, 7, None, None, None),
        BatchRecord(0, 42, 5, b"\xff", b"\xff\xfe"),  # not UTF-8: travels as it is
        BatchRecord(1, 8, 6, b"k", b"a\x1eb\x1fc"),
        BatchRecord(0, 43, 7, b"", b""),
        BatchRecord(1, 2**40, -5, b"x" * 70_000, b"y"),
    ]
    assert decode_batch(encode_batch(records)) == records
    assert decode_batch(b"") == []


def test_the_java_batcher_layout_decodes():
    # As EventKeys.record writes it: big-endian partition int32, offset int64, timestamp int64
    # (Long.MIN_VALUE: none), key length int32, value length int32 (-1: null), key, value.
    payload = (
        struct.pack(">iqqii", 3, 10, 99, 3, 2) + b"c-9{}"
        + struct.pack(">iqqii", 3, 11, -(2**63), -1, 2) + b"\xff\xfe"
    )
    assert decode_batch(payload) == [
        BatchRecord(3, 10, 99, b"c-9", b"{}"),
        BatchRecord(3, 11, None, None, b"\xff\xfe"),
    ]


def test_a_cut_short_batch_is_an_error_not_a_short_read():
    payload = encode_batch([BatchRecord(0, 1, 2, b"k", b'{"a": 1}')])
    with pytest.raises(ValueError, match="cut short"):
        decode_batch(payload[:-1])
    with pytest.raises(struct.error):
        decode_batch(payload[:10])


def test_due_index_pops_customers_in_time_order_and_forgets_replaced_instants():
    index = DueIndex()
    index.set("a", 30)
    index.set("b", 10)
    index.set("c", 20)
    index.set("a", 5)  # moved earlier: the old entry at 30 is stale
    index.set("c", None)  # nothing due any more
    assert index.earliest() == 5
    assert index.pop_due(10) == ["a", "b"]
    assert index.earliest() is None
    assert index.pop_due(100) == []
    index.set("d", 50)
    assert index.pop_due(49) == [] and index.pop_due(50) == ["d"]
