"""Per-customer state: everything the engine keeps for one customer, compact and bounded."""

from __future__ import annotations

import marshal
from array import array
from bisect import bisect_left
from dataclasses import fields
from operator import attrgetter
from sys import getsizeof, intern
from typing import Any, Final, Sequence

from .features import DISTINCT_PREFIX, FeatureState, distinct_from_dict
from .model import Event, PropertyValue

NEVER = -(2**62)  # the clock of a customer no instant has been processed for


# The state's attributes, in the order encode_state writes them. A module constant rather than
# STATE_SLOTS, which a class compiled by mypyc does not have (issue 35).
STATE_SLOTS: Final = (
    "customer_id",
    "clock",
    "buffer",
    "seen",
    "seen_limit",
    "timers",
    "features",
    "members",
    "eligible_since",
    "scores",
    "profile",
    "rule_version",
    "held_until",
)


class CustomerState:
    """One customer's state. Plain containers only, so it encodes small and fast (marshal).

    - ``clock``: every instant <= clock has been processed.
    - ``buffer``: events not yet processed (event_time > clock), sorted by (event_time, event_id).
    - ``seen``: for dedup within the dedup horizon, ``[ids, times]``: the 64-bit hashes of the
      event ids seen, sorted (``array('Q')``), and each one's event time (``array('q')``); see
      ``seen_contains`` and ``seen_add``. Two arrays, not a dict of ints: live, the state is
      encoded again after nearly every event, from memory the CPU's caches no longer hold, and a
      dict's scattered int objects were a quarter of that time.
    - ``timers``: wake-up instant -> how many parts of the state need it (refcount).
    - ``features``: feature key -> that feature's own state (see features.py).
    - ``members``: segment id -> entered-at instant.
    - ``eligible_since``: for segments with a TTL, when the current eligible run began.
    - ``rule_version``: the engine's ``state_version`` the state was last brought up to.
    - ``held_until``: for segments with a hold whose condition stopped holding, when the
      membership ends (unless the condition holds again before).
    """

    __slots__ = STATE_SLOTS

    def __init__(self, customer_id: str) -> None:
        self.customer_id = customer_id
        self.clock: int = NEVER
        self.buffer: list[Event] = []
        self.seen: list[array[int]] = [array("Q"), array("q")]
        self.seen_limit: int = 64
        self.timers: dict[int, int] = {}
        self.features: dict[str, FeatureState] = {}
        self.members: dict[str, int] = {}
        self.eligible_since: dict[str, int] = {}
        self.scores: dict[str, float] = {}
        self.profile: dict[str, PropertyValue] = {}
        self.rule_version: str = ""
        self.held_until: dict[str, int] = {}

    def __repr__(self) -> str:
        return (
            f"CustomerState({self.customer_id!r}, clock={self.clock}, members={self.members}, "
            f"buffered={len(self.buffer)}, timers={len(self.timers)}, features={len(self.features)})"
        )


def seen_contains(seen: list[array[int]], key: int) -> bool:
    ids = seen[0]
    i = bisect_left(ids, key)
    return i < len(ids) and ids[i] == key


def seen_add(seen: list[array[int]], key: int, event_time: int) -> None:
    ids, times = seen
    i = bisect_left(ids, key)
    if i < len(ids) and ids[i] == key:
        times[i] = event_time
    else:
        ids.insert(i, key)
        times.insert(i, event_time)


def seen_since(seen: list[array[int]], oldest: int) -> list[array[int]]:
    """The entries of ``seen`` whose event time is at least ``oldest`` (a new pair of arrays)."""
    ids, times = seen
    keep = [i for i, t in enumerate(times) if t >= oldest]
    return [array("Q", [ids[i] for i in keep]), array("q", [times[i] for i in keep])]


def _seen_from_dict(seen: dict[int, int]) -> list[array[int]]:
    """Formats 3 and older kept ``seen`` as a dict of hash -> event time."""
    ids = sorted(seen)
    return [array("Q", ids), array("q", [seen[k] for k in ids])]


# Bump when the slots or the layout of a feature's state change; decode_state keeps reading the
# old formats. 2: the StatsFeature buckets became one flat array (written as its bytes) under a
# key that names their properties; a format-1 state is reconciled on its next step
# (``SegmentEngine``), where ``StatsFeature.adopt`` converts its buckets. 3: a DistinctFeature
# bucket's values are a list instead of a set (decode_state converts older ones), and the bytes
# are marshal's version 2 (marshal.loads reads every version; versions before 3 write no
# references, which this state has no use for). 4: ``seen`` is two arrays, sorted by hash
# (decode_state converts the dict of older formats). 5: a DistinctFeature's buckets are one flat
# array of value hashes, like a StatsFeature's (decode_state converts the dicts of older formats).
# 6: ``held_until`` appended (segments' ``hold``); older formats read as holding none.
# 7: the generic aggregates of an event type are one ``TieredStatsFeature`` instead of a
# StatsFeature per resolution; an older state is reconciled on its next step, where its
# ``adopt`` merges them.
_FORMAT = 7
_MARSHAL_VERSION = 2


_INTERPRETED = hasattr(CustomerState, "__slots__")  # a class mypyc compiled has none
_BUFFER = STATE_SLOTS.index("buffer")
_FEATURES = STATE_SLOTS.index("features")
_SEEN = STATE_SLOTS.index("seen")
_RULE_VERSION = STATE_SLOTS.index("rule_version")
# The dicts keyed by segment id or model output name (interned on decode, like the feature keys).
_NAME_KEYED = tuple(
    STATE_SLOTS.index(name) for name in ("members", "eligible_since", "scores", "held_until")
)
_slots = attrgetter(*STATE_SLOTS)


def encode_state(state: CustomerState) -> bytes:
    """Bytes as stored in Flink keyed state: the slots in order, after a format number.

    Everything in the state is a plain container of ints, floats, strings, bools and None, or an
    ``array('d')`` (a feature's buckets), so ``marshal`` applies: several times faster than
    pickling the object, and smaller. marshal writes an array as the bytes object of its buffer
    (``decode_state`` turns those back into arrays: no feature keeps bytes otherwise), and
    buffered events (live nearly always none) become tuples. Live, nearly every event's state is
    encoded again within ``job.state_write_behind``, so this is on the hot path: the slots are
    read in one ``attrgetter`` call and the features dict is not copied, and marshal writes its
    version 2: the later versions look up every object in a table of references to write a
    repeated one once, which this state has little of, and cost a quarter more to write
    (bench/HISTORY.md).
    """
    values: Sequence[Any] = _slots(state)
    if state.buffer:
        values = list(values)
        values[_BUFFER] = [
            (e.event_id, e.customer_id, e.event_type, e.event_time, dict(e.properties), e.ingest_time)
            for e in state.buffer
        ]
    return marshal.dumps((_FORMAT, *values), _MARSHAL_VERSION)


def decode_state(data: bytes) -> CustomerState:
    format_, *values = marshal.loads(data)
    if format_ not in (_FORMAT, 6, 5, 4, 3, 2, 1):
        raise ValueError(
            f"customer state format {format_} is not readable by this version (expects {_FORMAT}, 6, 5, 4, 3, 2 or 1)"
        )
    if format_ < 6:
        values.append({})  # held_until
    if format_ >= 4:
        ids, times = values[_SEEN]
        values[_SEEN] = [array("Q", ids), array("q", times)]
    else:
        values[_SEEN] = _seen_from_dict(values[_SEEN])
    # The keys as one string object shared by every state (the rules' own, interned when they
    # were compiled): not one copy each per decoded state. A state written with interned keys
    # has them interned by marshal.loads already; interning again only finds them.
    # (Format 1 has no bytes among its features: its StatsFeature buckets were dicts.)
    features: dict[str, FeatureState] = {
        intern(key): array("d", value) if type(value) is bytes else value for key, value in values[_FEATURES].items()
    }
    values[_FEATURES] = features
    # Formats 1-6: reconciled on the next step, which converts their aggregates.
    values[_RULE_VERSION] = "" if format_ < 7 else intern(values[_RULE_VERSION])
    for slot in _NAME_KEYED:
        if values[slot]:
            values[slot] = {intern(key): value for key, value in values[slot].items()}
    if format_ < 5:
        for key, value in features.items():
            if key.startswith(DISTINCT_PREFIX):
                features[key] = distinct_from_dict(value)
    values[_BUFFER] = [Event(*fields) for fields in values[_BUFFER]]
    if _INTERPRETED:
        # A bare object: no containers made only to be replaced (bench/HISTORY.md, session 31).
        state = CustomerState.__new__(CustomerState)
        first = 0
    else:  # compiled by mypyc: its classes have no bare __new__
        state = CustomerState(values[0])
        first = 1
    for name, value in zip(STATE_SLOTS[first:], values[first:]):
        setattr(state, name, value)
    return state


def state_size(state: CustomerState) -> int:
    """Serialized size in bytes: what one customer costs in the state backend."""
    return len(encode_state(state))


_getsizeof = getsizeof
_event_fields = attrgetter(*(f.name for f in fields(Event)))
# Objects no state owns: shared by every state, or preallocated by the interpreter.
_SHARED = (type(None), bool)


def state_memory(state: CustomerState) -> int:
    """About how many bytes of Python memory the decoded state holds: each object's
    ``sys.getsizeof`` (an array's buffer, a dict's table included), over everything the state
    owns. Not counted: the strings that key its dicts (feature keys, segment ids, score and
    profile names: interned, one copy shared by every state), small ints (preallocated), None and
    bools; counted: the customer id, and every other string, number and container. Within a few
    percent of ``tracemalloc`` over decoded states of the live bench's feed (see
    tests/unit/runtime/test_state_cache.py). Walks the state's few dozen objects: sample it."""
    total = _getsizeof(state)
    stack: list[Any] = list(_slots(state))
    pop, push, extend = stack.pop, stack.append, stack.extend
    while stack:
        value = pop()
        kind = type(value)
        if kind is int:
            if not -5 <= value <= 256:
                total += _getsizeof(value)
        elif kind is dict:
            total += _getsizeof(value)
            for key, item in value.items():
                if type(key) is not str:
                    push(key)
                push(item)
        elif kind is list or kind is tuple:
            total += _getsizeof(value)
            extend(value)
        elif kind is Event:
            total += _getsizeof(value)
            extend(_event_fields(value))
        elif kind in _SHARED:
            continue
        else:  # float, str, bytes, array: no references to follow
            total += _getsizeof(value)
    return total
