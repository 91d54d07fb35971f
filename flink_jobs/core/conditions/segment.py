"""``segment``: current membership of another segment.

    segment: high_engagement
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..features import TimerBook
from ..model import Condition, SourceRef
from ..state import CustomerState
from ..syntax.nodes import word
from ..syntax.reader import Cond, RuleReader
from .base import Node
from .builder import Builder
from .construct import Construct, Keyword


@dataclass(frozen=True, slots=True)
class InSegment(Condition):
    """Current membership of another segment."""

    segment_id: str
    source: SourceRef | None = field(default=None, compare=False)

    def references(self) -> tuple[str, ...]:
        return (self.segment_id,)


def check(r: RuleReader, c: Cond) -> Condition | None:
    value = word(c.construct.value)
    if not isinstance(value, str) or not value:
        r.error(r.at_value(c.construct), "'segment' needs the id of another segment", "e.g. 'segment: high_engagement'")
        return None
    r.add_ref(value, c.construct.value)
    return InSegment(value, source=c.source)


class SegmentNode(Node):
    __slots__ = ("segment_id",)

    def __init__(self, segment_id: str) -> None:
        self.segment_id = segment_id

    def holds(self, state: CustomerState, now: int, book: TimerBook | None = None) -> bool:
        return self.segment_id in state.members

    def explain(self, state: CustomerState, now: int) -> tuple[bool, str]:
        if self.segment_id in state.members:
            return True, f"in {self.segment_id}"
        return False, f"not in {self.segment_id}"


def compile(c: Condition, b: Builder) -> Node:
    assert isinstance(c, InSegment)
    return SegmentNode(c.segment_id)


CONSTRUCT = Construct(
    keywords=(
        Keyword(
            "segment",
            check,
            no_comparison_help="'segment: x' holds while the customer is in segment x; to test the opposite, use 'not:'",
        ),
    ),
    models=(InSegment,),
    compile=compile,
)


# Pickled rules reach the workers; compiled by mypyc these classes need it (see pickling.py).
from ..pickling import register_dataclasses  # noqa: E402

register_dataclasses(globals(), __name__)
