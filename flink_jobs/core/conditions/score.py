"""``score``: a model score by name, as the scorer gave it for the customer's latest instant.

    score: purchase_propensity
    at_least: 0.8
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..features import TimerBook
from ..model import Comparison, Condition, SourceRef
from ..state import CustomerState
from ..syntax.help import NUMBER_RESULT_OPS, Subject
from ..syntax.nodes import text
from ..syntax.reader import Cond, RuleReader
from .base import Node, verdict
from .builder import Builder
from .construct import Construct, Keyword
from .logic import leaves


@dataclass(frozen=True, slots=True)
class Score(Condition):
    """A model score by name (from the scorer), e.g. ``purchase_propensity >= 0.8``."""

    name: str
    comparison: Comparison
    source: SourceRef | None = field(default=None, compare=False)


def check(r: RuleReader, c: Cond) -> Condition | None:
    name = r.choice(c.construct, r.known_scores, "score", "Known scores", "e.g. 'score: purchase_propensity'")
    shown = name or text(c.construct.value)
    subject = Subject(f"the score '{shown}'", "number", (*NUMBER_RESULT_OPS, "exists"), sample="0.8")
    comparisons = r.comparisons(c, subject)
    if name is None or comparisons is None:
        return None
    return leaves(c, comparisons, lambda cmp: Score(name, cmp, c.source))


class ScoreNode(Node):
    __slots__ = ("name", "cmp")

    def __init__(self, name: str, cmp: Comparison) -> None:
        self.name, self.cmp = name, cmp

    def holds(self, state: CustomerState, now: int, book: TimerBook | None = None) -> bool:
        return self.cmp.test(state.scores.get(self.name))

    def explain(self, state: CustomerState, now: int) -> tuple[bool, str]:
        value = state.scores.get(self.name)
        return verdict(self.cmp.test(value), f"score {self.name}", value, self.cmp)

    def inputs(self, keys: set[str], flags: set[str]) -> None:
        flags.add("score")


def compile(c: Condition, b: Builder) -> Node:
    assert isinstance(c, Score)
    return ScoreNode(c.name, c.comparison)


CONSTRUCT = Construct(
    keywords=(Keyword("score", check, comparisons=True),),
    models=(Score,),
    compile=compile,
)


# Pickled rules reach the workers; compiled by mypyc these classes need it (see pickling.py).
from ..pickling import register_dataclasses  # noqa: E402

register_dataclasses(globals(), __name__)
