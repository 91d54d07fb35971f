"""Parsing and validation of incoming events, and the records the job writes."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import fastjsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flink_jobs.core.model import Change, Event
from flink_jobs.runtime import serde
from flink_jobs.runtime.serde import EventSchema, Invalid, ParseLimits, SourceRecord, parse_event

from ..core.helpers import CATALOG

SCHEMA = EventSchema(CATALOG)

NOW = 1_795_000_000_000  # 2026-11-18T11:06:40Z
T = 1_767_261_600_000  # 2026-01-01T10:00:00Z


def _raw(**fields) -> bytes:
    doc = {"event_id": "e-1", "customer_id": "c-1", "event_type": "product_view", "event_time": T}
    doc.update(fields)
    return json.dumps({k: v for k, v in doc.items() if v is not _DROP}).encode()


_DROP = object()


def _parse(raw: bytes, **limits) -> Event | Invalid:
    return parse_event(raw, now_ms=NOW, schema=SCHEMA, limits=ParseLimits(**limits))


def test_schema_names_every_event_type_and_property_of_the_catalogue():
    schema = serde.event_schema(CATALOG)
    assert schema["properties"]["event_type"]["enum"] == list(CATALOG.event_types)
    branches = {b["if"]["properties"]["event_type"]["const"]: b["then"] for b in schema["allOf"]}
    assert set(branches) == set(CATALOG.event_types)
    for event_type in CATALOG.event_types:
        declared = branches[event_type]["properties"]["properties"]["properties"]
        assert set(declared) == set(CATALOG.property_types(event_type))
    assert set(branches["identify"]["properties"]["properties"]["properties"]) >= set(CATALOG.profile_fields)


def test_gate_spec_carries_what_the_parser_checks():
    """The JVM's event gate (jvm/EventGate.java) gets the catalogue and the parser's limits;
    tests/integration/test_sources.py runs the two side by side."""
    from flink_jobs.core.loader import load_catalog

    team = load_catalog(Path(__file__).resolve().parents[2] / "integration" / "team_rules" / "catalog.yaml")
    limits = ParseLimits(max_bytes=1000, max_future=5, earliest=7)
    spec = json.loads(serde.gate_spec(EventSchema(team), limits))
    assert (spec["max_bytes"], spec["max_future_ms"], spec["earliest_ms"]) == (1000, 5, 7)
    assert spec["max_id_length"] == serde.MAX_ID_LENGTH
    assert set(spec["types"]) == set(team.event_types)
    email_open = spec["types"]["email_open"]
    assert email_open["required"] == ["campaign"]
    assert email_open["properties"]["platform"] == {"type": "string", "values": ["ios", "android", "web"]}
    assert email_open["properties"]["campaign"] == {"type": "string", "values": None}
    shop = json.loads(serde.gate_spec(EventSchema(CATALOG), ParseLimits()))
    assert shop["types"]["identify"]["properties"]["signup_at"] == {"type": "timestamp", "values": None}


DOCS = [
    {"event_id": "e", "customer_id": "c", "event_type": "cart_add", "event_time": T, "properties": {"price": 3}},
    {"event_id": "e", "customer_id": "c", "event_type": "cart_add", "event_time": T, "properties": {"price": "3"}},
    {"event_id": "e", "customer_id": "c", "event_type": "identify", "event_time": T, "properties": {"email_opt_in": 1}},
    {"event_id": "e", "customer_id": "c", "event_type": "identify", "event_time": "x", "properties": {"age": None}},
    {"event_id": "", "customer_id": "c", "event_type": "page_view", "event_time": T},
    {"event_id": "e", "customer_id": "c", "event_type": "nope", "event_time": T},
    {"event_id": "e", "customer_id": "c", "event_type": "purchase", "event_time": T, "properties": []},
    {"customer_id": "c", "event_type": "purchase", "event_time": T},
]


@pytest.mark.parametrize("doc", DOCS)
def test_split_validators_agree_with_the_whole_schema(doc):
    whole = fastjsonschema.compile(serde.event_schema(CATALOG))
    try:
        whole(doc)
        whole_ok = True
    except fastjsonschema.JsonSchemaValueException:
        whole_ok = False
    try:
        SCHEMA._top(doc)
        SCHEMA._by_type[doc["event_type"]](doc)
        split_ok = True
    except fastjsonschema.JsonSchemaValueException:
        split_ok = False
    assert split_ok == whole_ok


def _validators_accept(schema: EventSchema, doc: dict) -> bool:
    try:
        schema._top(doc)
        schema._by_type[doc["event_type"]](doc)
    except fastjsonschema.JsonSchemaValueException:
        return False
    return True


def _team_schema() -> EventSchema:
    from flink_jobs.core.loader import load_catalog

    return EventSchema(load_catalog(Path(__file__).resolve().parents[2] / "integration" / "team_rules" / "catalog.yaml"))


_SCHEMAS = [SCHEMA, _team_schema()]  # the team's catalogue lists values (enums)
_IDS = st.one_of(
    st.text(max_size=3), st.text(alphabet=" \t\n\x0b\xa0\u2003\u3000x", max_size=4),
    st.sampled_from(["", "e-1", "x" * 256, "x" * 257]), st.integers(), st.none(), st.booleans(), st.floats(),
)
_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=False), st.sampled_from([1.0, 2.0, 0.5]),
    st.text(max_size=4), st.sampled_from(["ios", "android", "web", "2026-01-01T10:00:00Z"]),
    st.lists(st.integers(), max_size=1), st.dictionaries(st.text(max_size=1), st.integers(), max_size=1),
)
_MISSING = object()


@st.composite
def _documents(draw):
    schema = draw(st.sampled_from(_SCHEMAS))
    names = sorted({n for t in schema.catalog.event_types for n in schema.catalog.property_types(t)})
    doc = {
        "event_id": draw(st.one_of(st.just("e-1"), _IDS, st.just(_MISSING))),
        "customer_id": draw(st.one_of(st.just("c-1"), _IDS, st.just(_MISSING))),
        "event_type": draw(st.one_of(st.sampled_from(list(schema.catalog.event_types) + ["nope"]), _VALUES, st.just(_MISSING))),
        "event_time": draw(st.one_of(st.just(T), st.sampled_from([float(T), "2026-01-01T10:00:00Z", True]), _VALUES, st.just(_MISSING))),
        "properties": draw(st.one_of(
            st.dictionaries(st.sampled_from(names + ["undeclared"]), _VALUES, max_size=5), _VALUES, st.just(_MISSING),
        )),
    }
    return schema, {k: v for k, v in doc.items() if v is not _MISSING}


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_documents())
def test_surely_valid_only_says_yes_to_what_the_validators_accept(case):
    """The fast path (``EventSchema.surely_valid``) may leave a valid record to the validators,
    never let an invalid one through."""
    schema, doc = case
    if schema.surely_valid(doc):
        assert _validators_accept(schema, doc)


def test_the_feeds_valid_records_take_the_fast_path():
    """Otherwise the fast path saves nothing: every record of the synthetic feed (valid ones,
    with the usual JSON types) that the validators accept is surely valid."""
    import orjson

    from flink_jobs.core.loader import load_rules
    from flink_jobs.synthetic import FeedConfig, generate_feed

    schema = EventSchema(load_rules([Path(__file__).resolve().parents[3] / "rules"]).catalog)
    accepted = 0
    for record in generate_feed(FeedConfig(customers=200, events=3000, seed=3)):
        try:
            doc = orjson.loads(record.value)
        except orjson.JSONDecodeError:
            continue
        if isinstance(doc, dict) and _validators_accept(schema, doc):
            accepted += 1
            assert schema.surely_valid(doc), doc
    assert accepted > 2500


def test_valid_event_with_iso_time_and_typed_properties():
    raw = _raw(
        event_type="cart_add",
        event_time="2026-01-01T11:00:00+01:00",
        properties={"cart_id": "k1", "price": 19.5, "quantity": 2.0, "unknown": "dropped", "category": None},
    )
    assert _parse(raw) == Event("e-1", "c-1", "cart_add", T, {"cart_id": "k1", "price": 19.5, "quantity": 2}, NOW)


def test_timestamp_property_converted_to_epoch_ms():
    raw = _raw(event_type="identify", properties={"signup_at": "2026-01-01T10:00:00Z", "email_opt_in": True})
    event = _parse(raw)
    assert isinstance(event, Event)
    assert event.properties == {"signup_at": T, "email_opt_in": True}
    assert _parse(_raw(event_type="identify", properties={"signup_at": T})).properties == {"signup_at": T}


@pytest.mark.parametrize(
    "raw, code, reason",
    [
        (b"not json", "not_json", "not JSON: Expecting value at line 1 column 1"),
        (b"", "not_json", "empty record"),
        (b"\xff\xfe", "encoding", "not UTF-8 text: invalid start byte at byte 0"),
        (b"[1, 2]", "not_object", "expected a JSON object, got an array"),
        (b'"text"', "not_object", "expected a JSON object, got a string"),
        (_raw(customer_id=_DROP), "schema", "missing required field: customer_id"),
        (_raw(customer_id=_DROP, event_id=_DROP), "schema", "missing required fields: event_id, customer_id"),
        (_raw(customer_id=""), "schema", "customer_id is empty"),
        (_raw(event_id="   "), "schema", "event_id is empty"),
        (_raw(customer_id=42), "schema", "customer_id must be string (got a number: 42)"),
        (
            _raw(event_type="product_vew"),
            "schema",
            "unknown event_type 'product_vew'; expected one of: " + ", ".join(CATALOG.event_types),
        ),
        (
            _raw(properties={"price": "cheap"}),
            "schema",
            'properties.price must be number or null (got a string: "cheap")',
        ),
        (_raw(properties={"price": True}), "schema", "properties.price must be number or null (got a boolean: true)"),
        (_raw(properties=[1]), "schema", "properties must be object (got an array: [1])"),
        (_raw(event_time=True), "schema", "event_time must be integer or string (got a boolean: true)"),
        (
            _raw(event_time="yesterday"),
            "event_time",
            'event_time: "yesterday" is not an ISO-8601 time; write e.g. 2026-11-22T10:00:00Z or epoch milliseconds',
        ),
        (
            _raw(event_time="2026-01-01T10:00:00"),
            "event_time",
            'event_time: "2026-01-01T10:00:00" has no UTC offset; add Z or +hh:mm (a time without one is ambiguous)',
        ),
        (
            _raw(event_time=1_767_261_600),
            "event_time",
            "event_time 1970-01-21T10:54:21.600Z is before 2000-01-01 (looks like seconds since the epoch; send milliseconds)",
        ),
        (_raw(event_time="1999-12-31T23:59:59Z"), "event_time", "event_time 1999-12-31T23:59:59.000Z is before 2000-01-01"),
        (
            _raw(event_time=NOW + 86_400_001),
            "event_time",
            "event_time 2026-11-19T11:06:40.001Z is more than 1d ahead of ingestion time 2026-11-18T11:06:40.000Z",
        ),
        (
            _raw(event_type="identify", properties={"signup_at": "soon"}),
            "property",
            'properties.signup_at: "soon" is not an ISO-8601 time; write e.g. 2026-11-22T10:00:00Z or epoch milliseconds',
        ),
    ],
)
def test_invalid_records_get_a_reason(raw, code, reason):
    assert _parse(raw) == Invalid(code, reason)


def test_event_time_up_to_the_future_limit_is_accepted():
    assert isinstance(_parse(_raw(event_time=NOW + 86_400_000)), Event)
    assert _parse(_raw(event_time=NOW + 10_001), max_future=10_000).code == "event_time"


def test_oversized_record_is_rejected_before_parsing():
    raw = _raw(properties={"url": "x" * 2000}, event_type="page_view")
    assert _parse(raw, max_bytes=1000) == Invalid("oversized", f"record is {len(raw)} bytes, more than the limit of 1000 bytes")
    assert isinstance(_parse(raw, max_bytes=len(raw)), Event)


def test_none_and_deep_nesting_do_not_raise():
    assert parse_event(None, now_ms=NOW, schema=SCHEMA).code == "not_json"
    deep = b"[" * 100_000 + b"]" * 100_000
    assert isinstance(parse_event(deep, now_ms=NOW, schema=SCHEMA, limits=ParseLimits(max_bytes=10**6)), Invalid)


def test_late_record_round_trips_the_event():
    event = Event("e-9", "c-1", "identify", T, {"signup_at": T - 5, "country": "DE"}, NOW)
    record = json.loads(serde.encode_late(event, clock=T + 90_000, allowed_lateness=60_000))
    assert record["late_by_ms"] == 90_000
    assert record["reason"] == (
        "late: event_time 2026-01-01T10:00:00.000Z is 1m30s behind the customer's processed time "
        "2026-01-01T10:01:30.000Z, beyond the allowed lateness of 1m"
    )
    again = parse_event(json.dumps(record["event"]).encode(), now_ms=NOW, schema=SCHEMA)
    assert again == event


def test_change_record():
    change = Change("c-1", "abandoned_cart", "enter", T, "rs-1", "why")
    assert json.loads(serde.encode_change(change)) == {
        "customer_id": "c-1",
        "segment": "abandoned_cart",
        "kind": "enter",
        "event_time": T,
        "event_time_iso": "2026-01-01T10:00:00.000Z",
        "rule_version": "rs-1",
        "reason": "why",
    }


def test_dlq_record_keeps_payload_reason_and_source():
    source = SourceRecord("events", 1, 42, T, b"c-1")
    record = json.loads(serde.encode_dlq(Invalid("not_json", "bad"), b"{oops", source, max_payload_bytes=100))
    assert record == {
        "reason": "bad",
        "code": "not_json",
        "source": {"topic": "events", "partition": 1, "offset": 42, "timestamp": T, "key": "c-1"},
        "payload_size": 5,
        "payload": "{oops",
    }


def test_dlq_record_of_binary_and_oversized_payloads():
    source = SourceRecord("events", 0, 1, None, None)
    binary = json.loads(serde.encode_dlq(Invalid("encoding", "x"), b"\xff\x00", source, max_payload_bytes=100))
    assert base64.b64decode(binary["payload_base64"]) == b"\xff\x00"
    assert "payload" not in binary
    big = ("é" * 100).encode()  # 200 bytes; a cut at 99 splits a character
    cut = json.loads(serde.encode_dlq(Invalid("oversized", "x"), big, source, max_payload_bytes=99))
    assert cut["payload"] == "é" * 49
    assert cut["payload_truncated"] is True
    assert cut["payload_size"] == 200


def test_the_earliest_event_time_is_a_setting():
    old = _raw(event_time="1997-03-01T12:00:00Z")
    assert _parse(old) == Invalid("event_time", "event_time 1997-03-01T12:00:00.000Z is before 2000-01-01")
    assert isinstance(_parse(old, earliest=852_076_800_000), Event)  # 1997-01-01
