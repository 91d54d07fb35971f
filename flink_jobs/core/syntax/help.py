"""The help text of rule-file messages: suggestions, operator names, examples, and plain words
for what YAML and the rules expect."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Literal, Mapping, Sequence

from ..catalog import Catalog
from ..durations import format_duration
from ..model import COMPARISON_OPS, OP_ALIASES

LIST_LIMIT = 12  # allowed values are listed in a help line when there are at most this many

ORDERING = ("less_than", "at_most", "greater_than", "at_least")
NUMBER_RESULT_OPS = ("equals", "not_equals", *ORDERING, "in", "not_in")
# Which comparisons make sense for a property (or profile field) of each type.
OPS_BY_TYPE: Mapping[str, tuple[str, ...]] = {
    "string": ("equals", "not_equals", "in", "not_in", "exists", "contains", "starts_with"),
    "number": (*NUMBER_RESULT_OPS, "exists"),
    "timestamp": (*NUMBER_RESULT_OPS, "exists"),
    "bool": ("equals", "not_equals", "exists"),
}

ValueKind = Literal["string", "number", "bool", "timestamp", "duration"]
KIND_WORDS: Mapping[str, str] = {
    "string": "text",
    "number": "a number",
    "bool": "true or false",
    "timestamp": "a date and time",
    "duration": "a duration",
}


@dataclass(frozen=True, slots=True)
class Subject:
    """What a comparison tests, for messages: e.g. "'cart_value'" holding a number."""

    name: str
    kind: ValueKind
    ops: tuple[str, ...]
    limit: int | None = None  # the largest duration that can be measured (the state horizon)
    sample: str | None = None  # a typical value, for examples in messages


def closest(word: str, choices: Sequence[str]) -> str | None:
    """The choice ``word`` was most likely meant to be, or None when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def suggest(word: str, choices: Sequence[str], label: str | None, limit: int = LIST_LIMIT) -> str | None:
    """``did you mean 'x'?`` and, when the list is short, ``<label>: a, b, c``."""
    parts: list[str] = []
    close = closest(word, choices)
    if close is not None:
        parts.append(f"did you mean '{close}'?")
    if label and choices and len(choices) <= limit:
        parts.append(f"{label}: {', '.join(choices)}")
    return " ".join(parts) or None


def op(key: str) -> str | None:
    """The comparison operator a key names (symbols normalised to words), or None."""
    if key in COMPARISON_OPS:
        return key
    return OP_ALIASES.get(key)


# Words people reach for instead of the operator names; spelling similarity alone would suggest
# 'less_than' for 'more_than'.
OP_SYNONYMS: Mapping[str, str] = {
    "more_than": "greater_than",
    "above": "greater_than",
    "over": "greater_than",
    "gt": "greater_than",
    "fewer_than": "less_than",
    "lower_than": "less_than",
    "below": "less_than",
    "under": "less_than",
    "lt": "less_than",
    "gte": "at_least",
    "min": "at_least",
    "minimum": "at_least",
    "lte": "at_most",
    "max": "at_most",
    "maximum": "at_most",
    "eq": "equals",
    "is": "equals",
    "equal": "equals",
    "equal_to": "equals",
    "ne": "not_equals",
    "is_not": "not_equals",
    "one_of": "in",
    "not_one_of": "not_in",
    "includes": "contains",
    "begins_with": "starts_with",
}


def operator_help(key: str) -> str:
    listed = f"Operators: {', '.join(COMPARISON_OPS)}"
    meant = OP_SYNONYMS.get(key.lower())
    if meant is not None:
        return f"did you mean '{meant}'? {listed}"
    return suggest(key, COMPARISON_OPS, "Operators") or listed


def example_comparison(subject: Subject, operator: str | None = None) -> str:
    operator = operator or ("at_least" if "at_least" in subject.ops else subject.ops[0])
    samples: Mapping[str, str] = {
        "number": "3",
        "duration": "30d",
        "string": "DE",
        "bool": "true",
        "timestamp": "2024-01-31",
    }
    sample = subject.sample or samples[subject.kind]
    if operator in ("in", "not_in"):
        return f"{operator}: [{sample}]"
    if operator == "exists":
        return "exists: true"
    return f"{operator}: {sample}"


def types_text(types: Sequence[str]) -> str:
    if len(types) == 1:
        return types[0]
    return ", ".join(types[:-1]) + " and " + types[-1]


def common_properties(catalog: Catalog, types: Sequence[str], of_type: str | None = None) -> list[str]:
    """Properties every one of the event types has (with one type), in catalogue order."""
    if not types:
        return []
    return [
        prop
        for prop, prop_type in catalog.property_types(types[0]).items()
        if catalog.property_type(tuple(types), prop) is not None and (of_type is None or prop_type == of_type)
    ]


def days(ms: int) -> str:
    """A duration as rule authors write long ones: in days (400d), not weeks."""
    return format_duration(ms, weeks=False)


# PyYAML's problem texts, and what to do about them in plain words.
_YAML_HELP: tuple[tuple[str, str], ...] = (
    (
        "mapping values are not allowed",
        "put text containing ': ' in quotes, or check this line's indentation",
    ),
    ("cannot start any token", "YAML does not allow tabs for indentation; use spaces"),
    (
        "expected <block end>",
        "check the indentation: keys of one block must start in the same column",
    ),
    (
        "could not find expected ':'",
        "each line of a block needs 'key: value'; check for a missing colon or quote",
    ),
    ("found undefined alias", "define the anchor (&name) before using it (*name)"),
    ("expected a single document", "a rule file holds one document; remove the '---' lines"),
    ("found unexpected end of stream", "a quote or bracket is not closed"),
    ("<stream end>", "a quote or bracket is not closed"),
    (
        "did not find expected",
        "check the quotes, brackets and indentation on this line and the one before",
    ),
)


def yaml_help(problem: str, context: str | None) -> str:
    for needle, help in _YAML_HELP:
        if needle in problem or (context and needle in context):
            return help
    return "check the quotes, brackets and indentation near here"
