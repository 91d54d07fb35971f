from flink_jobs.batching import FIELD_SEP, RECORD_SEP, BatchRecord, batch_key, decode_batch, encode_batch
from flink_jobs.functions import _DueIndex


def test_batch_key_is_crc32_of_the_utf8_id_like_the_jvm_batcher():
    # java.util.zip.CRC32 and zlib.crc32 are the same standard CRC-32 (ISO-HDLC polynomial).
    import zlib

    assert batch_key("c-1", 128) == zlib.crc32(b"c-1") % 128
    assert batch_key("kunde-ü", 7) == zlib.crc32("kunde-ü".encode("utf-8")) % 7
    assert {batch_key(f"c-{i}", 16) for i in range(200)} == set(range(16))


def test_records_round_trip_through_the_batch_text():
    records = [
        BatchRecord(0, 41, 1_767_225_600_000, "c-1", '{"event_id": "e1"}'),
        BatchRecord(1, 7, None, None, None),
        BatchRecord(0, 42, 5, b"\xff", b"\xff\xfe"),  # not UTF-8: travels as base64
        BatchRecord(1, 8, 6, "k", f"a{RECORD_SEP}b{FIELD_SEP}c"),  # separators inside: base64 too
        BatchRecord(0, 43, 7, "", ""),
    ]
    decoded = decode_batch(encode_batch(records))
    assert decoded[:3] == records[:3]
    assert decoded[3].value == f"a{RECORD_SEP}b{FIELD_SEP}c".encode()
    assert decoded[4] == records[4]


def test_the_java_batcher_text_format_decodes():
    # As KeyGroupBatcher.java writes it: t = text, b = base64, - = null.
    payload = f"3{FIELD_SEP}10{FIELD_SEP}99{FIELD_SEP}tc-9{FIELD_SEP}t{{}}{RECORD_SEP}3{FIELD_SEP}11{FIELD_SEP}{FIELD_SEP}-{FIELD_SEP}b//4="
    assert decode_batch(payload) == [
        BatchRecord(3, 10, 99, "c-9", "{}"),
        BatchRecord(3, 11, None, None, b"\xff\xfe"),
    ]


def test_due_index_pops_customers_in_time_order_and_forgets_replaced_instants():
    index = _DueIndex()
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
