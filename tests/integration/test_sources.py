"""The SQL function that reads event time for the source's watermark passes only records the
Python parser accepts (the event gate, ``jvm/EventGate.java``), with the parser's time.

The corpus is each catalogue's events, valid, and then broken one way at a time: whatever the
parser rejects must give 0 (it never moves a watermark), whatever the gate passes must carry the
time the parser reads. The gate may be stricter than the parser, never laxer; the cases where it
is stricter on purpose are listed, so that a change in either shows here."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from flink_jobs.core.catalog import Catalog
from flink_jobs.core.loader import load_catalog
from flink_jobs.flink.jvm import ensure_jar
from flink_jobs.flink.sources import event_time_sql, register_event_time_function
from flink_jobs.runtime.serde import MAX_ID_LENGTH, EventSchema, Invalid, ParseLimits, gate_spec, parse_event

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SHOP = ROOT / "rules" / "catalog.yaml"
TEAM = ROOT / "tests" / "integration" / "team_rules" / "catalog.yaml"
DAY = 24 * 3600 * 1000
LIMITS = ParseLimits(max_bytes=4096, max_future=DAY, earliest=946_684_800_000)
T = 1_767_261_600_123  # 2026-01-01T10:00:00.123Z


def _value(spec: Any) -> Any:
    if spec.values and spec.type != "timestamp":
        return spec.values[0]
    return {"string": "x", "number": 2.5, "bool": True, "timestamp": "2025-06-01T00:00:00Z"}[spec.type]


def _valid(catalog: Catalog, event_type: str, n: int = 0) -> dict[str, Any]:
    declared = catalog.events[event_type].properties
    return {
        "event_id": f"e-{event_type}-{n}",
        "customer_id": f"c-{n}",
        "event_type": event_type,
        "event_time": T + n,
        "properties": {name: _value(spec) for name, spec in declared.items()},
    }


def _with(doc: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = json.loads(json.dumps(doc))
    for key, value in changes.items():
        if value is _DROP:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def _props(doc: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = json.loads(json.dumps(doc))
    for key, value in changes.items():
        if value is _DROP:
            out["properties"].pop(key, None)
        else:
            out["properties"][key] = value
    return out


_DROP = object()
WRONG = ["x", 3, 2.5, True, None, [1], {"a": 1}, "2026-01-01T10:00:00Z"]


def _corpus(catalog: Catalog) -> tuple[list[bytes], dict[int, str]]:
    """The records, and which of them the gate is stricter about than the parser (by index):
    valid records that do not move the watermark, on purpose (they are processed as usual)."""
    docs: list[Any] = []
    stricter: dict[int, str] = {}
    for i, event_type in enumerate(catalog.event_types):
        base = _valid(catalog, event_type, i)
        docs.append(base)
        for name, spec in catalog.events[event_type].properties.items():
            docs.append(_props(base, **{name: _DROP}))
            docs += [_props(base, **{name: w}) for w in WRONG]
            if spec.values:
                docs.append(_props(base, **{name: "not-allowed"}))
        docs += [
            _props(base, undeclared={"deep": [1, 2]}),
            _with(base, properties=_DROP),
            _with(base, properties=None),
            _with(base, properties=[]),
            _with(base, properties={}),
            _with(base, extra_top_level=[1]),
        ]
    base = _valid(catalog, catalog.event_types[0])
    for key in ("event_id", "customer_id", "event_type", "event_time"):
        docs.append(_with(base, **{key: _DROP}))
        docs += [_with(base, **{key: w}) for w in WRONG if w != base[key]]
    for blank in ["", " ", "\t", "\u00a0", "\u3000", "\u2007", "\x1c", "\x85", "\u2028", " \u200a "]:
        docs.append(_with(base, event_id=blank))
        docs.append(_with(base, customer_id=blank))
    docs += [
        _with(base, event_id="a" * MAX_ID_LENGTH),
        _with(base, event_id="a" * (MAX_ID_LENGTH + 1)),
        _with(base, customer_id="\U0001f600" * MAX_ID_LENGTH),  # 256 code points, 512 UTF-16 units
        _with(base, customer_id="\U0001f600" * (MAX_ID_LENGTH + 1)),
        _with(base, customer_id="\u200b"),  # not a space to Python
        _with(base, event_type="undeclared_type"),
        _with(base, event_type=catalog.event_types[0].upper()),
    ]
    now = int(time.time() * 1000)
    for event_time in [
        "2026-01-01T11:00:00+01:00",
        "2026-01-01T10:00:00Z",
        "2026-01-01T10:00:00.123456+05:45",
        "2026-01-01T10:00:00.5-00:30",
        "2026-01-01T10:00:00",  # no offset
        "2026-01-01 10:00:00Z",
        "garbage",
        "0000-01-01T00:00:00Z",
        "1999-12-31T23:59:59.999Z",  # before events.earliest_event_time
        946_684_799_999,
        946_684_800_000,
        -5,
        now + 2 * DAY,  # beyond events.max_future
        32_503_680_000_000,
        2**70,
        1.5e12,
    ]:
        if event_time == "2026-01-01 10:00:00Z":
            stricter[len(docs)] = "an ISO-8601 form Java's OffsetDateTime does not read"
        if event_time == 1.5e12:
            stricter[len(docs)] = "epoch milliseconds written as a float"
        docs.append(_with(base, event_time=event_time))
    raw = [d if isinstance(d, bytes) else json.dumps(d, ensure_ascii=False).encode() for d in docs]
    text = json.dumps(base)
    raw += [
        text.encode() + b" garbage",
        text.encode() + b" {}",
        text.encode() + b"\n ",
        b"\xef\xbb\xbf" + text.encode(),  # a BOM
        text.replace('"c-0"', '"c-\xc3\x28"').encode("latin-1"),  # not UTF-8
        text.encode().replace(b'"c-0"', b'"c-\xed\xa0\x80"'),  # a surrogate, encoded
        text.encode().replace(b'"c-0"', b'"c-\xc0\xaf"'),  # overlong
        text.encode()[:-1],
        text.replace('"properties"', '"properties": NaN, "x"').encode(),
    ]
    stricter[len(raw)] = "nested deeper than EventGate.MAX_DEPTH (Python's json reads up to about 1000)"
    raw += [
        text.replace('"properties"', '"deep": ' + "[" * 300 + "]" * 300 + ', "properties"').encode(),
        text.replace('"properties"', '"deep": ' + "[" * 50 + "]" * 50 + ', "properties"').encode(),
        text.replace("}}", "}, " + '"pad": "' + "x" * LIMITS.max_bytes + '"}').encode(),
        # the last of two wins, in both
        text.replace('"event_type"', '"event_type": "undeclared", "event_type"').encode(),
        text.replace('"event_type"', f'"event_type": "{catalog.event_types[0]}", "event_type": "nope", "x"').encode(),
        b"[]",
        b"",
        b"null",
        b"not json",
    ]
    return raw, stricter


def _gate_times(records: list[bytes], spec: str) -> list[int]:
    from pyflink.table import DataTypes, EnvironmentSettings, TableEnvironment

    t_env = TableEnvironment.create(EnvironmentSettings.in_batch_mode())
    t_env.get_config().set("pipeline.jars", ensure_jar().as_uri())
    t_env.get_config().set("parallelism.default", "1")
    register_event_time_function(t_env)
    table = t_env.from_elements(
        [(i, bytearray(r)) for i, r in enumerate(records)],
        DataTypes.ROW([DataTypes.FIELD("i", DataTypes.INT()), DataTypes.FIELD("v", DataTypes.BYTES())]),
    )
    t_env.create_temporary_view("records", table)
    result = t_env.execute_sql(f"SELECT i, {event_time_sql('v', spec)} FROM records")
    with result.collect() as it:
        return [t for _, t in sorted(tuple(row) for row in it)]


@pytest.mark.parametrize("catalog_file", [SHOP, TEAM], ids=["shipped", "team"])
def test_the_gate_passes_only_what_the_parser_accepts(catalog_file: Path):
    catalog = load_catalog(catalog_file)
    schema = EventSchema(catalog)
    records, stricter = _corpus(catalog)
    gate = _gate_times(records, gate_spec(schema, LIMITS))
    now = int(time.time() * 1000)
    parsed = [parse_event(r, now_ms=now, schema=schema, limits=LIMITS) for r in records]

    laxer = [(r[:160], p.reason) for r, p, g in zip(records, parsed, gate) if g and isinstance(p, Invalid)]
    assert laxer == [], "the gate passed records the parser rejects"
    wrong_time = [(r[:160], p.event_time, g) for r, p, g in zip(records, parsed, gate) if g and p.event_time != g]
    assert wrong_time == []

    held_back = [
        (r[:160], stricter.get(i))
        for i, (r, p, g) in enumerate(zip(records, parsed, gate))
        if not g and not isinstance(p, Invalid)
    ]
    assert [r for r, why in held_back if why is None] == [], "the gate holds back valid records it should pass"
    assert len(held_back) == len(stricter), "a record listed as held back on purpose moved the watermark"
    passed = sum(1 for g in gate if g)
    rejected = sum(1 for p in parsed if isinstance(p, Invalid))
    # The corpus is mostly broken records, and the valid ones all count.
    assert passed >= len(catalog.event_types) * 3 and rejected > len(records) // 2
    assert passed + len(held_back) + rejected == len(records)
