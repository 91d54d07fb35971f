"""Features: the per-customer aggregates that conditions read.

Each feature is a stateless object (its parameters) plus a small piece of state held in
``CustomerState.features[feature.key]``. Features are shared: two rules counting the same events at
the same resolution read one feature. Every time-driven change a feature can cause (a bucket
leaving a window, a deadline, an expiry) is announced as a timer, so the engine evaluates exactly
at the instants where a condition can flip.

The bucketed features here serve several constructs (aggregates, RFM, the generic aggregates and
the models' inputs); a feature only one construct reads lives in that construct's module
(``core/conditions/``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from array import array
from bisect import bisect_left
from hashlib import blake2b
from typing import Any, Generic, Iterator, Sequence, TypeVar

from .model import Event, EventSelector, PropertyValue
from .windows import exit_time, first_bucket

INF = float("inf")
# What a feature keeps for one customer in ``CustomerState.features``: each feature's own type
# (an array of buckets, a list, an instant), which only the feature reads.
FeatureState = Any
S = TypeVar("S")


class TimerBook:
    """Refcounted wake-up instants of one customer, recording what Flink must add or delete."""

    __slots__ = ("timers", "now", "added", "removed")

    def __init__(self, timers: dict[int, int], now: int) -> None:
        self.timers = timers
        self.now = now
        self.added: set[int] = set()
        self.removed: set[int] = set()

    def want(self, t: int) -> None:
        if t <= self.now:
            return
        count = self.timers.get(t)
        if count is None:
            self.timers[t] = 1
            if t in self.removed:
                self.removed.discard(t)
            else:
                self.added.add(t)
        else:
            self.timers[t] = count + 1

    def release(self, t: int) -> None:
        count = self.timers.get(t)
        if count is None:
            return
        if count > 1:
            self.timers[t] = count - 1
            return
        del self.timers[t]
        if t in self.added:
            self.added.discard(t)
        else:
            self.removed.add(t)


class Feature(ABC, Generic[S]):
    """Base: a named piece of per-customer state (of type ``S``) fed by the events its selectors
    match."""

    key: str
    event_types: frozenset[str]

    @abstractmethod
    def init(self) -> S:
        """A fresh, empty state."""

    @abstractmethod
    def apply(self, fs: S, events: list[Event], now: int, book: TimerBook) -> S:
        """Apply the events of instant ``now`` (all with event_time == now); return the new state."""

    def apply_late(self, fs: S, event: Event, now: int, book: TimerBook) -> S:
        """Apply an event older than the clock (within the allowed lateness). Default: ignore."""
        return fs

    def rearm(self, fs: S, now: int, book: TimerBook) -> None:
        """Announce the timers this state needs (after the rules, and so the windows, changed)."""

    def empty(self, fs: S) -> bool:
        return not fs

    def adopt(self, features: dict[str, FeatureState]) -> None:
        """Take over this feature's data from a state kept under an earlier layout (another key,
        still in ``features``); called when a state is reconciled and lacks ``self.key``."""

    def flips_at(self, fs: S, now: int) -> bool:
        """Does a time-driven change (a timer this feature asked for) fall on ``now``?"""
        return False

    @property
    def time_driven(self) -> bool:
        """Whether the passing of time alone can change what this feature reports."""
        return False


class _BucketedFeature(Feature["array[float]"]):
    """A feature kept as time buckets at one resolution (one flat array, sorted by bucket), read
    through windows."""

    resolution: int
    windows: tuple[int, ...]

    @abstractmethod
    def bucket_indexes(self, fs: array[float]) -> Sequence[float]:
        """The buckets held, in order."""

    @abstractmethod
    def next_exit(self, fs: array[float], now: int, window: int) -> int | None:
        """When the oldest bucket still inside the window leaves it (None if the window is empty)."""

    def flips_at(self, fs: array[float], now: int) -> bool:
        r = self.resolution
        if now % r:
            return False
        current = now // r
        buckets = self.bucket_indexes(fs)
        for window in self.windows:
            leaving = current - window // r
            i = bisect_left(buckets, leaving)
            if i < len(buckets) and buckets[i] == leaving:
                return True
        return False

    @property
    def time_driven(self) -> bool:
        return bool(self.windows)


# ---- bucketed statistics ------------------------------------------------------------------------


class StatsFeature(_BucketedFeature):
    """Time buckets of (count, and per number property: n, sum, min, max), kept in one flat array
    of doubles, sorted by bucket: ``[bucket, count, n0, sum0, min0, max0, n1, sum1, ...]`` per
    bucket, for ``props``.

    One array instead of a dict of lists: a state holds about fourteen of these, and as dicts they
    were half of its Python objects, its memory and the time to encode it (every change of a live
    customer is encoded again; ``state.encode_state`` writes an array as its bytes). Counts are
    exact as doubles (below 2**53); sums were floats before.

    The layout depends on ``props``, so the key names them: a rule change that adds or drops a
    property of the same events and resolution makes a new key, and ``adopt`` carries the counts
    and the properties both layouts have over to it.
    """

    def __init__(
        self,
        selector: EventSelector,
        props: tuple[str, ...],
        resolution: int,
        retention: int,
        windows: tuple[int, ...] = (),
    ) -> None:
        self.selector = selector
        self.props = props
        self.resolution = resolution
        self.retention = retention
        self.windows = windows
        self.base = stats_key(selector, resolution)
        self.key = f"{self.base}|{','.join(props)}"
        self.event_types = frozenset(selector.event_types)
        self.width = 2 + 4 * len(props)
        self._blank = array("d", [0] + [0, 0.0, INF, -INF] * len(props))  # a new bucket, after its index
        self._slots = tuple((prop, 2 + 4 * i) for i, prop in enumerate(props))
        self._retained = retention // resolution  # buckets a window of `retention` spans

    def init(self) -> array[float]:
        return array("d")

    def apply(self, fs: array[float], events: list[Event], now: int, book: TimerBook) -> array[float]:
        # The engine only hands over events of this feature's types: only `where` is left to check.
        where = self.selector.where
        for event in events:
            if not where or self.selector.matches(event):
                self._add(fs, event, now, book)
        return fs

    def apply_late(self, fs: array[float], event: Event, now: int, book: TimerBook) -> array[float]:
        if self.selector.matches(event):
            self._add(fs, event, now, book)
        return fs

    def _add(self, fs: array[float], event: Event, now: int, book: TimerBook) -> None:
        r, w = self.resolution, self.width
        bucket = event.event_time // r
        last = len(fs) - w
        if last >= 0 and fs[last] == bucket:  # the usual case: the newest bucket again
            at = last
        else:
            oldest = now // r - self._retained + 1
            if bucket < oldest:
                return  # older than anything a window can look at
            if last < 0 or fs[last] < bucket:
                if last >= 0 and fs[0] < oldest:
                    del fs[: self._start(fs, oldest)]
                at = len(fs)
                fs.append(bucket)
                fs.extend(self._blank)
            else:  # a late event: an older bucket, held or not
                at = self._start(fs, bucket)
                if fs[at] != bucket:
                    fs[at:at] = array("d", [bucket]) + self._blank
        fs[at + 1] += 1
        if self._slots:
            props = event.properties
            for prop, base in self._slots:
                value = props.get(prop)
                if value is None or type(value) is bool or not isinstance(value, (int, float)):
                    continue
                i = at + base
                fs[i] += 1
                fs[i + 1] += value
                if value < fs[i + 2]:
                    fs[i + 2] = value
                if value > fs[i + 3]:
                    fs[i + 3] = value

    def _start(self, fs: array[float], oldest: int) -> int:
        """Offset of the first record whose bucket is >= oldest (len(fs) if none)."""
        if not fs or fs[0] >= oldest:
            return 0
        return bisect_left(fs[:: self.width], oldest) * self.width

    def value(self, fs: array[float], now: int, window: int, kind: str, prop: str | None) -> float | int | None:
        """count / sum / avg / min / max over the window ending at ``now``; None when undefined."""
        w = self.width
        start = self._start(fs, first_bucket(now, window, self.resolution))
        if kind == "count":
            return int(sum(fs[start + 1 :: w]))
        base = start + 2 + 4 * self.props.index(prop)
        n = sum(fs[base::w])
        if kind == "sum" or kind == "avg":
            total = sum(fs[base + 1 :: w], 0.0)
            if kind == "sum":
                return total
            return total / n if n else None
        if not n:
            return None
        return min(fs[base + 2 :: w]) if kind == "min" else max(fs[base + 3 :: w])

    def bucket_indexes(self, fs: array[float]) -> array[float]:
        return fs[:: self.width]

    def next_exit(self, fs: array[float], now: int, window: int) -> int | None:
        r = self.resolution
        start = self._start(fs, now // r - window // r + 1)
        return exit_time(int(fs[start]), window, r) if start < len(fs) else None

    def buckets(self, fs: array[float], oldest: int, newest: int) -> Iterator[tuple[int, int]]:
        """(bucket, offset of its record) for the buckets held in ``oldest..newest``."""
        w = self.width
        for at in range(self._start(fs, oldest), len(fs), w):
            bucket = int(fs[at])
            if bucket > newest:
                return
            yield bucket, at

    def adopt(self, features: dict[str, FeatureState]) -> None:
        """Carry the data of this feature under an earlier layout over to ``self.key``: the state
        of a rule set whose rules summed other properties of the same events at the same
        resolution (key ``base|props``), or of state format 1 (key ``base``, a dict of
        ``bucket -> [count, n0, sum0, min0, max0, ...]``, taken as written for these properties
        when it has as many, else its counts only). Properties new to this layout start empty."""
        for key in features:
            if key == self.base or (key.startswith(self.base) and key.rpartition("|")[0] == self.base):
                break
        else:
            return
        old = features.pop(key)
        blank = list(self._blank)
        out = array("d")
        if isinstance(old, dict):  # state format 1
            records = sorted(old.items())
            for bucket, record in records:
                out.append(bucket)
                out.extend(record if len(record) == len(blank) else [record[0], *blank[1:]])
        else:
            old_props = [p for p in key.rpartition("|")[2].split(",") if p]
            old_w = 2 + 4 * len(old_props)
            moves = [(2 + 4 * old_props.index(p), base) for p, base in self._slots if p in old_props]
            for at in range(0, len(old), old_w):
                record = [old[at], *blank]
                record[1] = old[at + 1]
                for src, dst in moves:
                    record[dst : dst + 4] = old[at + src : at + src + 4]
                out.extend(record)
        if out:
            features[self.key] = out


def stats_key(selector: EventSelector, resolution: int) -> str:
    """What identifies a StatsFeature's events and buckets (its key adds the properties)."""
    return f"stats|{selector.key()}|{resolution}"


DISTINCT_PREFIX = "distinct|"  # how every DistinctFeature's key starts (state.decode_state converts them)


def distinct_key(selector: EventSelector, prop: str, resolution: int) -> str:
    return f"{DISTINCT_PREFIX}{selector.key()}|{prop}|{resolution}"


def distinct_hash(value: PropertyValue) -> float:
    """A property value as a DistinctFeature keeps it: a stable 53-bit hash, held exactly by a
    double. Values Python finds equal hash alike (1, 1.0 and True; "1" is another value), and
    it does not change between processes (``hash()`` of a string does; the state outlives them).
    Two of a customer's values in one window share a hash with odds of about 1 in 2**53 per pair."""
    hashed = _DISTINCT_HASHES.get(value)
    if hashed is None:
        if isinstance(value, str):
            data = b"s" + value.encode()
        elif isinstance(value, float) and not value.is_integer():
            data = b"f" + repr(value).encode()
        else:
            data = b"i" + str(int(value)).encode()
        hashed = float(int.from_bytes(blake2b(data, digest_size=8).digest(), "little") >> 11)
        if len(_DISTINCT_HASHES) >= 65_536:
            _DISTINCT_HASHES.clear()
        _DISTINCT_HASHES[value] = hashed
    return hashed


_DISTINCT_HASHES: dict[PropertyValue, float] = {}  # most values repeat (categories, product ids): hashed once per process


class DistinctFeature(_BucketedFeature):
    """Sparse time buckets of the distinct values of one property, in one flat array of doubles
    sorted by bucket: ``[bucket, n, hash_1, ..., hash_n, bucket, n, ...]``, a value as its
    ``distinct_hash``.

    One array, not a dict of buckets each with a list of values: a decoded state is allocated on
    every miss of the job's state cache and freed on every eviction, encoded again after nearly
    every change, and its distinct buckets were a fifth of its Python objects (about 13 of 60 in
    the live bench's feed). A bucket holds the values of one resolution step (a few categories a
    minute), so the linear search when adding one is cheap; a property with hundreds of values per
    bucket pays it. Less memory, and a quicker encode and free, than the dict layout
    (bench/HISTORY.md). (States of format 4 and older hold a dict of lists or sets;
    ``state.decode_state`` converts them with ``distinct_from_dict``.)"""

    def __init__(
        self, selector: EventSelector, prop: str, resolution: int, retention: int, windows: tuple[int, ...]
    ) -> None:
        self.selector = selector
        self.prop = prop
        self.resolution = resolution
        self.retention = retention
        self.windows = windows
        self.key = distinct_key(selector, prop, resolution)
        self.event_types = frozenset(selector.event_types)

    def init(self) -> array[float]:
        return array("d")

    def apply(self, fs: array[float], events: list[Event], now: int, book: TimerBook) -> array[float]:
        for event in events:
            self.apply_late(fs, event, now, book)
        return fs

    def apply_late(self, fs: array[float], event: Event, now: int, book: TimerBook) -> array[float]:
        if not self.selector.matches(event):
            return fs
        value = event.properties.get(self.prop)
        if value is None:
            return fs
        r = self.resolution
        bucket = event.event_time // r
        oldest = first_bucket(now, self.retention, r)
        if bucket < oldest:
            return fs
        hashed = distinct_hash(value)
        at, end, stale = 0, len(fs), 0
        while at < end:  # the record of `bucket`, or where it goes
            b = fs[at]
            if b >= bucket:
                break
            at += 2 + int(fs[at + 1])
            if b < oldest:
                stale = at
        if at < end and fs[at] == bucket:
            n = int(fs[at + 1])
            if hashed not in fs[at + 2 : at + 2 + n]:
                fs.insert(at + 2 + n, hashed)
                fs[at + 1] = n + 1
            return fs
        fs[at:at] = array("d", (bucket, 1, hashed))
        if stale:  # a new bucket: the ones no window reaches any more go
            del fs[:stale]
        return fs

    def bucket_indexes(self, fs: array[float]) -> list[float]:
        out, at, end = [], 0, len(fs)
        while at < end:
            out.append(fs[at])
            at += 2 + int(fs[at + 1])
        return out

    def next_exit(self, fs: array[float], now: int, window: int) -> int | None:
        oldest = first_bucket(now, window, self.resolution)
        for b in self.bucket_indexes(fs):
            if b >= oldest:
                return exit_time(int(b), window, self.resolution)
        return None

    def value(self, fs: array[float], now: int, window: int) -> int:
        oldest = first_bucket(now, window, self.resolution)
        at, end = 0, len(fs)
        n = int(fs[1]) if end else 0
        if 2 + n == end:  # one bucket (the usual case): its values are distinct already
            return n if fs[0] >= oldest else 0
        seen: set[float] = set()
        while at < end:
            n = int(fs[at + 1])
            if fs[at] >= oldest:
                seen.update(fs[at + 2 : at + 2 + n])
            at += 2 + n
        return len(seen)


def distinct_from_dict(buckets: dict[int, Any]) -> array[float]:
    """A DistinctFeature's buckets as state formats 1-4 kept them (bucket -> a set or list of
    values) in the flat layout of format 5."""
    out = array("d")
    for bucket in sorted(buckets):
        hashes = list(dict.fromkeys(distinct_hash(v) for v in buckets[bucket]))
        out.extend((bucket, len(hashes), *hashes))
    return out


# ---- time since last --------------------------------------------------------------------------------


class LastTimeFeature(Feature["int | None"]):
    """The time of the last matching event; ``flips`` are the offsets at which comparisons change."""

    def __init__(self, selector: EventSelector, flips: tuple[int, ...]) -> None:
        self.selector = selector
        self.flips = flips
        self.key = f"last|{selector.key()}"
        self.event_types = frozenset(selector.event_types)

    def init(self) -> None:
        return None

    def empty(self, fs: int | None) -> bool:
        return fs is None

    def apply(self, fs: int | None, events: list[Event], now: int, book: TimerBook) -> int | None:
        if not any(self.selector.matches(e) for e in events):
            return fs
        if fs is not None:
            for offset in self.flips:
                book.release(fs + offset)
        for offset in self.flips:
            book.want(now + offset)
        return now

    def apply_late(self, fs: int | None, event: Event, now: int, book: TimerBook) -> int | None:
        if not self.selector.matches(event) or (fs is not None and fs >= event.event_time):
            return fs
        if fs is not None:
            for offset in self.flips:
                book.release(fs + offset)
        for offset in self.flips:
            book.want(event.event_time + offset)
        return event.event_time

    def rearm(self, fs: int | None, now: int, book: TimerBook) -> None:
        if fs is not None:
            for offset in self.flips:
                book.want(fs + offset)

    def flips_at(self, fs: int | None, now: int) -> bool:
        return fs is not None and (now - fs) in self.flips

    @property
    def time_driven(self) -> bool:
        return True
