"""``rfm``: recency, frequency and monetary value of purchases, written as one condition and read
as the ``since_last`` and ``count``/``sum`` conditions it stands for.

    rfm:
      recency: {at_most: 30d}
      frequency: {at_least: 3}
      monetary: {greater_than: 200}
    within: 365d
"""

from __future__ import annotations

from ..model import Condition, EventSelector
from ..syntax.help import NUMBER_RESULT_OPS, ORDERING, Subject
from ..syntax.reader import Cond, RuleReader
from .aggregate import Aggregate
from .construct import Construct, Keyword
from .logic import AllOf
from .since_last import SinceLast

_PARTS = ("recency", "frequency", "monetary")


def check(r: RuleReader, c: Cond) -> Condition | None:
    fields = r.mapping(
        c.construct.value,
        "'rfm' should be 'key: value' lines",
        help="e.g. 'rfm: {recency: {at_most: 30d}, frequency: {at_least: 3}}'",
        anchor=c.construct,
    )
    if fields is None:
        return None
    if not fields:
        r.error(c.construct.key_node, "'rfm' is empty", "give at least one of recency, frequency, monetary")
        return None
    ok = True
    for entry in fields.values():
        if entry.key not in _PARTS:
            r.unknown_key(entry, _PARTS, "in 'rfm'", "rfm takes")
            ok = False
    purchase_event, revenue = r.catalog.purchase_event, r.catalog.revenue_property
    if purchase_event is None or revenue is None:
        r.error(
            c.construct.key_node,
            "'rfm' needs a purchase event, and the catalogue names none",
            "declare it in the catalogue's roles, e.g. 'purchase: {event: order_paid, revenue: amount}'",
        )
        return None
    purchases = EventSelector((purchase_event,))
    needs_window = "frequency" in fields or "monetary" in fields
    window: int | None = None
    if needs_window:
        window = r.window(c, "add the window for frequency and monetary value, e.g. 'within: 365d'")
        ok = ok and window is not None
    elif "within" in c.fields:
        r.error(
            c.fields["within"].key_node,
            "'within' has no effect on recency alone",
            "recency is the time since the last purchase; remove 'within', or add frequency or monetary",
        )
        ok = False
    leaves: list[Condition] = []
    for part in _PARTS:
        part_entry = fields.get(part)
        if part_entry is None:
            continue
        source = r.source(part_entry.key_node)
        if part == "recency":
            subject = Subject("the time since the last purchase", "duration", ORDERING, r.horizon)
        elif part == "frequency":
            subject = Subject("the number of purchases", "number", NUMBER_RESULT_OPS)
        else:
            subject = Subject("the revenue", "number", NUMBER_RESULT_OPS)
        comparisons = r.comparison_mapping(part_entry, subject)
        if comparisons is None:
            ok = False
            continue
        for cmp in comparisons:
            if part == "recency":
                leaves.append(SinceLast(purchases, cmp, source))
            elif window is not None:
                prop = None if part == "frequency" else revenue
                kind = "count" if part == "frequency" else "sum"
                leaves.append(Aggregate(kind, purchases, prop, window, cmp, source))
    if not ok or not leaves:
        return None
    return leaves[0] if len(leaves) == 1 else AllOf(tuple(leaves), source=c.source)


CONSTRUCT = Construct(
    keywords=(
        Keyword(
            "rfm",
            check,
            takes=("within",),
            no_comparison_help="put comparisons inside recency, frequency or monetary, e.g. 'frequency: {at_least: 3}'",
        ),
    ),
)
