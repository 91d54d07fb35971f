"""What every rule construct is made of: its compiled node, and its entry in the table of
constructs (``core/conditions/__init__.py``).

A construct module holds the construct's model (a frozen dataclass, a ``model.Condition``), its
``check`` for the loader (the YAML keys that start it and how its condition is read), its
``compile`` (the evaluator node and the features it reads), and its ``qualifying`` events for
``segments explain``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, TypeVar

from ..durations import format_duration
from ..features import Feature, TimerBook
from ..model import Comparison, Condition, Event, EventSelector
from ..state import CustomerState
from ..syntax.reader import Cond, RuleReader

if TYPE_CHECKING:
    from .builder import Builder


class CompileError(ValueError):
    """The rule set cannot be compiled (the loader normally reports these first)."""


# ---- evaluator nodes ---------------------------------------------------------------------------


class Node(ABC):
    """A compiled condition. ``holds`` is the fast path; a leaf that reads a window may ask
    ``book`` for the timer at which its value can next change."""

    __slots__ = ()

    @abstractmethod
    def holds(self, state: CustomerState, now: int, book: TimerBook | None = None) -> bool:
        """Whether the condition holds at ``now``."""

    @abstractmethod
    def explain(self, state: CustomerState, now: int) -> tuple[bool, str]:
        """(holds, a short reason a person can read)."""

    def bind(self, features: Mapping[str, Feature[Any]]) -> None:
        """Take the features this node reads, once all of them are built (by key)."""

    def inputs(self, keys: set[str], flags: set[str]) -> None:
        """Add what this node reads: feature keys, and ``profile`` or ``score``."""


F = TypeVar("F", bound=Feature[Any])


def bound(features: Mapping[str, Feature[Any]], key: str, kind: type[F]) -> F:
    """The built feature ``key``, which must be a ``kind``."""
    feature = features.get(key)
    if not isinstance(feature, kind):
        raise CompileError(f"feature {key!r} is not a {kind.__name__}")
    return feature


# ---- reasons ---------------------------------------------------------------------------------------


def fmt(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.4g}"
    return str(value)


def verdict(
    ok: bool, what: str, value: object, cmp: Comparison, render: Callable[[object], str] | None = None
) -> tuple[bool, str]:
    shown = render(value) if (render and value is not None) else fmt(value)
    if ok:
        return True, f"{what} = {shown} {cmp.describe(render)}"
    return False, f"{what} = {shown}, needs {cmp.describe(render)}"


def duration_text(value: object) -> str:
    """Durations in reasons: whole seconds (sub-second values as they are)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return fmt(value)
    ms = int(value)
    if ms >= 1000:
        ms -= ms % 1000
    return format_duration(ms, weeks=False)


def exit_sensitivity(kind: str, cmp: Comparison) -> bool | None:
    """When can an event leaving the window flip this leaf? Counts only fall as events leave, so
    ``> n`` / ``>= n`` can flip only while true, ``< n`` / ``<= n`` only while false (returned);
    anything else (sums, averages, equality) can flip any time (None)."""
    if kind in ("count", "distinct"):
        if cmp.op in ("greater_than", "at_least"):
            return True
        if cmp.op in ("less_than", "at_most"):
            return False
    return None


# ---- the table of constructs -----------------------------------------------------------------------


class HistoryView(Protocol):
    """A customer's full history as ``segments explain`` reads it (``reference.History``)."""

    def upto(self, now: int) -> list[Event]: ...

    def matching_in_window(self, selector: EventSelector, window: int, now: int) -> list[Event]: ...

    def sessions(self, gap: int, now: int) -> list[tuple[int, int]]: ...

    # The condition is the construct's own model (the reference evaluator's signatures).
    def missed_follow_ups(self, c: Any, now: int) -> list[Event]: ...

    def completed_sequence(self, c: Any, now: int) -> list[Event] | None: ...


Check = Callable[[RuleReader, Cond], "Condition | None"]
Compile = Callable[[Condition, "Builder"], Node]
Qualifying = Callable[[Condition, HistoryView, int], "list[tuple[Event, str]]"]


@dataclass(frozen=True)
class Keyword:
    """A YAML key that starts a condition, and how the loader reads that condition."""

    name: str
    check: Check
    takes: tuple[str, ...] = ()  # the other keys it goes with (besides comparisons)
    comparisons: bool = False  # whether it takes comparisons such as 'greater_than'
    # Help when a comparison is written beside it although it takes none (None: a generic one).
    no_comparison_help: str | None = None
    # Help for keys of other constructs written beside it, instead of listing what it takes.
    key_help: Mapping[str, str] = field(default_factory=dict)

    def usage(self) -> str:
        """What the keyword goes with, in words (for "cannot be used with" problems)."""
        return usage(self.name, self.takes, self.comparisons)

    def comparison_help(self) -> str:
        if self.no_comparison_help is not None:
            return self.no_comparison_help
        return f"put the comparison inside one of the conditions under '{self.name}:'"


def usage(name: str, takes: tuple[str, ...], comparisons: bool) -> str:
    keys = ", ".join(f"'{k}'" for k in takes)
    if takes and comparisons:
        return f"'{name}' goes with {keys} and comparisons such as 'greater_than'"
    if comparisons:
        return f"'{name}' goes with comparisons only, such as 'greater_than'"
    if takes:
        return f"'{name}' goes with {keys}"
    return f"'{name}' stands alone in its condition; put other conditions beside it under 'all:' or 'any:'"


@dataclass(frozen=True)
class Construct:
    """One rule construct: the keywords that start it, the models it reads into, and how the
    engine (``compile``) and ``segments explain`` (``qualifying``) read those models. A construct
    whose models are other constructs' (``rfm``) has no models of its own."""

    keywords: tuple[Keyword, ...]
    models: tuple[type[Condition], ...] = ()
    compile: Compile | None = None
    qualifying: Qualifying | None = None
