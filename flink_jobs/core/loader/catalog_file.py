"""A catalogue file (``catalog.yaml`` beside the rule files) read into a ``Catalog``, every problem
located like a rule file's (file:line:col, the line, a help text).

    version: 1
    catalog:
      common_properties: {session_id: string}
      profile_fields: {country: string, age: number}
      events:
        purchase:
          description: An order was paid.
          properties:
            order_id: {type: string, required: true}
            revenue: number
        identify: {updates_profile: true, activity: false}
      roles:
        purchase: {event: purchase, revenue: revenue}
      scores: [purchase_propensity]

rules/README.md describes every key.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from typing import Mapping

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ..catalog import MODEL_ROLES, PROPERTY_TYPES, Catalog, EventType, PropertySpec, PropertyType, Value
from ..diagnostics import Diagnostic
from ..syntax import bounds
from ..syntax.help import KIND_WORDS, suggest, types_text, yaml_help
from ..syntax.nodes import Entry, epoch_ms, is_null, scalar, shape, text, word
from ..syntax.reader import YamlReader

SUPPORTED_VERSION = 1
CATALOG_KEY = "catalog"
_FILE_KEYS = ("version", CATALOG_KEY)
_CATALOG_KEYS = ("common_properties", "profile_fields", "events", "roles", "scores")
_EVENT_KEYS = ("description", "properties", "updates_profile", "activity")
_PROPERTY_KEYS = ("type", "required", "values")
_ROLE_KEYS = ("purchase", *MODEL_ROLES)
_PURCHASE_KEYS = ("event", "revenue")
# Names as producers send them and rules write them: letters, digits, _ . : - (no blanks).
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:\-]*$")
_SCORE = re.compile(r"^[a-z][a-z0-9_]*$")
# What people write for a type, and what it is here.
_TYPE_SYNONYMS: Mapping[str, PropertyType] = {
    "str": "string",
    "text": "string",
    "int": "number",
    "integer": "number",
    "float": "number",
    "double": "number",
    "decimal": "number",
    "boolean": "bool",
    "date": "timestamp",
    "datetime": "timestamp",
    "time": "timestamp",
}


def catalog_version(text: str) -> str:
    """``cat-`` and 12 hex digits of a SHA-256 over the catalogue's text."""
    return "cat-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def is_catalog_text(text: str) -> bool:
    """Whether a file is a catalogue (its top level has ``catalog:``) rather than rules."""
    try:
        root = bounds.compose(text)
    except (yaml.YAMLError, bounds.BoundExceeded):
        return False  # read as a rule file, whose checker says what is wrong
    return isinstance(root, MappingNode) and any(
        isinstance(key, ScalarNode) and key.value == CATALOG_KEY for key, _ in root.value
    )


class CatalogChecker(YamlReader):
    """Reads one catalogue file: the ``Catalog`` (None when it has problems) and every problem."""

    def check(self) -> Catalog | None:
        try:
            root = bounds.compose(self.text)
        except bounds.BoundExceeded as exc:
            self.diagnostics.append(Diagnostic(exc.message, self.file, exc.line, exc.column, help=exc.help))
            return None
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            problem = exc.problem or exc.context or "unreadable YAML"
            line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            self.diagnostics.append(
                Diagnostic(
                    f"this is not valid YAML: {problem}", self.file, line, column, help=yaml_help(problem, exc.context)
                )
            )
            return None
        if root is None:
            self.diagnostics.append(
                Diagnostic(
                    "the catalogue file is empty",
                    self.file,
                    1,
                    1,
                    help="a catalogue starts with 'version: 1' followed by the event types under 'catalog:' and 'events:'",
                )
            )
            return None
        fields = self.mapping(
            root,
            "a catalogue file should hold 'version: 1' and 'catalog:'",
            help="start the file with 'version: 1' and put the events under 'catalog:'",
        )
        if fields is None:
            return None
        self.unknown_keys(fields, _FILE_KEYS, "at the top of the catalogue", "A catalogue file has")
        self.check_version(root, fields.get("version"), "catalogue files", SUPPORTED_VERSION)
        body = fields.get(CATALOG_KEY)
        if body is None:
            self.error(root, "missing 'catalog'", "put the event types under 'catalog:' and 'events:'")
            return None
        catalog = self._catalog(body)
        if catalog is None or self.diagnostics:
            return None
        return replace(catalog, version=catalog_version(self.text), file=self.file)

    # -- the catalogue --

    def _catalog(self, body: Entry) -> Catalog | None:
        fields = self.mapping(
            body.value,
            "'catalog' should be 'key: value' lines",
            help="e.g. 'catalog:' with 'events:' under it",
            anchor=body,
        )
        if fields is None:
            return None
        self.unknown_keys(fields, _CATALOG_KEYS, "in the catalogue", "A catalogue has")
        common = self._properties(fields.get("common_properties"), "common property")
        profile = {name: spec.type for name, spec in self._properties(fields.get("profile_fields"), "profile field").items()}
        events_entry = fields.get("events")
        if events_entry is None:
            self.error(body.key_node, "the catalogue declares no 'events'", "list the event types under 'events:'")
            return None
        events = self._events(events_entry, common, profile)
        if not events:
            return None
        catalog = Catalog(events=events, profile_fields=profile, scores=self._scores(fields.get("scores")))
        return self._roles(fields.get("roles"), catalog)

    def _events(
        self, entry: Entry, common: Mapping[str, PropertySpec], profile: Mapping[str, PropertyType]
    ) -> dict[str, EventType]:
        fields = self.mapping(
            entry.value,
            "'events' should be event types with their properties",
            help="e.g. 'events: {purchase: {properties: {revenue: number}}}'",
            anchor=entry,
        )
        if fields is None:
            return {}
        if not fields:
            self.error(entry.key_node, "'events' is empty", "declare at least one event type")
            return {}
        events: dict[str, EventType] = {}
        for event_entry in fields.values():
            if not self._name(event_entry.key_node, "an event type"):
                continue
            declared = self._event(event_entry, common, profile)
            if declared is not None:
                events[declared.name] = declared
        return events

    def _event(
        self, entry: Entry, common: Mapping[str, PropertySpec], profile: Mapping[str, PropertyType]
    ) -> EventType | None:
        if is_null(entry.value):
            return EventType(entry.key, dict(common))
        fields = self.mapping(
            entry.value,
            f"'{entry.key}' should be 'key: value' lines",
            help=f"e.g. '{entry.key}: {{properties: {{order_id: string}}}}', or nothing after '{entry.key}:'",
            anchor=entry,
        )
        if fields is None:
            return None
        self.unknown_keys(fields, _EVENT_KEYS, f"in event type '{entry.key}'", "An event type has")
        own = self._properties(fields.get("properties"), "property")
        updates_profile = self._flag(fields.get("updates_profile"), False)
        properties = dict(common)
        if updates_profile:
            properties.update((name, PropertySpec(kind)) for name, kind in profile.items())
        for name, spec in own.items():
            earlier = properties.get(name)
            if earlier is not None and earlier.type != spec.type:
                where = "a profile field" if name in profile and updates_profile else "a common property"
                node = fields["properties"].value
                key = next(k for k, _ in node.value if isinstance(k, ScalarNode) and k.value == name)
                self.error(
                    key,
                    f"'{name}' is {KIND_WORDS[spec.type]} here but {KIND_WORDS[earlier.type]} as {where}",
                    f"a property has one type on every event type; use another name, or type it {earlier.type}",
                )
                continue
            properties[name] = spec
        description = fields.get("description")
        return EventType(
            entry.key,
            properties,
            description=text(description.value) if description is not None and not is_null(description.value) else "",
            updates_profile=updates_profile,
            activity=self._flag(fields.get("activity"), not updates_profile),
        )

    def _properties(self, entry: Entry | None, noun: str) -> dict[str, PropertySpec]:
        """Name -> spec of a mapping of properties (``name: type`` or ``name: {type: ...}``)."""
        if entry is None or is_null(entry.value):
            return {}
        fields = self.mapping(
            entry.value,
            f"'{entry.key}' should be 'name: type' lines",
            help=f"e.g. '{entry.key}: {{country: string, age: number}}'",
            anchor=entry,
        )
        out: dict[str, PropertySpec] = {}
        for prop in (fields or {}).values():
            if not self._name(prop.key_node, f"a {noun}"):
                continue
            spec = self._spec(prop)
            if spec is not None:
                out[prop.key] = spec
        return out

    def _spec(self, entry: Entry) -> PropertySpec | None:
        node = entry.value
        if isinstance(node, ScalarNode) and not is_null(node):
            kind = self._type(node)
            return None if kind is None else PropertySpec(kind)
        fields = self.mapping(
            node,
            f"'{entry.key}' should be a type or 'type:', 'required:' and 'values:'",
            help=f"e.g. '{entry.key}: number' or '{entry.key}: {{type: string, required: true}}'",
            anchor=entry,
        )
        if fields is None:
            return None
        self.unknown_keys(fields, _PROPERTY_KEYS, f"in property '{entry.key}'", "A property has")
        type_entry = fields.get("type")
        if type_entry is None:
            self.error(entry.key_node, f"'{entry.key}' has no 'type'", f"add its type: {', '.join(PROPERTY_TYPES)}")
            return None
        kind = self._type(type_entry.value)
        if kind is None:
            return None
        values = self._values(fields.get("values"), kind)
        if values is None:
            return None
        return PropertySpec(kind, self._flag(fields.get("required"), False), values)

    def _type(self, node: Node) -> PropertyType | None:
        value = word(node)
        for kind in PROPERTY_TYPES:
            if value == kind:
                return kind
        if value is None:
            self.error(node, f"expected a type, found {shape(node)}", f"types: {', '.join(PROPERTY_TYPES)}")
            return None
        meant = _TYPE_SYNONYMS.get(value.lower())
        help = f"did you mean '{meant}'? Types: {', '.join(PROPERTY_TYPES)}" if meant else None
        self.error(node, f"unknown type '{value}'", help or suggest(value, PROPERTY_TYPES, "Types"))
        return None

    def _values(self, entry: Entry | None, kind: PropertyType) -> tuple[Value, ...] | None:
        """The allowed values of a property, typed like it (empty: any value)."""
        if entry is None:
            return ()
        if not isinstance(entry.value, SequenceNode) or not entry.value.value:
            self.error(
                self.at_value(entry),
                "'values' should be a list of the values the property may take",
                "e.g. 'values: [web, app, email]'",
            )
            return None
        out: list[Value] = []
        ok = True
        for item in entry.value.value:
            value = scalar(item)
            if kind == "timestamp" and isinstance(value, str):
                value = epoch_ms(value)
            fits = (
                (kind == "string" and isinstance(value, str))
                or (kind == "number" and isinstance(value, (int, float)) and not isinstance(value, bool))
                or (kind == "bool" and isinstance(value, bool))
                or (kind == "timestamp" and isinstance(value, int) and not isinstance(value, bool))
            )
            if not fits or value is None:
                self.error(item, f"'{text(item)}' is not {KIND_WORDS[kind]}", f"the property is {kind}: list {kind} values")
                ok = False
            else:
                out.append(value)
        return tuple(out) if ok else None

    def _flag(self, entry: Entry | None, default: bool) -> bool:
        if entry is None:
            return default
        value = scalar(entry.value)
        if isinstance(value, bool):
            return value
        self.error(self.at_value(entry), f"'{entry.key}' is true or false, not {shape(entry.value)}", "write true or false")
        return default

    def _name(self, node: ScalarNode, what: str) -> bool:
        if _NAME.match(node.value):
            return True
        self.error(
            node,
            f"'{node.value}' is not usable as {what}",
            "use letters, digits and _ . : - (no blanks), as producers send it",
        )
        return False

    def _scores(self, entry: Entry | None) -> tuple[str, ...]:
        if entry is None or is_null(entry.value):
            return ()
        if not isinstance(entry.value, SequenceNode):
            self.error(self.at_value(entry), f"'scores' should be a list, not {shape(entry.value)}", "e.g. 'scores: [churn_risk]'")
            return ()
        names: list[str] = []
        for item in entry.value.value:
            name = word(item)
            if name is None or not _SCORE.match(name):
                self.error(
                    item,
                    f"'{text(item)}' is not a score name",
                    "a score is named like a segment id: lower-case letters, digits and _, e.g. churn_risk",
                )
            elif name not in names:
                names.append(name)
        return tuple(names)

    # -- roles --

    def _roles(self, entry: Entry | None, catalog: Catalog) -> Catalog | None:
        if entry is None or is_null(entry.value):
            return catalog
        fields = self.mapping(
            entry.value,
            "'roles' should be 'role: event type' lines",
            help="e.g. 'roles: {purchase: {event: purchase, revenue: revenue}}'",
            anchor=entry,
        )
        if fields is None:
            return None
        purchase_event = revenue = None
        roles: dict[str, str] = {}
        for role in fields.values():
            if role.key not in _ROLE_KEYS:
                self.unknown_key(role, _ROLE_KEYS, "in 'roles'", "Roles")
            elif role.key == "purchase":
                purchase_event, revenue = self._purchase(role, catalog)
            else:
                event_type = self._event_type(role.value, catalog, role.key)
                if event_type is not None:
                    roles[role.key] = event_type
        return Catalog(
            catalog.events,
            catalog.profile_fields,
            catalog.scores,
            purchase_event=purchase_event,
            revenue_property=revenue,
            roles=roles,
        )

    def _purchase(self, entry: Entry, catalog: Catalog) -> tuple[str | None, str | None]:
        fields = self.mapping(
            entry.value,
            "'purchase' should name its 'event' and 'revenue'",
            help="e.g. 'purchase: {event: purchase, revenue: revenue}'",
            anchor=entry,
        )
        if fields is None:
            return None, None
        self.unknown_keys(fields, _PURCHASE_KEYS, "in the purchase role", "The purchase role has")
        event_entry, revenue_entry = fields.get("event"), fields.get("revenue")
        if event_entry is None or revenue_entry is None:
            missing = "event" if event_entry is None else "revenue"
            self.error(entry.key_node, f"the purchase role needs '{missing}'", "e.g. 'purchase: {event: order_paid, revenue: amount}'")
            return None, None
        event_type = self._event_type(event_entry.value, catalog, "purchase")
        if event_type is None:
            return None, None
        revenue = word(revenue_entry.value)
        numbers = catalog.numeric_properties(event_type)
        if revenue is None or revenue not in numbers:
            shown = f"'{revenue}'" if revenue else "nothing"
            self.error(
                self.at_value(revenue_entry),
                f"{shown} is not a number property of {event_type}",
                suggest(revenue or "", numbers, f"Number properties of {event_type}")
                or f"declare the revenue as a number property of {event_type}",
            )
            return None, None
        return event_type, revenue

    def _event_type(self, node: Node, catalog: Catalog, role: str) -> str | None:
        name = word(node)
        if name is not None and name in catalog.events:
            return name
        shown = f"'{name}'" if name else "nothing"
        self.error(
            node,
            f"the {role} role names {shown}, which is not a declared event type",
            suggest(name or "", catalog.event_types, "Event types") or f"declare it under 'events:' ({types_text(catalog.event_types)})",
        )
        return None
