"""What the constructs' compiled nodes share: the ``Node`` interface, the words of their
reasons, and the history ``segments explain`` reads their qualifying events from."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, Generic, Mapping, Protocol, TypeVar, cast

from ..durations import format_duration
from ..features import Feature, TimerBook
from ..model import Comparison, Event, EventSelector
from ..state import CustomerState


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


class FeatureNode(Node, Generic[F]):
    """A leaf that reads one feature: compiled with the key the builder gave it, bound to the
    built feature (of ``feature_type``) once every rule has been read."""

    __slots__ = ("key", "feature")
    feature_type: type[Feature[Any]]
    feature: F

    def __init__(self, key: str) -> None:
        self.key = key

    def bind(self, features: Mapping[str, Feature[Any]]) -> None:
        feature = features.get(self.key)
        if not isinstance(feature, self.feature_type):
            raise CompileError(f"feature {self.key!r} is not a {self.feature_type.__name__}")
        self.feature = cast(F, feature)
        self.key = feature.key  # the feature's own key (a StatsFeature's names its properties), interned

    def inputs(self, keys: set[str], flags: set[str]) -> None:
        keys.add(self.key)


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
        if cmp.op == "equals":  # "country = FR", not "country = FR = FR"
            return True, f"{what} = {shown}"
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


# ---- explain -----------------------------------------------------------------------------------------


class HistoryView(Protocol):
    """A customer's full history as ``segments explain`` reads it (``reference.History``)."""

    def upto(self, now: int) -> list[Event]: ...

    def matching_in_window(self, selector: EventSelector, window: int, now: int) -> list[Event]: ...

    def sessions(self, gap: int, now: int) -> list[tuple[int, int]]: ...

    # The condition is the construct's own model (the reference evaluator's signatures).
    def missed_follow_ups(self, c: Any, now: int) -> list[Event]: ...

    def completed_sequence(self, c: Any, now: int) -> list[Event] | None: ...
