"""``profile``: the latest value of a profile field (from the events that update the profile).

    profile: country
    in: [DE, AT, CH]
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..features import TimerBook
from ..model import Comparison, Condition, SourceRef
from ..state import CustomerState
from ..syntax.help import OPS_BY_TYPE, Subject
from ..syntax.reader import Cond, RuleReader
from .base import Node, verdict
from .builder import Builder
from .construct import Construct, Keyword
from .logic import leaves


@dataclass(frozen=True, slots=True)
class ProfileField(Condition):
    """The latest value of a profile field (from the catalogue's profile events)."""

    prop: str
    comparison: Comparison
    source: SourceRef | None = field(default=None, compare=False)


def check(r: RuleReader, c: Cond) -> Condition | None:
    fields = r.catalog.profile_fields
    example = f"e.g. 'profile: {next(iter(fields), 'country')}'"
    name = r.choice(c.construct, tuple(fields), "profile field", "Profile fields", example)
    if name is None:
        return None
    prop_type = fields[name]
    comparisons = r.comparisons(c, Subject(f"'{name}'", prop_type, OPS_BY_TYPE[prop_type]))
    if comparisons is None:
        return None
    return leaves(c, comparisons, lambda cmp: ProfileField(name, cmp, c.source))


class ProfileNode(Node):
    __slots__ = ("prop", "cmp")

    def __init__(self, prop: str, cmp: Comparison) -> None:
        self.prop, self.cmp = prop, cmp

    def holds(self, state: CustomerState, now: int, book: TimerBook | None = None) -> bool:
        return self.cmp.test(state.profile.get(self.prop))

    def explain(self, state: CustomerState, now: int) -> tuple[bool, str]:
        value = state.profile.get(self.prop)
        return verdict(self.cmp.test(value), f"profile {self.prop}", value, self.cmp)

    def inputs(self, keys: set[str], flags: set[str]) -> None:
        flags.add("profile")


def compile(c: Condition, b: Builder) -> Node:
    assert isinstance(c, ProfileField)
    return ProfileNode(c.prop, c.comparison)


CONSTRUCT = Construct(
    keywords=(Keyword("profile", check, comparisons=True),),
    models=(ProfileField,),
    compile=compile,
)


# Pickled rules reach the workers; compiled by mypyc these classes need it (see pickling.py).
from ..pickling import register_dataclasses  # noqa: E402

register_dataclasses(globals(), __name__)
