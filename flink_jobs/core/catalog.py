"""The event catalogue (the tracking plan): which events a company sends, the properties and types
of each, the customer's profile fields, the model scores rules may test, and the roles the engine
needs (which event is a purchase and which of its properties is the revenue, which events count
as activity for sessions, which update the profile).

It is data its users own: ``catalog.yaml`` beside the rule files (``rules/catalog.yaml`` is the
shipped example), read by ``core/loader`` with located diagnostics, and it travels with the rules
(``RuleSet.catalog``). Everything about events is derived from it: the checks of the rules, the
JSON Schema the job validates events with (``runtime/serde.py``), and the models' inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping, Union

Value = Union[str, int, float, bool]  # a property's value (timestamps as epoch ms)

PropertyType = Literal["string", "number", "bool", "timestamp"]
PROPERTY_TYPES: tuple[PropertyType, ...] = ("string", "number", "bool", "timestamp")
# Roles an event type can have for the shipped models' behaviour inputs (``model_inputs``).
MODEL_ROLES: tuple[str, ...] = ("page_view", "product_view", "session_start")


@dataclass(frozen=True, slots=True)
class PropertySpec:
    """A declared property: its type, whether every event of the type must carry it, and the
    values it may take (empty: any of its type)."""

    type: PropertyType
    required: bool = False
    values: tuple[Value, ...] = ()


@dataclass(frozen=True, slots=True)
class EventType:
    """A declared event type; ``properties`` are all it may carry (the common ones included)."""

    name: str
    properties: Mapping[str, PropertySpec]
    description: str = ""
    updates_profile: bool = False  # its profile-field properties set the customer's profile
    activity: bool = True  # counts as activity: starts or extends a session


@dataclass(frozen=True)
class Catalog:
    """One company's events. ``version`` changes whenever the catalogue's text does."""

    events: Mapping[str, EventType]
    profile_fields: Mapping[str, PropertyType] = field(default_factory=dict)
    scores: tuple[str, ...] = ()
    purchase_event: str | None = None  # the event RFM conditions and the value inputs read
    revenue_property: str | None = None  # its number property that is the money spent
    roles: Mapping[str, str] = field(default_factory=dict)  # MODEL_ROLES -> event type
    version: str = ""
    file: str = ""  # where it was read from, for messages that send the reader there

    def declared_in(self) -> str:
        """`` in <file>`` for messages, or nothing when the catalogue was not read from a file."""
        return f" in {self.file}" if self.file else ""

    @property
    def event_types(self) -> tuple[str, ...]:
        """The declared event types, in catalogue order."""
        return tuple(self.events)

    def property_types(self, event_type: str) -> Mapping[str, PropertyType]:
        """Property -> type of one event type (empty for an undeclared one)."""
        declared = self.events.get(event_type)
        return {} if declared is None else {name: spec.type for name, spec in declared.properties.items()}

    def property_type(self, event_types: tuple[str, ...], prop: str) -> PropertyType | None:
        """The property's type if every one of the event types declares it with one type, else None."""
        found: set[PropertyType] = set()
        for event_type in event_types:
            declared = self.events.get(event_type)
            spec = declared.properties.get(prop) if declared is not None else None
            if spec is None:
                return None
            found.add(spec.type)
        return found.pop() if len(found) == 1 else None

    def numeric_properties(self, event_type: str) -> tuple[str, ...]:
        """Number properties of an event type, in catalogue order."""
        return tuple(p for p, t in self.property_types(event_type).items() if t == "number")

    @property
    def activity_types(self) -> frozenset[str]:
        """Event types that count as activity for sessions."""
        return frozenset(name for name, event in self.events.items() if event.activity)

    @property
    def profile_types(self) -> frozenset[str]:
        """Event types whose properties update the customer's profile."""
        return frozenset(name for name, event in self.events.items() if event.updates_profile)


# Pickled rules reach the workers; compiled by mypyc these classes need it (see pickling.py).
from .pickling import register_dataclasses  # noqa: E402

register_dataclasses(globals(), __name__)
