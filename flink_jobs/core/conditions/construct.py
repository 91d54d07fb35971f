"""A rule construct's entry in the table of constructs (``core/conditions/__init__.py``).

A construct module holds the construct's model (a frozen dataclass, a ``model.Condition``), its
``check`` for the loader (the YAML keys that start it and how its condition is read), its
``compile`` (the evaluator node and the features it reads), and its ``qualifying`` events for
``segments explain``; its ``CONSTRUCT`` record says which is which.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

from ..model import Condition, Event
from ..syntax.reader import Cond, RuleReader
from .base import HistoryView, Node
from .builder import Builder

Check = Callable[[RuleReader, Cond], "Condition | None"]
Compile = Callable[[Condition, Builder], Node]
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


# Pickled rules reach the workers; compiled by mypyc these classes need it (see pickling.py).
from ..pickling import register_dataclasses  # noqa: E402

register_dataclasses(globals(), __name__)
