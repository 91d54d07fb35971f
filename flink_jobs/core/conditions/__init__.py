"""The rule constructs, one module each, and the table that lists them.

To add a construct: write its module (its model, ``check``, ``compile``, ``qualifying`` and a
``CONSTRUCT`` record; see ``base.py``), add it to ``CONSTRUCTS`` below, teach the reference
evaluator (``core/reference.py``, the independent oracle) what it means, and give it tests and a
broken-rule corpus entry (``tests/rules_broken/``).
"""

from __future__ import annotations

from typing import Mapping

from ..model import Condition, Event
from . import absence, aggregate, logic, profile, rfm, score, segment, sequence, sessions, since_last
from .absence import Absence
from .aggregate import AGGREGATE_KINDS, Aggregate
from .base import CompileError, HistoryView, Node
from .builder import Builder
from .construct import Construct, Keyword
from .logic import AllOf, AnyOf, Not, all_of
from .profile import ProfileField
from .score import Score
from .segment import InSegment
from .sequence import Sequence
from .sessions import SESSION_MEASURES, Sessions
from .since_last import SinceLast

# In this order in messages that list them ("a condition starts with one of: count, sum, ...").
CONSTRUCTS: tuple[Construct, ...] = (
    aggregate.CONSTRUCT,
    absence.CONSTRUCT,
    sequence.CONSTRUCT,
    sessions.CONSTRUCT,
    since_last.CONSTRUCT,
    rfm.CONSTRUCT,
    profile.CONSTRUCT,
    score.CONSTRUCT,
    segment.CONSTRUCT,
    logic.CONSTRUCT,
)
KEYWORDS: Mapping[str, Keyword] = {k.name: k for c in CONSTRUCTS for k in c.keywords}
# Every key some construct takes besides its keyword and comparisons.
MODIFIERS: frozenset[str] = frozenset(key for k in KEYWORDS.values() for key in k.takes)
_BY_MODEL: Mapping[type[Condition], Construct] = {m: c for c in CONSTRUCTS for m in c.models}


def compile_condition(condition: Condition, builder: Builder) -> Node:
    """The evaluator node of a condition, by its construct."""
    construct = _BY_MODEL.get(type(condition))
    if construct is None or construct.compile is None:
        raise CompileError(f"unsupported condition {type(condition).__name__}")
    return construct.compile(condition, builder)


def qualifying(condition: Condition, history: HistoryView, now: int) -> list[tuple[Event, str]]:
    """The events behind a leaf condition at ``now`` (none for conditions made of others)."""
    construct = _BY_MODEL.get(type(condition))
    if construct is None or construct.qualifying is None:
        return []
    return construct.qualifying(condition, history, now)


__all__ = [
    "AGGREGATE_KINDS",
    "CONSTRUCTS",
    "KEYWORDS",
    "MODIFIERS",
    "SESSION_MEASURES",
    "Absence",
    "Aggregate",
    "AllOf",
    "AnyOf",
    "Builder",
    "CompileError",
    "Construct",
    "HistoryView",
    "InSegment",
    "Keyword",
    "Node",
    "Not",
    "ProfileField",
    "Score",
    "Sequence",
    "Sessions",
    "SinceLast",
    "all_of",
    "compile_condition",
    "qualifying",
]
