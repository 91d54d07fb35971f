"""What compiling a rule set collects: the features its conditions read, shared between them.

Two rules counting the same events at the same resolution read one feature, so a construct's
``compile`` does not build features itself: it asks the builder for one by its key (``stats``,
``distinct``, ``last``, or ``feature`` with a spec of its own), and its node takes the built
feature once every rule has said which windows and properties it needs (``Node.bind``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Protocol

from ..catalog import Catalog
from ..features import (
    DistinctFeature,
    Feature,
    LastTimeFeature,
    StatsFeature,
    TieredStatsFeature,
    distinct_key,
    stats_key,
    tiered_key,
)
from ..model import Comparison, Condition, EventSelector
from ..windows import GENERIC_RESOLUTIONS, TIERS, resolution_for
from .base import Node

# How long each resolution keeps buckets for the generic (rule-independent) aggregates.
_GENERIC_RETENTION = {resolution: limit for limit, resolution in TIERS}


class FeatureSpec(Protocol):
    """What the rules need of one feature, gathered over all of them; built once they are read."""

    key: str
    # Where the feature goes among all of them: (kind, key); features are kept in this order.
    order: tuple[int, str]

    def build(self) -> Feature[Any]: ...


class _StatsSpec:
    def __init__(self, selector: EventSelector, resolution: int, retention: int, props: set[str]) -> None:
        self.key = stats_key(selector, resolution)
        self.order = (0, self.key)
        self.selector, self.resolution, self.retention = selector, resolution, retention
        self.props = props
        self.windows: set[int] = set()

    def build(self) -> StatsFeature:
        return StatsFeature(
            self.selector, tuple(sorted(self.props)), self.resolution, self.retention, tuple(sorted(self.windows))
        )


class _TieredSpec:
    """The generic aggregates of one event type: every generic resolution in one feature."""

    def __init__(self, selector: EventSelector, tiers: tuple[tuple[int, int], ...], props: set[str]) -> None:
        self.key = tiered_key(selector)
        self.order = (0, self.key)
        self.selector, self.tiers, self.props = selector, tiers, props
        self.windows: set[int] = set()

    def build(self) -> TieredStatsFeature:
        return TieredStatsFeature(self.selector, tuple(sorted(self.props)), self.tiers, tuple(sorted(self.windows)))


class _DistinctSpec:
    def __init__(self, selector: EventSelector, prop: str, resolution: int) -> None:
        self.key = distinct_key(selector, prop, resolution)
        self.order = (1, self.key)
        self.selector, self.prop, self.resolution = selector, prop, resolution
        self.retention = 0
        self.windows: set[int] = set()

    def build(self) -> DistinctFeature:
        return DistinctFeature(self.selector, self.prop, self.resolution, self.retention, tuple(sorted(self.windows)))


class _LastSpec:
    def __init__(self, selector: EventSelector) -> None:
        self.key = f"last|{selector.key()}"
        self.order = (2, self.key)
        self.selector = selector
        self.flips: set[int] = set()

    def build(self) -> LastTimeFeature:
        return LastTimeFeature(self.selector, tuple(sorted(self.flips)))


class Built:
    """A spec that is the feature itself: a construct's feature with nothing to gather."""

    def __init__(self, feature: Feature[Any], kind: int) -> None:
        self.key = feature.key
        self.order = (kind, feature.key)
        self.feature = feature

    def build(self) -> Feature[Any]:
        return self.feature


class Builder(ABC):
    """Gathers the features of one rule set; ``node`` compiles a condition (for constructs made
    of other conditions)."""

    def __init__(self, horizon: int, generic: bool, catalog: Catalog) -> None:
        self.horizon = horizon
        self.generic = generic
        self.catalog = catalog
        self._specs: dict[str, FeatureSpec] = {}
        if generic:
            tiers = tuple((r, _GENERIC_RETENTION.get(r, horizon)) for r in GENERIC_RESOLUTIONS)
            for event_type in catalog.event_types:
                spec = _TieredSpec(EventSelector((event_type,)), tiers, set(catalog.numeric_properties(event_type)))
                self._specs[spec.key] = spec

    @abstractmethod
    def node(self, condition: Condition) -> Node:
        """The compiled node of a condition."""

    def feature(self, spec: FeatureSpec) -> FeatureSpec:
        """The spec already gathered under ``spec.key``, else ``spec`` (now gathered)."""
        return self._specs.setdefault(spec.key, spec)

    def stats(self, selector: EventSelector, prop: str | None, window: int) -> str:
        """The key of the counts (and ``prop``'s n, sum, min, max) of the selected events at the
        resolution of ``window``."""
        resolution = resolution_for(window)
        if resolution in GENERIC_RESOLUTIONS:  # the generic aggregates of one event type, if kept
            tiered = self._specs.get(tiered_key(selector))
            if isinstance(tiered, _TieredSpec):
                if prop is not None:
                    tiered.props.add(prop)
                tiered.windows.add(window)
                return tiered.key
        spec = self._specs.get(stats_key(selector, resolution))
        if not isinstance(spec, _StatsSpec):
            spec = _StatsSpec(selector, resolution, window, set())
            self._specs[spec.key] = spec
        if prop is not None:
            spec.props.add(prop)
        spec.retention = max(spec.retention, window)
        spec.windows.add(window)
        return spec.key

    def distinct(self, selector: EventSelector, prop: str, window: int) -> str:
        """The key of the distinct values of ``prop`` at the resolution of ``window``."""
        spec = self.feature(_DistinctSpec(selector, prop, resolution_for(window)))
        assert isinstance(spec, _DistinctSpec)
        spec.retention = max(spec.retention, window)
        spec.windows.add(window)
        return spec.key

    def last(self, selector: EventSelector, cmp: Comparison) -> str:
        """The key of the time of the last selected event, which ``cmp`` compares an age with."""
        spec = self.feature(_LastSpec(selector))
        assert isinstance(spec, _LastSpec)
        offset = int(cmp.value)  # type: ignore[arg-type]
        # "age <= d" and "age > d" flip one millisecond after last + d; "<" and ">=" flip at it.
        spec.flips.add(offset + 1 if cmp.op in ("at_most", "greater_than") else offset)
        return spec.key

    def build(self) -> dict[str, Feature[Any]]:
        """Every feature gathered, by key, in a stable order."""
        return {spec.key: spec.build() for spec in sorted(self._specs.values(), key=lambda s: s.order)}
