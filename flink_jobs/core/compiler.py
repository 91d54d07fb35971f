"""Compile a RuleSet into shared features and evaluator nodes.

Each condition becomes a small node object of its construct (``core/conditions/``) with
``holds(state, now, book)`` (fast path) and ``explain(state, now)`` (only when a membership
changes, for the change's reason and the CLI); the features the nodes read are shared between
rules (``conditions.Builder``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Iterable

from .conditions import Builder, CompileError, Node, compile_condition
from .features import Feature
from .model import Condition, RuleSet, Segment, segment_references
from .windows import DEFAULT_HORIZON

__all__ = ["CompileError", "CompiledRules", "CompiledSegment", "compile_rules"]


# ---- compiled rules ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CompiledSegment:
    segment: Segment
    node: Node
    # The segment's id, interned (see compile_rules): the key of the customer's ``members``.
    id: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", sys.intern(self.segment.id))


@dataclass(frozen=True)
class CompiledRules:
    """Segments in dependency order, the features they read, and the indexes that let the engine
    re-evaluate only the segments whose inputs changed at an instant."""

    rules: RuleSet
    segments: tuple[CompiledSegment, ...]
    features: tuple[Feature[Any], ...]
    by_event_type: dict[str, tuple[Feature[Any], ...]]
    # segment positions (in ``segments``) that read each feature / the profile / the scores
    readers: dict[str, frozenset[int]]
    profile_readers: frozenset[int]
    score_readers: frozenset[int]
    # positions of the segments that read each segment's membership (``segment:`` or ``exclude``)
    dependents: tuple[frozenset[int], ...]
    time_features: tuple[Feature[Any], ...]  # features whose value can change with time alone
    generic_aggregates: bool  # the per-event-type aggregates are among ``features``

    @property
    def version(self) -> str:
        return self.rules.version

    @property
    def state_version(self) -> str:
        """What a customer state kept under these compiled rules records: the rule version, marked
        when the generic aggregates are left out. A state that records another is reconciled, so
        switching them off drops them from every state, and switching them on starts them."""
        return self.version if self.generic_aggregates else f"{self.version}+no-generic"


class _RuleCompiler(Builder):
    def node(self, condition: Condition) -> Node:
        return compile_condition(condition, self)


def compile_rules(rules: RuleSet, *, horizon: int = DEFAULT_HORIZON, generic_aggregates: bool = True) -> CompiledRules:
    """Compile every segment; raise CompileError on unknown references or cycles."""
    builder = _RuleCompiler(horizon, generic_aggregates, rules.catalog)
    ordered = _dependency_order(rules.segments)
    compiled = [CompiledSegment(s, builder.node(s.condition)) for s in ordered]
    features = builder.build()
    # Every customer state holds these keys (and the segment ids): interned, one string object is
    # shared by all the states in memory instead of one per state (the rules reach a worker
    # unpickled, and marshal.loads interns only what was interned when written); see
    # state.decode_state and bench/HISTORY.md ("Interned keys").
    for feature in features.values():
        feature.key = sys.intern(feature.key)
    for c in compiled:
        c.node.bind(features)
    index: dict[str, list[Feature[Any]]] = {}
    for feature in features.values():
        for event_type in sorted(feature.event_types):
            index.setdefault(event_type, []).append(feature)
    readers: dict[str, set[int]] = {}
    profile_readers: set[int] = set()
    score_readers: set[int] = set()
    position = {c.id: i for i, c in enumerate(compiled)}
    dependents: list[set[int]] = [set() for _ in compiled]
    for i, c in enumerate(compiled):
        keys: set[str] = set()
        flags: set[str] = set()
        c.node.inputs(keys, flags)
        for key in keys:
            readers.setdefault(key, set()).add(i)
        if "profile" in flags:
            profile_readers.add(i)
        if "score" in flags:
            score_readers.add(i)
        for ref in segment_references(c.segment):
            dependents[position[ref]].add(i)
    return CompiledRules(
        rules=rules,
        segments=tuple(compiled),
        features=tuple(features.values()),
        by_event_type={t: tuple(fs) for t, fs in index.items()},
        readers={k: frozenset(v) for k, v in readers.items()},
        profile_readers=frozenset(profile_readers),
        score_readers=frozenset(score_readers),
        dependents=tuple(frozenset(d) for d in dependents),
        time_features=tuple(f for f in features.values() if f.time_driven and f.key in readers),
        generic_aggregates=generic_aggregates,
    )


def _dependency_order(segments: Iterable[Segment]) -> list[Segment]:
    by_id = {s.id: s for s in segments}
    order: list[Segment] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(sid: str, path: list[str]) -> None:
        mark = state.get(sid)
        if mark == 2:
            return
        if mark == 1:
            cycle = " -> ".join([*path[path.index(sid):], sid])
            raise CompileError(f"segment references form a cycle: {cycle}")
        segment = by_id.get(sid)
        if segment is None:
            raise CompileError(f"segment {path[-1]!r} references unknown segment {sid!r}")
        state[sid] = 1
        for ref in segment_references(segment):
            visit(ref, [*path, sid])
        state[sid] = 2
        order.append(segment)

    for sid in sorted(by_id):
        visit(sid, [])
    return order


# Pickled rules reach the workers; compiled by mypyc these classes need it (see pickling.py).
from .pickling import register_dataclasses  # noqa: E402

register_dataclasses(globals(), __name__)
