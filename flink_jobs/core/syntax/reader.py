"""The readers of a rule file's pieces (event selectors, property filters, comparisons, durations
and windows) and of a catalogue file's, each checked where it is written.

``YamlReader`` collects every problem of its file as a ``Diagnostic`` (file, line, column, the
span to underline and a help text) instead of stopping at the first. ``RuleReader`` adds what
conditions are made of, against the event catalogue: the loader's ``FileChecker`` extends it with
the file's own structure (version, segments, which construct a condition is), and each
construct's ``check`` (``core/conditions``) reads its condition with its methods.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .. import windows
from ..catalog import Catalog, PropertyType
from ..diagnostics import Diagnostic
from ..durations import HOUR, parse_duration
from ..model import Comparison, Condition, EventSelector, PropertyFilter, Scalar, SourceRef
from .help import (
    KIND_WORDS,
    LIST_LIMIT,
    OPS_BY_TYPE,
    Subject,
    closest,
    common_properties,
    days,
    example_comparison,
    op,
    operator_help,
    suggest,
    types_text,
)
from .nodes import Entry, Place, epoch_ms, is_duration_text, is_null, is_number_text, scalar, shape, text, word

DEFAULT_KEEP = 24 * HOUR  # how long an absence or a sequence holds when 'keep' is not given
_SELECTOR_KEYS = ("event", "where")


@dataclass(frozen=True, slots=True)
class Ref:
    """A reference to another segment (``segment:`` or ``exclude``), where it was written."""

    target: str
    place: Place


@dataclass(frozen=True, slots=True)
class Cond:
    """One condition mapping being read: its construct entry and all its entries by key."""

    construct: Entry
    fields: dict[str, Entry]
    keys_ok: bool  # False: a key was wrong, so "missing ..." problems would only add noise
    source: SourceRef

    @property
    def name(self) -> str:
        return self.construct.key


class YamlReader:
    """Reads one YAML file's nodes; every problem goes to ``diagnostics``."""

    def __init__(self, file: str, text: str) -> None:
        self.file = file
        self.text = text
        self.lines = text.splitlines()
        self.diagnostics: list[Diagnostic] = []

    # -- positions and problems --

    def place(self, node: Node) -> Place:
        mark = node.start_mark
        return Place(self.file, mark.line + 1, mark.column + 1, self._span(node))

    def source(self, node: Node) -> SourceRef:
        mark = node.start_mark
        return SourceRef(self.file, mark.line + 1, mark.column + 1)

    def _span(self, node: Node) -> int:
        start, end = node.start_mark, node.end_mark
        if isinstance(node, MappingNode) and not node.flow_style and node.value:
            key, value = node.value[0]
            if value.end_mark.line == key.start_mark.line and not isinstance(value, MappingNode):
                return max(1, int(value.end_mark.column - key.start_mark.column))
            return self._span(key)
        if start.line == end.line:
            return max(1, end.column - start.column)
        line = self.lines[start.line] if start.line < len(self.lines) else ""
        return max(1, len(line.rstrip()) - start.column)

    def error(self, node: Node, message: str, help: str | None = None) -> None:
        self.diagnostics.append(self.place(node).diagnostic(message, help))

    def at_value(self, entry: Entry) -> Node:
        """The node to point at for a problem with an entry's value: the value when it is on the
        key's line and not empty, else the key."""
        value = entry.value
        if is_null(value) or value.start_mark.line != value.end_mark.line:
            return entry.key_node
        return value

    def check_version(self, root: Node, entry: Entry | None, files: str, supported: int) -> None:
        """The file's ``version:`` is ``supported``; ``files``: what the file is, for the message."""
        if entry is None:
            self.error(root, "missing 'version'", f"add 'version: {supported}' as the first line of the file")
            return
        value = scalar(entry.value)
        if type(value) is int and value == supported:
            return
        shown = "nothing" if value is None else f"'{text(entry.value)}'"
        self.error(
            self.at_value(entry),
            f"unsupported version {shown}",
            f"this engine reads {files} of version {supported}; write 'version: {supported}'",
        )

    # -- mappings and keys --

    def mapping(
        self,
        node: Node,
        wrong_shape: str,
        *,
        help: str | None,
        anchor: Entry | None = None,
    ) -> dict[str, Entry] | None:
        """The entries of a mapping by key (first one wins on duplicates, which are reported)."""
        if not isinstance(node, MappingNode):
            if anchor is not None and is_null(node):
                self.error(anchor.key_node, f"'{anchor.key}' is empty", help)
            else:
                where = node if anchor is None else self.at_value(anchor)
                self.error(where, f"{wrong_shape}, not {shape(node)}", help)
            return None
        fields: dict[str, Entry] = {}
        ok = True
        for key_node, value in node.value:
            if not isinstance(key_node, ScalarNode):
                self.error(key_node, "a key should be a plain word", "remove the brackets around the key")
                ok = False
                continue
            key = key_node.value
            first = fields.get(key)
            if first is not None:
                self.error(
                    key_node,
                    f"'{key}' appears twice",
                    f"it is first given on line {first.key_node.start_mark.line + 1}; remove one of them",
                )
                ok = False
                continue
            fields[key] = Entry(key, key_node, value)
        # Keys that are not plain words were reported; what is left can still be checked.
        return fields if fields or ok else None

    def unknown_key(
        self,
        entry: Entry,
        allowed: Sequence[str],
        where: str,
        label: str,
        limit: int = LIST_LIMIT,
    ) -> None:
        self.error(
            entry.key_node,
            f"unknown key '{entry.key}' {where}",
            suggest(entry.key, tuple(allowed), label, limit),
        )

    def unknown_keys(self, fields: dict[str, Entry], allowed: Sequence[str], where: str, label: str) -> bool:
        """Report every key of ``fields`` not in ``allowed``; True when there was none."""
        ok = True
        for entry in fields.values():
            if entry.key not in allowed:
                self.unknown_key(entry, allowed, where, label)
                ok = False
        return ok

    def choice(self, entry: Entry, choices: tuple[str, ...], noun: str, label: str, example: str) -> str | None:
        value = word(entry.value)
        if isinstance(value, str) and value in choices:
            return value
        if not isinstance(value, str) or not value:
            self.error(self.at_value(entry), f"'{entry.key}' needs the name of a {noun}", example)
        else:
            self.error(entry.value, f"unknown {noun} '{value}'", suggest(value, choices, label))
        return None

    # -- durations and windows --

    def duration(self, entry: Entry) -> int | None:
        if is_null(entry.value):
            self.error(
                entry.key_node,
                f"'{entry.key}' has no value",
                f"write a duration after '{entry.key}:', e.g. '{entry.key}: 10m'",
            )
            return None
        return self.duration_value(entry.value)

    def duration_value(self, node: Node, subject: str | None = None) -> int | None:
        if not isinstance(node, ScalarNode):
            self.error(node, f"expected a duration, found {shape(node)}", "e.g. 10m, 24h or 7d")
            return None
        raw = scalar(node)
        if isinstance(raw, int) and not isinstance(raw, bool) and raw > 0:
            # The usual slip: a plain number. Say which units would do.
            lead = f"{subject} is compared with a duration: write" if subject else "write"
            self.error(
                node,
                f"'{raw}' has no unit",
                f"{lead} a number followed by a unit (ms, s, m, h, d, w), e.g. {raw}m or {raw}d",
            )
            return None
        try:
            return parse_duration(node.value)
        except ValueError as exc:
            message, _, help = str(exc).partition("; ")
            self.error(node, message, help or None)
            return None


class RuleReader(YamlReader, ABC):
    """Reads the pieces conditions are made of, against the event catalogue."""

    def __init__(
        self, file: str, text: str, horizon: int, catalog: Catalog, known_scores: tuple[str, ...] | None = None
    ) -> None:
        super().__init__(file, text)
        self.horizon = horizon
        self.catalog = catalog
        self.known_scores = catalog.scores if known_scores is None else known_scores
        self.refs: list[Ref] = []  # the segment references of the segment being read

    @abstractmethod
    def condition(self, node: Node, owner: Entry) -> Condition | None:
        """The condition in ``node``, the value of ``owner`` (``when``, ``not``, a list item)."""

    def add_ref(self, target: str, node: Node) -> None:
        """The segment being read refers to segment ``target`` (written at ``node``)."""
        self.refs.append(Ref(target, self.place(node)))

    def required(self, c: Cond, key: str, help: str) -> Entry | None:
        entry = c.fields.get(key)
        if entry is None and c.keys_ok:
            self.error(c.construct.key_node, f"'{c.name}' needs '{key}'", help)
        return entry

    def combine(
        self,
        node: SequenceNode,
        owner: Entry,
        make: Callable[[tuple[Condition, ...], SourceRef], Condition],
        source: SourceRef,
    ) -> Condition | None:
        """The conditions of a list, combined by ``make`` (one condition alone is itself)."""
        if not node.value:
            self.error(
                owner.key_node,
                f"'{owner.key}' has no conditions",
                f"add at least one condition under '{owner.key}:', or remove it",
            )
            return None
        children = [self.condition(item, Entry(owner.key, owner.key_node, item)) for item in node.value]
        if any(c is None for c in children):
            return None
        if len(children) == 1:
            return children[0]
        return make(tuple(c for c in children if c is not None), source)

    # -- windows --

    def window(self, c: Cond, help: str) -> int | None:
        """The ``within`` of a sliding window: a whole number of its step, within the horizon."""
        entry = self.required(c, "within", f"add {help}" if not help.startswith("add ") else help)
        if entry is None:
            return None
        window = self.duration(entry)
        if window is None:
            return None
        problem = windows.window_problem(window, self.horizon)
        if problem is not None:
            shown = text(entry.value)
            message = (
                f"'{shown}' is too long for a window"
                if window > self.horizon
                else f"'{shown}' is not a valid window length"
            )
            self.error(entry.value, message, problem)
            return None
        return window

    def deadline(self, c: Cond, help: str) -> int | None:
        entry = self.required(c, "within", help)
        return None if entry is None else self.duration(entry)

    def keep(self, c: Cond) -> int | None:
        entry = c.fields.get("keep")
        return DEFAULT_KEEP if entry is None else self.duration(entry)

    def fits_horizon(self, c: Cond, within: int, extra: int, key: str, *, default_note: bool = True) -> bool:
        """State must outlive ``within`` plus ``keep`` (or ``gap``): both within the horizon."""
        if within + extra <= self.horizon:
            return True
        extra_entry = c.fields.get(key)
        within_entry = c.fields["within"]
        at = extra_entry if extra_entry is not None and within <= self.horizon else within_entry
        note = " (the default)" if extra_entry is None and default_note else ""
        self.error(
            at.value,
            f"'within' plus '{key}' is longer than the state horizon",
            f"within {days(within)} + {key} {days(extra)}{note} = "
            f"{days(within + extra)}, but rules can look back at most "
            f"{days(self.horizon)}; shorten within or {key}, "
            "or raise the horizon (job.horizon; --horizon for segments)",
        )
        return False

    def match_on(self, c: Cond, selectors: Sequence[EventSelector | None]) -> str | None | Literal[False]:
        """The ``match_on`` property (None when absent); False when it is wrong."""
        entry = c.fields.get("match_on")
        if entry is None:
            return None
        prop = word(entry.value)
        if not isinstance(prop, str) or not prop:
            self.error(
                self.at_value(entry),
                "'match_on' needs the name of a property",
                "e.g. 'match_on: cart_id'",
            )
            return False
        if any(s is None for s in selectors):
            return False
        types = tuple(dict.fromkeys(t for s in selectors if s is not None for t in s.event_types))
        assert isinstance(entry.value, ScalarNode)
        return prop if self.property(entry.value, types, purpose="match_on") else False

    # -- selectors and properties --

    def selector(self, entry: Entry) -> EventSelector | None:
        """An event type, a list of them, or ``{event: ..., where: {...}}``."""
        node = entry.value
        if isinstance(node, MappingNode):
            fields = self.mapping(node, "", help=None)
            if fields is None:
                return None
            ok = self.unknown_keys(fields, _SELECTOR_KEYS, "in an event selector", "A selector has")
            event = fields.get("event")
            if event is None:
                if not ok:  # a misspelt 'event' was reported already
                    return None
                self.error(
                    node,
                    "this event selector has no 'event'",
                    "e.g. '{event: cart_add, where: {cart_value: {greater_than: 50}}}'",
                )
                return None
            if isinstance(event.value, MappingNode):
                self.error(
                    self.at_value(event),
                    "'event' in a selector should be an event type or a list of them",
                    "e.g. '{event: cart_add, where: {...}}'",
                )
                return None
            types = self.event_types(event)
            if types is None:
                return None
            where = fields.get("where")
            filters = () if where is None else self.where(where, types)
            if filters is None or not ok:
                return None
            return EventSelector(types, filters)
        types = self.event_types(entry)
        return None if types is None else EventSelector(types)

    def event_types(self, entry: Entry) -> tuple[str, ...] | None:
        node = entry.value
        if is_null(node):
            self.error(
                entry.key_node,
                f"'{entry.key}' needs an event type",
                f"e.g. '{entry.key}: {self.catalog.event_types[0]}'; event types: {', '.join(self.catalog.event_types)}",
            )
            return None
        items = node.value if isinstance(node, SequenceNode) else [node]
        if not items:
            self.error(
                self.at_value(entry),
                "the list of event types is empty",
                f"name at least one event type: {', '.join(self.catalog.event_types)}",
            )
            return None
        types: list[str] = []
        ok = True
        for item in items:
            name = word(item)
            if name is None:
                self.error(
                    item,
                    f"expected an event type, found {shape(item)}",
                    f"event types: {', '.join(self.catalog.event_types)}",
                )
                ok = False
            elif name not in self.catalog.events:
                declared = self.catalog.event_types
                self.error(
                    item,
                    f"unknown event type '{name}'",
                    _or_declare(
                        suggest(name, declared, f"Event types{self.catalog.declared_in()}"),
                        closest(name, declared),
                        f"declare a new event type under 'events:' in {self.catalog.file or 'the catalogue'}",
                    ),
                )
                ok = False
            elif name not in types:
                types.append(name)
        return tuple(types) if ok else None

    def where(self, entry: Entry, types: tuple[str, ...]) -> tuple[PropertyFilter, ...] | None:
        fields = self.mapping(
            entry.value,
            "'where' should be 'property: value' pairs",
            help="e.g. 'where: {category: shoes, price: {greater_than: 50}}'",
            anchor=entry,
        )
        if fields is None:
            return None
        if not fields:
            self.error(entry.key_node, "'where' is empty", "add a property test or remove 'where'")
            return None
        filters: list[PropertyFilter] = []
        ok = True
        for prop_entry in fields.values():
            prop_type = self.property(prop_entry.key_node, types, "where")
            if prop_type is None:
                ok = False
                continue
            subject = Subject(f"'{prop_entry.key}'", prop_type, OPS_BY_TYPE[prop_type])
            value = prop_entry.value
            comparisons: list[Comparison] | None
            if isinstance(value, MappingNode):
                comparisons = self.comparison_mapping(prop_entry, subject)
            elif isinstance(value, SequenceNode):
                self.error(
                    self.at_value(prop_entry),
                    f"'{prop_entry.key}' should be compared with one value, not a list",
                    f"to match any of several values, write '{prop_entry.key}: {{in: [...]}}'",
                )
                comparisons = None
            elif is_null(value):
                self.error(
                    prop_entry.key_node,
                    f"'{prop_entry.key}' has no value to compare with",
                    f"write a value, or '{prop_entry.key}: {{exists: false}}' for events without it",
                )
                comparisons = None
            else:
                single = self.comparison("equals", prop_entry, subject)
                comparisons = None if single is None else [single]
            if comparisons is None:
                ok = False
                continue
            filters.extend(PropertyFilter(prop_entry.key, cmp) for cmp in comparisons)
        return tuple(filters) if ok else None

    def property(self, node: ScalarNode, types: tuple[str, ...], purpose: str) -> PropertyType | None:
        """The property's type when every event type has it, else report why not."""
        prop = node.value
        prop_type = self.catalog.property_type(types, prop)
        if prop_type is not None:
            return prop_type
        common = common_properties(self.catalog, types)
        having = [t for t in types if prop in self.catalog.events[t].properties]
        if not having:
            where = self.catalog.declared_in()
            label = f"Properties of {types_text(types)}{where}"
            if len(types) > 1:
                label = f"Properties that {types_text(types)} all have{where}"
            self.error(
                node,
                f"unknown property '{prop}' for {types_text(types)}",
                _or_declare(
                    suggest(prop, common, label),
                    closest(prop, common),
                    f"declare a new property with its event type in {self.catalog.file or 'the catalogue'}",
                ),
            )
        elif len(having) < len(types):
            missing = tuple(t for t in types if t not in having)
            verb = "has" if len(missing) == 1 else "have"
            self.error(
                node,
                f"{types_text(missing)} {verb} no property '{prop}'",
                f"'{purpose}' needs a property that every event type here has: {', '.join(common)}",
            )
        else:  # pragma: no cover - the catalogue gives each property one type everywhere
            self.error(node, f"'{prop}' has different types on {types_text(types)}")
        return None

    # -- comparisons --

    def comparisons(self, c: Cond, subject: Subject) -> list[Comparison] | None:
        """The comparison entries of a condition mapping (at least one)."""
        entries = [e for e in c.fields.values() if op(e.key) is not None]
        comparisons = self._comparison_entries(entries, subject)
        if comparisons == [] and c.keys_ok:
            self.error(
                c.construct.key_node,
                f"'{c.name}' needs a comparison",
                f"add what {subject.name} must be, e.g. "
                f"'{example_comparison(subject)}'; operators: {', '.join(subject.ops)}",
            )
            return None
        return comparisons

    def comparison_mapping(self, entry: Entry, subject: Subject) -> list[Comparison] | None:
        """A mapping made only of comparisons, e.g. ``{at_least: 3}``."""
        fields = self.mapping(
            entry.value,
            f"'{entry.key}' should hold comparisons",
            help=f"e.g. '{entry.key}: {{{example_comparison(subject)}}}'",
            anchor=entry,
        )
        if fields is None:
            return None
        ok = True
        for item in fields.values():
            if op(item.key) is None:
                self.error(item.key_node, f"unknown operator '{item.key}'", operator_help(item.key))
                ok = False
        comparisons = self._comparison_entries([e for e in fields.values() if op(e.key) is not None], subject)
        if comparisons == [] and ok:
            self.error(
                entry.key_node,
                f"'{entry.key}' has no comparison",
                f"add what {subject.name} must be, e.g. '{entry.key}: {{{example_comparison(subject)}}}'",
            )
            return None
        return comparisons if ok else None

    def _comparison_entries(self, entries: list[Entry], subject: Subject) -> list[Comparison] | None:
        comparisons: list[Comparison] = []
        seen: dict[str, Entry] = {}
        ok = True
        for entry in entries:
            operator = op(entry.key)
            assert operator is not None
            if operator in seen:
                earlier = seen[operator]
                line = earlier.key_node.start_mark.line + 1
                self.error(
                    entry.key_node,
                    f"'{entry.key}' repeats '{earlier.key}' (line {line})",
                    "keep one of them",
                )
                ok = False
                continue
            seen[operator] = entry
            if operator not in subject.ops:
                self.error(
                    entry.key_node,
                    f"'{entry.key}' cannot be used with {subject.name}",
                    f"{subject.name} is {KIND_WORDS[subject.kind]}; use one of: {', '.join(subject.ops)}",
                )
                ok = False
                continue
            comparison = self.comparison(operator, entry, subject)
            if comparison is None:
                ok = False
            else:
                comparisons.append(comparison)
        return comparisons if ok else None

    def comparison(self, operator: str, entry: Entry, subject: Subject) -> Comparison | None:
        node = entry.value
        if is_null(node):
            self.error(
                entry.key_node,
                f"'{entry.key}' has no value",
                f"write what to compare with after '{entry.key}:', "
                f"e.g. '{example_comparison(subject, operator)}'",
            )
            return None
        if operator == "exists":
            value = scalar(node)
            if not isinstance(value, bool):
                self.error(
                    self.at_value(entry),
                    "'exists' takes true or false",
                    "'exists: true' tests that the value is there, 'exists: false' that it is missing",
                )
                return None
            return Comparison(operator, value)
        if operator in ("in", "not_in"):
            if not isinstance(node, SequenceNode):
                shown = text(node) if isinstance(node, ScalarNode) else "..."
                self.error(
                    self.at_value(entry),
                    f"'{entry.key}' needs a list of values",
                    f"write the values in brackets, e.g. '{entry.key}: [{shown}]'",
                )
                return None
            if not node.value:
                self.error(
                    self.at_value(entry),
                    f"'{entry.key}' needs at least one value",
                    f"write the values in brackets, e.g. '{example_comparison(subject, operator)}'",
                )
                return None
            values = [self._typed(item, subject) for item in node.value]
            if any(v is None for v in values):
                return None
            return Comparison(operator, tuple(v for v in values if v is not None))
        if not isinstance(node, ScalarNode):
            self.error(
                self.at_value(entry),
                f"'{entry.key}' takes a single value, not {shape(node)}",
                "to match any of several values use 'in: [...]'"
                if isinstance(node, SequenceNode) and operator == "equals"
                else f"e.g. '{example_comparison(subject, operator)}'",
            )
            return None
        value = self._typed(node, subject)
        return None if value is None else Comparison(operator, value)

    def _typed(self, node: Node, subject: Subject) -> Scalar | None:
        """A comparison value of the subject's kind, or report how to write one."""
        if not isinstance(node, ScalarNode) or is_null(node):
            self.error(node, f"expected a value, found {shape(node)}", None)
            return None
        raw = scalar(node)
        value_text = node.value
        kind = subject.kind
        if kind == "duration":
            duration = self.duration_value(node, subject.name)
            if duration is not None and subject.limit is not None and duration > subject.limit:
                # Older events are forgotten, so a longer time since one can never be measured.
                horizon = days(subject.limit)
                self.error(
                    node,
                    f"'{value_text}' is longer than the state horizon",
                    f"events older than {horizon} are forgotten, so {subject.name} can never "
                    f"be known beyond that; use at most {horizon}",
                )
                return None
            return duration
        if kind == "number":
            if isinstance(raw, (int, float)) and not isinstance(raw, bool) and raw == raw:
                return raw
            if isinstance(raw, str) and is_number_text(value_text):
                self.error(
                    node,
                    f'{subject.name} is a number, but "{value_text}" is text',
                    f"write the number without quotes: {value_text}",
                )
            elif isinstance(raw, str) and is_duration_text(value_text):
                self.error(
                    node,
                    f"{subject.name} is a plain number, not a duration",
                    "write a number without a unit, e.g. 5",
                )
            else:
                self.error(
                    node,
                    f"{subject.name} is a number, but '{value_text}' is not",
                    "write a number, e.g. 3 or 49.90",
                )
            return None
        if kind == "string":
            if isinstance(raw, str):
                return raw
            if isinstance(raw, bool):
                message = f"{subject.name} is text, but YAML reads {value_text} as {str(raw).lower()}"
            else:
                message = f"{subject.name} is text, but {value_text} is a number"
            self.error(node, message, f"put the value in quotes: '{value_text}'")
            return None
        if kind == "bool":
            if isinstance(raw, bool):
                return raw
            self.error(node, f"{subject.name} is true or false, not '{value_text}'", "write true or false")
            return None
        # Timestamps are written as ISO-8601 text and held as epoch milliseconds.
        millis = epoch_ms(raw) if isinstance(raw, str) else None
        if millis is None:
            self.error(
                node,
                f"{subject.name} is a date and time, but '{value_text}' is not",
                "write it as ISO-8601, e.g. 2024-01-31 or 2024-01-31T18:00:00Z (UTC when no time zone is given)",
            )
        return millis


def _or_declare(hint: str | None, close: str | None, declare: str) -> str:
    """A suggestion, and how to declare a new name when none is close to what was written."""
    if close is not None:
        return hint or declare
    return f"{hint}; {declare}" if hint else declare
