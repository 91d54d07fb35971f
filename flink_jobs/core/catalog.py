"""The event catalogue: which event types exist and the type of each property.

Rules are checked against it (unknown event types and properties are errors with a suggestion)
and the job's JSON Schema for incoming events is generated from it, so the two cannot disagree.
"""

from __future__ import annotations

from typing import Literal, Mapping

PropertyType = Literal["string", "number", "bool", "timestamp"]

# Properties any event may carry.
COMMON_PROPERTIES: Mapping[str, PropertyType] = {
    "session_id": "string",
    "device": "string",
    "channel": "string",
}

PROFILE_FIELDS: Mapping[str, PropertyType] = {
    "email_opt_in": "bool",
    "country": "string",
    "city": "string",
    "tier": "string",
    "language": "string",
    "age": "number",
    "signup_at": "timestamp",
}

EVENT_TYPES: Mapping[str, Mapping[str, PropertyType]] = {
    "page_view": {**COMMON_PROPERTIES, "url": "string", "page_type": "string", "referrer": "string"},
    "product_view": {
        **COMMON_PROPERTIES,
        "product_id": "string",
        "category": "string",
        "price": "number",
    },
    "cart_add": {
        **COMMON_PROPERTIES,
        "cart_id": "string",
        "product_id": "string",
        "category": "string",
        "price": "number",
        "quantity": "number",
        "cart_value": "number",
    },
    "cart_remove": {
        **COMMON_PROPERTIES,
        "cart_id": "string",
        "product_id": "string",
        "cart_value": "number",
    },
    "checkout": {**COMMON_PROPERTIES, "cart_id": "string", "cart_value": "number"},
    "purchase": {
        **COMMON_PROPERTIES,
        "order_id": "string",
        "cart_id": "string",
        "revenue": "number",
        "items": "number",
    },
    "session_start": {**COMMON_PROPERTIES},
    # Profile updates: the latest value of each field is kept per customer.
    "identify": {**COMMON_PROPERTIES, **PROFILE_FIELDS},
}

# Events that count as activity for sessions (a profile update is not a visit).
SESSION_EVENT_TYPES: frozenset[str] = frozenset(t for t in EVENT_TYPES if t != "identify")

# Purchases drive recency / frequency / monetary value.
PURCHASE_EVENT = "purchase"
REVENUE_PROPERTY = "revenue"


def property_type(event_types: tuple[str, ...], prop: str) -> PropertyType | None:
    """The property's type if every one of the event types declares it with one type, else None."""
    found: set[str] = set()
    for event_type in event_types:
        declared = EVENT_TYPES.get(event_type, {}).get(prop)
        if declared is None:
            return None
        found.add(declared)
    return found.pop() if len(found) == 1 else None  # type: ignore[return-value]


def numeric_properties(event_type: str) -> tuple[str, ...]:
    """Numeric properties of an event type, in catalogue order."""
    return tuple(p for p, t in EVENT_TYPES.get(event_type, {}).items() if t == "number")

# Model outputs rules may test with ``score:``; the ML models publish these names
# (model_artifacts/README.md says what each means). ``event_rate_z`` is the outlier guard's robust
# z-score of the customer's recent event rate against the reference population.
KNOWN_SCORES: tuple[str, ...] = ("purchase_propensity", "anomaly_score", "customer_cluster", "event_rate_z")
