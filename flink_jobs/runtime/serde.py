"""Wire formats of the job: incoming events, and the records it writes to Kafka.

Incoming events are JSON objects (the Kafka key is the customer id)::

    {"event_id": "e-1", "customer_id": "c-42", "event_type": "product_view",
     "event_time": "2026-11-22T10:00:00Z",            # or epoch milliseconds: 1795341600000
     "properties": {"product_id": "p-1", "price": 19.9}}

``parse_event`` turns raw bytes into an ``Event`` or an ``Invalid`` with a reason a person can
act on; it never raises on bad input. It validates with the JSON Schema ``event_schema(catalog)``
derives from the event catalogue that travels with the rules (``EventSchema`` compiles it once per
catalogue); ``segments schema rules/`` prints it for producers.

Choices a producer may notice: properties the catalogue does not declare for the event type are
dropped (no rule can use them), a ``null`` property is the same as a missing one, timestamps
(``event_time`` and timestamp-typed properties) are ISO-8601 with a UTC offset or epoch
milliseconds, other top-level fields are ignored, and integers beyond 64 bits are read as
floating-point numbers (as most JSON readers do).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Mapping

import fastjsonschema
import orjson

from ..core.catalog import Catalog, PropertySpec
from ..core.durations import DAY, format_duration
from ..core.model import Change, Event, PropertyValue

SCHEMA_ID = "https://flink-segments.invalid/schemas/event.schema.json"
MAX_ID_LENGTH = 256
EARLIEST_EVENT_TIME = 946_684_800_000  # 2000-01-01T00:00:00Z: the default; before, a broken clock
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MS = timedelta(milliseconds=1)

_JSON_TYPES: Mapping[str, list[str]] = {
    "string": ["string", "null"],
    "number": ["number", "null"],
    "bool": ["boolean", "null"],
    "timestamp": ["integer", "string", "null"],
}


# The exact types of the values the schema's types accept, among those JSON parsing makes; a value
# of another type (a float where an integer is expected: the schema takes 3.0) is left to the
# validators. bool is not int here: type(True) is bool.
_NONE = type(None)
_SURE_TYPES: Mapping[str, frozenset[type]] = {
    "string": frozenset((str, _NONE)),
    "number": frozenset((int, float, _NONE)),
    "bool": frozenset((bool, _NONE)),
    "timestamp": frozenset((int, str, _NONE)),
}
_TIMESTAMP_TYPES = frozenset((int, str))


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """What ``parse_event`` accepts beyond the schema (the job fills these from its config)."""

    max_bytes: int = 64 * 1024
    max_future: int = DAY  # how far ahead of ingestion an event time may be, in ms
    earliest: int = EARLIEST_EVENT_TIME  # the earliest event time accepted, epoch ms (old history needs earlier)


@dataclass(frozen=True, slots=True)
class Invalid:
    """A record that is not a valid event. ``code`` is short and stable (for counting);
    ``reason`` says what is wrong and where, for whoever reads the dead-letter topic."""

    code: str  # oversized | encoding | not_json | not_object | schema | event_time | property
    reason: str


# ---- the schema ---------------------------------------------------------------------------------


def _id_schema(what: str) -> dict[str, Any]:
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_ID_LENGTH,
        "pattern": r"\S",
        "description": f"{what}; not empty, not only blanks",
    }


def _property_schema(spec: PropertySpec) -> dict[str, Any]:
    out: dict[str, Any] = {"type": _JSON_TYPES[spec.type]}
    if spec.values and spec.type != "timestamp":  # timestamps are compared once read, as epoch ms
        out["enum"] = [*spec.values, None]
    return out


def event_schema(catalog: Catalog) -> dict[str, Any]:
    """The JSON Schema (draft-07) of an incoming event, generated from the event catalogue."""
    by_type = []
    for event_type, declared in catalog.events.items():
        properties: dict[str, Any] = {
            "type": "object",
            "properties": {name: _property_schema(spec) for name, spec in declared.properties.items()},
        }
        then: dict[str, Any] = {"properties": {"properties": properties}}
        required = [name for name, spec in declared.properties.items() if spec.required]
        if required:
            properties["required"] = required
            then["required"] = ["properties"]
        by_type.append({"if": {"properties": {"event_type": {"const": event_type}}}, "then": then})
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": SCHEMA_ID,
        "title": "Customer event",
        "description": (
            "One customer event as produced to the events topic (key = customer_id). Generated from "
            f"the event catalogue ({catalog.version}) by `segments schema`; edit the catalogue, not this. "
            "Timestamps are ISO-8601 with a UTC offset or epoch milliseconds. Properties not declared "
            "for the event type are ignored; null means absent."
        ),
        "type": "object",
        "required": ["event_id", "customer_id", "event_type", "event_time"],
        "properties": {
            "event_id": _id_schema("unique id of the event, for deduplication"),
            "customer_id": _id_schema("the customer the event belongs to"),
            "event_type": {"enum": list(catalog.event_types)},
            "event_time": {
                "type": ["integer", "string"],
                "description": "when it happened: ISO-8601 with offset, or epoch milliseconds",
            },
            "properties": {"type": "object"},
        },
        "allOf": by_type,
    }


def schema_text(catalog: Catalog) -> str:
    return json.dumps(event_schema(catalog), indent=2) + "\n"


class EventSchema:
    """A catalogue's events as ``parse_event`` checks them: the JSON Schema compiled as a top-level
    validator and one per event type (the same verdicts as the whole schema, whose ``allOf``
    branches are each ``if event_type == X then ...``; about 4x faster, and the job validates every
    record), and each type's declared and required properties."""

    __slots__ = ("catalog", "schema", "_top", "_by_type", "declared", "required", "_sure")

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.schema = event_schema(catalog)
        self._top = fastjsonschema.compile({k: v for k, v in self.schema.items() if k != "allOf"})
        self._by_type: dict[str, Callable[[Any], Any]] = {}
        for branch in self.schema["allOf"]:
            event_type = branch["if"]["properties"]["event_type"]["const"]
            self._by_type[event_type] = fastjsonschema.compile(branch["then"])
        self.declared = {t: catalog.property_types(t) for t in catalog.event_types}
        self.required = {
            t: tuple(name for name, spec in e.properties.items() if spec.required) for t, e in catalog.events.items()
        }
        # Per event type, what ``surely_valid`` checks: each declared property's exact Python
        # types (as orjson and json make them) and its values when the catalogue lists them.
        self._sure: dict[str, tuple[dict[str, tuple[frozenset[type], frozenset[Any] | None]], tuple[str, ...]]] = {
            t: (
                {
                    name: (
                        _SURE_TYPES[spec.type],
                        frozenset(spec.values) if spec.values and spec.type != "timestamp" else None,
                    )
                    for name, spec in e.properties.items()
                },
                self.required[t],
            )
            for t, e in catalog.events.items()
        }

    def surely_valid(self, data: dict[str, Any]) -> bool:
        """True only for a record the schema accepts, checked on the exact types JSON parsing
        makes, in a fraction of the validators' time; False when unsure (the validators then
        decide, and say why). The commonest record, a valid one, takes only this; the property
        test in tests/unit/runtime/test_serde.py holds it to the validators' verdicts."""
        event_type = data.get("event_type")
        if type(event_type) is not str:
            return False
        sure = self._sure.get(event_type)
        if sure is None:
            return False
        for field in ("event_id", "customer_id"):
            value = data.get(field)
            if type(value) is not str or not 0 < len(value) <= MAX_ID_LENGTH or value.isspace():
                return False  # isspace(): what the pattern \S refuses, character for character
        if type(data.get("event_time")) not in _TIMESTAMP_TYPES:
            return False
        declared, required = sure
        if "properties" not in data:
            return not required
        given = data["properties"]
        if type(given) is not dict:
            return False
        for name in required:
            if name not in given:
                return False
        for name, value in given.items():
            spec = declared.get(name)
            if spec is None:
                continue  # not declared: ignored
            types, values = spec
            if type(value) not in types:
                return False
            if values is not None and value is not None and value not in values:
                return False
        return True


def gate_spec(schema: EventSchema, limits: ParseLimits) -> str:
    """The catalogue and limits as the JVM's event gate reads them (``flink/jvm/EventGate.java``):
    what ``parse_event`` checks, so that the source lets only records it will accept move event
    time. JSON text, compact (it travels in the job's SQL)."""
    return json.dumps(gate_spec_data(schema, limits), separators=(",", ":"), sort_keys=True)


def gate_spec_data(schema: EventSchema, limits: ParseLimits) -> dict[str, Any]:
    """``gate_spec`` as data."""
    types: dict[str, Any] = {}
    for event_type, declared in schema.catalog.events.items():
        properties: dict[str, Any] = {}
        for name, prop in declared.properties.items():
            values = list(prop.values) if prop.values and prop.type != "timestamp" else None
            properties[name] = {"type": prop.type, "values": values}
        types[event_type] = {"required": list(schema.required[event_type]), "properties": properties}
    return {
        "max_bytes": limits.max_bytes,
        "max_future_ms": limits.max_future,
        "earliest_ms": limits.earliest,
        "max_id_length": MAX_ID_LENGTH,
        "types": types,
    }


# ---- parsing --------------------------------------------------------------------------------------


def parse_event(
    raw: bytes | str | None,
    *,
    now_ms: int,
    schema: EventSchema,
    limits: ParseLimits = ParseLimits(),
    ingest_ms: int | None = None,
) -> Event | Invalid:
    """Parse and validate one record, its bytes or its text when already decoded from UTF-8,
    against the catalogue of ``schema``. ``now_ms``: the time now (future-time check);
    ``ingest_ms``: when the record entered the system (its Kafka timestamp; ``Event.ingest_time``),
    ``now_ms`` if not given. Never raises on bad input."""
    if raw is None:
        return Invalid("not_json", "empty record (no value)")
    if isinstance(raw, str):
        text = raw
        # A character is 1 to 4 bytes: encode only when the text could be over the limit.
        size = len(text) if 4 * len(text) <= limits.max_bytes else len(text.encode("utf-8"))
    else:
        size = len(raw)
    if size > limits.max_bytes:
        return Invalid("oversized", f"record is {size} bytes, more than the limit of {limits.max_bytes} bytes")
    # orjson reads bytes (checking UTF-8 on the way) several times faster than the standard
    # library reads text. Whatever it refuses, json gets, for the reason (and for what orjson is
    # stricter about than earlier versions were: NaN and Infinity, lone surrogates, depth).
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        if not isinstance(raw, str):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return Invalid("encoding", f"not UTF-8 text: {exc.reason} at byte {exc.start}")
        try:
            data = json.loads(text)
        except ValueError as exc:
            if not text.strip():
                return Invalid("not_json", "empty record")
            return Invalid("not_json", f"not JSON: {getattr(exc, 'msg', exc)} at line {getattr(exc, 'lineno', '?')} column {getattr(exc, 'colno', '?')}")
        except RecursionError:
            return Invalid("not_json", "not JSON: nested too deeply")
    if not isinstance(data, dict):
        return Invalid("not_object", f"expected a JSON object, got {_json_kind(data)}")
    if not schema.surely_valid(data):
        invalid = _validate(data, schema)
        if invalid is not None:
            return invalid
    try:
        event_time = _timestamp(data["event_time"])
    except ValueError as exc:
        return Invalid("event_time", f"event_time: {exc}")
    problem = _event_time_problem(event_time, now_ms, limits)
    if problem is not None:
        return Invalid("event_time", problem)
    event_type = data["event_type"]
    declared = schema.declared[event_type]
    props: dict[str, PropertyValue] = {}
    given = data.get("properties")
    if given:
        for name, value in given.items():
            kind = declared.get(name)
            if kind is None or value is None:
                continue
            if kind == "timestamp":
                try:
                    value = _timestamp(value)
                except ValueError as exc:
                    return Invalid("property", f"properties.{name}: {exc}")
            elif kind == "number" and isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
                value = int(value)
            props[name] = value
    return Event(data["event_id"], data["customer_id"], event_type, event_time, props, now_ms if ingest_ms is None else ingest_ms)


def _validate(data: dict[str, Any], schema: EventSchema) -> Invalid | None:
    """The validators' verdict on a record, and why it is invalid (None: valid)."""
    try:
        schema._top(data)
    except fastjsonschema.JsonSchemaValueException as exc:
        return Invalid("schema", _schema_reason(exc, data, schema))
    try:
        schema._by_type[data["event_type"]](data)
    except fastjsonschema.JsonSchemaValueException as exc:
        if exc.rule == "required":
            return Invalid("schema", _missing_properties(data, schema))
        return Invalid("schema", _schema_reason(exc, data, schema))
    return None


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return "null"


def _missing_properties(data: dict[str, Any], schema: EventSchema) -> str:
    event_type = data["event_type"]
    given = data.get("properties") or {}
    missing = [name for name in schema.required[event_type] if given.get(name) is None]
    return f"{event_type} is missing required propert{'ies' if len(missing) > 1 else 'y'}: {', '.join(missing)}"


def _schema_reason(exc: fastjsonschema.JsonSchemaValueException, data: dict[str, Any], schema: EventSchema) -> str:
    path = ".".join(str(p) for p in (exc.path or [])[1:])
    rule = exc.rule
    if rule == "required":
        missing = [k for k in ("event_id", "customer_id", "event_type", "event_time") if k not in data]
        return f"missing required field{'s' if len(missing) > 1 else ''}: {', '.join(missing)}"
    if path == "event_type" and rule == "enum":
        return (
            f"unknown event_type {data.get('event_type')!r}; expected one of: {', '.join(schema.catalog.event_types)}"
        )
    if path in ("event_id", "customer_id") and rule in ("minLength", "pattern"):
        return f"{path} is empty"
    if path in ("event_id", "customer_id") and rule == "maxLength":
        return f"{path} is longer than {MAX_ID_LENGTH} characters"
    value = _at(data, (exc.path or [])[1:])
    message = exc.message.replace("data.", "", 1) if exc.message.startswith("data.") else exc.message
    return f"{message} (got {_json_kind(value) if not isinstance(value, dict) else 'an object'}: {_clip(value)})"


def _at(data: object, path: list) -> object:
    for part in path:
        if isinstance(data, dict):
            data = data.get(part)
        else:
            return None
    return data


def _clip(value: object, limit: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _timestamp(value: object) -> int:
    """Epoch ms from epoch ms (an integer) or ISO-8601 text with a UTC offset."""
    if isinstance(value, bool):
        raise ValueError(f"expected a timestamp, got {value!r}")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"epoch milliseconds must be a whole number, got {value!r}")
        value = int(value)
    if isinstance(value, int):
        if abs(value) > 253_402_300_799_999:  # 9999-12-31
            raise ValueError(f"{value} is not a usable epoch-milliseconds time")
        return value
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(
                f"{_clip(value)} is not an ISO-8601 time; write e.g. 2026-11-22T10:00:00Z or epoch milliseconds"
            ) from None
        if parsed.tzinfo is None:
            raise ValueError(f"{_clip(value)} has no UTC offset; add Z or +hh:mm (a time without one is ambiguous)")
        return (parsed - _EPOCH) // _MS
    raise ValueError(f"expected a timestamp, got {_json_kind(value)}")


def _event_time_problem(event_time: int, now_ms: int, limits: ParseLimits) -> str | None:
    if event_time < limits.earliest:
        hint = " (looks like seconds since the epoch; send milliseconds)" if 0 < event_time < 10**11 else ""
        earliest = format_time(limits.earliest)
        shown = earliest[:10] if earliest.endswith("T00:00:00.000Z") else earliest
        return f"event_time {format_time(event_time)} is before {shown}{hint}"
    if event_time > now_ms + limits.max_future:
        return (
            f"event_time {format_time(event_time)} is more than {format_duration(limits.max_future)} "
            f"ahead of ingestion time {format_time(now_ms)}"
        )
    return None


def format_time(ms: int) -> str:
    """ISO-8601 UTC with milliseconds, e.g. 2026-11-22T10:00:00.000Z."""
    try:
        return (_EPOCH + ms * _MS).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    except (OverflowError, ValueError):
        return str(ms)


# ---- records the job writes -------------------------------------------------------------------------


def encode_change(change: Change, model_versions: Mapping[str, str] | None = None) -> str:
    """The JSON value of a ``segment-changes`` record (key: customer_id), with the model scores the
    change was decided with, for activation systems to rank by, and the versions of the models
    that gave them (``model_versions``: those in use)."""
    out: dict[str, Any] = {
        "customer_id": change.customer_id,
        "segment": change.segment_id,
        "kind": change.kind,
        "event_time": change.event_time,
        "event_time_iso": format_time(change.event_time),
        "rule_version": change.rule_version,
        "reason": change.reason,
    }
    if change.scores:
        out["scores"] = dict(change.scores)
        if model_versions:
            out["model_versions"] = dict(model_versions)
    return json.dumps(out, ensure_ascii=False)


def event_to_json(event: Event) -> dict[str, Any]:
    """An event in the input format (timestamps as epoch ms): parsing it again gives the event."""
    return {
        "event_id": event.event_id,
        "customer_id": event.customer_id,
        "event_type": event.event_type,
        "event_time": event.event_time,
        "properties": dict(event.properties),
    }


def encode_late(event: Event, *, clock: int, allowed_lateness: int) -> str:
    """The JSON value of an ``events.late`` record: the event and why it was not applied."""
    behind = clock - event.event_time
    return json.dumps(
        {
            "reason": (
                f"late: event_time {format_time(event.event_time)} is {format_duration(behind) if behind else '0s'} "
                f"behind the customer's processed time {format_time(clock)}, beyond the allowed lateness "
                f"of {format_duration(allowed_lateness) if allowed_lateness else '0s'}"
            ),
            "late_by_ms": behind,
            "customer_clock": clock,
            "event": event_to_json(event),
        },
        ensure_ascii=False,
    )


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """Where a record came from, for the dead-letter topic."""

    topic: str | None
    partition: int | None
    offset: int | None
    timestamp: int | None  # Kafka record timestamp, epoch ms
    key: bytes | None


def encode_dlq(invalid: Invalid, raw: bytes | None, source: SourceRecord, *, max_payload_bytes: int) -> str:
    """The JSON value of an ``events.dlq`` record: reason, source position and the original bytes
    (as text when they are UTF-8, else base64; cut to ``max_payload_bytes`` so that an oversized
    record cannot make the dead-letter write itself fail)."""
    payload = raw or b""
    truncated = len(payload) > max_payload_bytes
    if truncated:
        payload = payload[:max_payload_bytes]
    out: dict[str, Any] = {
        "reason": invalid.reason,
        "code": invalid.code,
        "source": {
            "topic": source.topic,
            "partition": source.partition,
            "offset": source.offset,
            "timestamp": source.timestamp,
            "key": _text_or_b64(source.key)[0] if source.key is not None else None,
        },
        "payload_size": len(raw or b""),
    }
    text, encoding = _text_or_b64(payload, allow_cut_char=truncated)
    out["payload" if encoding == "utf-8" else "payload_base64"] = text
    if truncated:
        out["payload_truncated"] = True
    return json.dumps(out, ensure_ascii=False)


def _text_or_b64(data: bytes, *, allow_cut_char: bool = False) -> tuple[str, str]:
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as exc:
        # A cut can split the last character; that alone should not force base64.
        if allow_cut_char and exc.start >= len(data) - 3 and exc.reason == "unexpected end of data":
            return data[: exc.start].decode("utf-8"), "utf-8"
        return base64.b64encode(data).decode("ascii"), "base64"
