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
from typing import Any, Callable, Final, Generic, Iterator, Sequence, TypeVar

from .model import Event, EventSelector, PropertyValue
from .windows import GENERIC_RESOLUTIONS, exit_time, first_bucket, resolution_for

INF = float("inf")
# Up to this many records, a window's count is summed by a loop rather than over a slice.
_FEW_RECORDS: Final = 8
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

    def adopt(self, features: dict[str, FeatureState], now: int) -> None:
        """Take over this feature's data from a state kept under an earlier layout (another key,
        still in ``features``); called when a state whose clock is ``now`` is reconciled and
        lacks ``self.key``."""

    def flips_at(self, fs: S, now: int) -> bool:
        """Does a time-driven change (a timer this feature asked for) fall on ``now``?"""
        return False

    @property
    def time_driven(self) -> bool:
        """Whether the passing of time alone can change what this feature reports."""
        return False


class BucketedFeature(Feature["array[float]"]):
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


class StatsFeature(BucketedFeature):
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
        self._count(fs, at, event)

    def _count(self, fs: array[float], at: int, event: Event) -> None:
        """Add ``event`` to the record at offset ``at``."""
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

    def _merge(self, out: array[float], to: int, fs: array[float], at: int) -> None:
        """Add the record of ``fs`` at offset ``at`` to the record of ``out`` at offset ``to``."""
        out[to + 1] += fs[at + 1]
        for _, base in self._slots:
            i, j = to + base, at + base
            out[i] += fs[j]
            out[i + 1] += fs[j + 1]
            if fs[j + 2] < out[i + 2]:
                out[i + 2] = fs[j + 2]
            if fs[j + 3] > out[i + 3]:
                out[i + 3] = fs[j + 3]

    def _start(self, fs: array[float], oldest: int) -> int:
        """Offset of the first record whose bucket is >= oldest (len(fs) if none)."""
        if not fs or fs[0] >= oldest:
            return 0
        return bisect_left(fs[:: self.width], oldest) * self.width

    def value(self, fs: array[float], now: int, window: int, kind: str, prop: str | None) -> float | int | None:
        """count / sum / avg / min / max over the window ending at ``now``; None when undefined."""
        w = self.width
        start = self._start(fs, self._window_start(now, window))
        if kind == "count":
            if len(fs) - start > _FEW_RECORDS * w:
                return int(sum(fs[start + 1 :: w]))
            # A few records (the usual window): a typed loop, compiled on doubles, costs less
            # than a slice and a sum over it (bench/HISTORY.md, session 33).
            n = 0.0
            at = start + 1
            end = len(fs)
            while at < end:
                count: float = fs[at]
                n += count
                at += w
            return int(n)
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

    def _window_start(self, now: int, window: int) -> int:
        """The key of the oldest record a window ending at ``now`` reads (here: a bucket index)."""
        return first_bucket(now, window, self.resolution)

    def bucket_indexes(self, fs: array[float]) -> array[float]:
        return fs[:: self.width]

    def next_exit(self, fs: array[float], now: int, window: int) -> int | None:
        r = self.resolution
        start = self._start(fs, now // r - window // r + 1)
        return exit_time(int(fs[start]), window, r) if start < len(fs) else None

    def buckets(self, fs: array[float], oldest: int, newest: int) -> Iterator[tuple[int, int]]:
        """(key, offset of its record) for the records keyed in ``oldest..newest``: bucket
        indexes (a TieredStatsFeature's records: their start in ms)."""
        w = self.width
        for at in range(self._start(fs, oldest), len(fs), w):
            bucket = int(fs[at])
            if bucket > newest:
                return
            yield bucket, at

    def adopt(self, features: dict[str, FeatureState], now: int) -> None:
        """Carry the data of this feature under an earlier layout over to ``self.key``: the state
        of a rule set whose rules summed other properties of the same events at the same
        resolution (key ``base|props``), or of state format 1 (key ``base``, a dict of
        ``bucket -> [count, n0, sum0, min0, max0, ...]``, taken as written for these properties
        when it has as many, else its counts only), or the generic aggregates of the same events
        (a ``TieredStatsFeature``, when they were switched off), whose records are merged into
        this resolution's buckets. Properties new to this layout start empty."""
        if self._adopt_layout(features):
            return
        key = _key_under(features, tiered_key(self.selector))
        if key is None or self.resolution not in GENERIC_RESOLUTIONS:
            return
        # Not popped: a feature at each resolution may adopt the same records.
        out = self._rebucketed(self._relayout(features[key], key))
        if out:
            features[self.key] = out

    def _adopt_layout(self, features: dict[str, FeatureState]) -> bool:
        """Take over this feature kept with other properties (or in state format 1), if it is
        in ``features``: whether it was."""
        key = _key_under(features, self.base)
        if key is None:
            return False
        out = self._relayout(features.pop(key), key)
        if out:
            features[self.key] = out
        return True

    def _relayout(self, old: FeatureState, key: str) -> array[float]:
        """The records of a feature with the same events kept under ``key`` (its properties after
        the last ``|``; a dict: state format 1), in this feature's layout, keys unchanged."""
        blank = list(self._blank)
        out = array("d")
        if isinstance(old, dict):  # state format 1
            for bucket, record in sorted(old.items()):
                out.append(bucket)
                out.extend(record if len(record) == len(blank) else [record[0], *blank[1:]])
            return out
        old_props = [p for p in key.rpartition("|")[2].split(",") if p]
        old_w = 2 + 4 * len(old_props)
        if old_props == list(self.props):
            return array("d", old)
        moves = [(2 + 4 * old_props.index(p), base) for p, base in self._slots if p in old_props]
        for at in range(0, len(old), old_w):
            record = [old[at], *blank]
            record[1] = old[at + 1]
            for src, dst in moves:
                record[dst : dst + 4] = old[at + src : at + src + 4]
            out.extend(record)
        return out

    def _rebucketed(self, records: array[float]) -> array[float]:
        """Records keyed by their start in ms (a TieredStatsFeature's) as this resolution's
        buckets: each goes to the bucket its start falls in."""
        r = self.resolution
        return self._rekeyed(records, lambda start: start // r, 0, len(records))

    def _rekeyed(self, records: array[float], key_of: Callable[[int], int | None], a: int, b: int) -> array[float]:
        """The records between offsets ``a`` and ``b``, each under ``key_of(its key)`` (None:
        dropped; the new keys in the same order), those with the same new key merged."""
        w = self.width
        out = array("d")
        for at in range(a, b, w):
            key = key_of(int(records[at]))
            if key is None:
                continue
            if out and out[-w] == key:
                self._merge(out, len(out) - w, records, at)
            else:
                out.append(key)
                out.extend(records[at + 1 : at + w])
        return out


def _key_under(features: dict[str, FeatureState], base: str) -> str | None:
    """The key in ``features`` of a StatsFeature with this base (``base`` itself in state format
    1, else ``base|props``), if any."""
    for key in features:
        if key == base or (key.startswith(base) and key.rpartition("|")[0] == base):
            return key
    return None


def stats_key(selector: EventSelector, resolution: int) -> str:
    """What identifies a StatsFeature's events and buckets (its key adds the properties)."""
    return f"stats|{selector.key()}|{resolution}"


def tiered_key(selector: EventSelector) -> str:
    """What identifies a TieredStatsFeature's events (its key adds the properties)."""
    return f"stats|{selector.key()}|tiered"


class TieredStatsFeature(StatsFeature):
    """The generic aggregates of one event type: what a StatsFeature at each resolution of
    ``tiers`` (``(resolution, retention)``, finest first: minute, hour, day) would hold, kept
    once instead of once per resolution.

    The records (a StatsFeature's layout) are keyed by their start in milliseconds and are as fine
    as their age needs: a record starting at or after a tier's cutoff (the oldest bucket a window
    of the tier's retention reads) spans at most one bucket of that tier. So a record is a minute
    while a minute window can reach it, then merges into its hour, then into its day, and leaves
    after the last tier. A window reads the records that start inside it: each lies inside one of
    its buckets, and each starting before it ends before it, so every value and window exit is
    exactly a StatsFeature's at the window's resolution.

    An event feeds one record instead of three, and the state holds it once. The merging is
    lazy: when a new minute record is appended, the records that crossed a cutoff since the
    newest one before it started are merged (each record once per tier, on a bisected range).
    """

    def __init__(
        self,
        selector: EventSelector,
        props: tuple[str, ...],
        tiers: tuple[tuple[int, int], ...],
        windows: tuple[int, ...] = (),
    ) -> None:
        super().__init__(selector, props, tiers[0][0], tiers[-1][1], windows)
        self.base = tiered_key(selector)
        self.key = f"{self.base}|{','.join(props)}"
        self.tiers = tiers
        self._resolution_of = {window: resolution_for(window) for window in windows}

    def keeps(self, resolution: int, span: int) -> bool:
        """Whether windows of ``resolution`` up to ``span`` long can be read."""
        return any(r == resolution and retention >= span for r, retention in self.tiers)

    def _cutoffs(self, now: int) -> list[int]:
        """Per tier, the start of the oldest bucket it keeps at ``now``."""
        return [first_bucket(now, retention, r) * r for r, retention in self.tiers]

    def _tier(self, start: int, cutoffs: list[int]) -> int | None:
        """The resolution of the tier that holds what happened at ``start`` (None: kept no more)."""
        for (r, _), cutoff in zip(self.tiers, cutoffs):
            if start >= cutoff:
                return r
        return None

    def _record_key(self, start: int, cutoffs: list[int]) -> int | None:
        """The key of the record that holds what happened at ``start`` (None: kept no more)."""
        r = self._tier(start, cutoffs)
        return None if r is None else start - start % r

    def _resolution(self, window: int) -> int:
        return self._resolution_of.get(window) or resolution_for(window)

    def _add(self, fs: array[float], event: Event, now: int, book: TimerBook) -> None:
        w, r = self.width, self.resolution
        t = event.event_time
        start = t - t % r
        last = len(fs) - w
        if last >= 0:
            newest = fs[last]
            if newest == start:  # the newest minute again
                self._count(fs, last, event)
                return
            cutoff = first_bucket(now, self.tiers[0][1], r) * r  # the finest tier's
            if newest < start and start >= cutoff:  # a new minute: the usual case otherwise
                if fs[0] < cutoff:  # records older than the finest tier: some may have aged
                    self._settle(fs, int(newest), self._cutoffs(now))
                at = len(fs)
                fs.append(start)
                fs.extend(self._blank)
                self._count(fs, at, event)
                return
        cutoffs = self._cutoffs(now)
        key = self._record_key(start, cutoffs)
        if key is None:
            return  # older than anything a window can look at
        if last < 0 or fs[last] < key:
            if last >= 0:
                self._settle(fs, int(fs[last]), cutoffs)
            at = len(fs)
            fs.append(key)
            fs.extend(self._blank)
        else:  # a late event: an older record, held or not
            at = self._start(fs, key)
            if at == len(fs) or fs[at] != key:
                fs[at:at] = array("d", [key]) + self._blank
        self._count(fs, at, event)

    def _settle(self, fs: array[float], newest: int, cutoffs: list[int]) -> None:
        """Merge the records that crossed a tier's cutoff into their coarser buckets, and drop
        those past the last tier. The records were settled when the newest record (starting at
        ``newest``) was appended, at a clock no earlier than its start: so only those between
        the cutoffs at ``newest`` and now can have crossed, with the record before them (it may
        be the coarser bucket they join)."""
        w = self.width
        if fs[0] < cutoffs[-1]:
            del fs[: self._start(fs, cutoffs[-1])]
        before = self._cutoffs(newest)
        for i in range(len(self.tiers) - 2, -1, -1):  # the oldest range first: keys stay in order
            lo, hi = before[i], cutoffs[i]
            if lo >= hi:
                continue
            a, b = self._start(fs, lo), self._start(fs, hi)
            if a == b:
                continue
            if a:
                a -= w
            fs[a:b] = self._merged(fs, a, b, cutoffs)

    def _merged(self, fs: array[float], a: int, b: int, cutoffs: list[int]) -> array[float]:
        """The records between offsets ``a`` and ``b``, each under its key at these cutoffs,
        those with the same key merged."""
        return self._rekeyed(fs, lambda start: self._record_key(start, cutoffs), a, b)

    def _window_start(self, now: int, window: int) -> int:
        r = self._resolution(window)
        return first_bucket(now, window, r) * r

    def next_exit(self, fs: array[float], now: int, window: int) -> int | None:
        r = self._resolution(window)
        start = self._start(fs, self._window_start(now, window))
        return exit_time(int(fs[start]) // r, window, r) if start < len(fs) else None

    def flips_at(self, fs: array[float], now: int) -> bool:
        """Whether a record starting in a bucket that leaves a window at ``now`` is held, or a
        coarser one before it that may hold that bucket (merged when an event was just added:
        then the readers are evaluated anyway, so the answer may err on the side of yes)."""
        cutoffs: list[int] | None = None
        for window, r in self._resolution_of.items():
            if now % r:
                continue
            leaving = (now // r - window // r) * r  # the start of the bucket leaving the window
            at = self._start(fs, leaving)
            if at < len(fs) and fs[at] < leaving + r:
                return True
            if at:
                start = int(fs[at - self.width])
                if cutoffs is None:
                    cutoffs = self._cutoffs(now)
                # How far past its start that record may hold: its tier's resolution.
                if start + (self._tier(start, cutoffs) or self.tiers[-1][0]) > leaving:
                    return True
        return False

    def adopt(self, features: dict[str, FeatureState], now: int) -> None:
        """Carry over the data of the same events kept under an earlier layout: this feature with
        other properties (the rules summed others), or the StatsFeatures of state formats 1-6,
        one per resolution (or the rules' own, when the generic aggregates were off). From those,
        each stretch of time comes from the finest resolution that holds it: from its tier's
        cutoff at ``now`` (older buckets may lack late events), or its oldest bucket if later (a
        rule's own kept less). A coarser bucket reaching into that stretch keeps only its older
        part (its counts and sums less the finer records'; its minimum and maximum as they are,
        which any window reading it reads with those records). A resolution held by none starts
        from the coarser records (a window of it reads them whole from their start), and a
        late event older than a rule's own minute buckets kept is not carried over."""
        if self._adopt_layout(features):
            return
        w = self.width
        parts: list[array[float]] = []
        covered: int | None = None  # where what the finer resolutions hold starts
        for (r, _), cutoff in zip(self.tiers, self._cutoffs(now)):
            key = _key_under(features, stats_key(self.selector, r))
            if key is None:
                continue
            held = self._relayout(features[key], key)  # not popped: the reconciliation drops it
            part = array("d")
            for at in range(self._start(held, cutoff // r), len(held), w):
                start = int(held[at]) * r
                if covered is not None and start >= covered:
                    break
                record = held[at : at + w]
                record[0] = start
                if covered is not None and start + r > covered and not self._older_part(record, parts, start + r):
                    continue
                part.extend(record)
            if part:
                covered = int(part[0])
            parts.insert(0, part)
        records = array("d")
        for part in parts:
            records.extend(part)
        if records:
            features[self.key] = self._merged(records, 0, len(records), self._cutoffs(int(records[-w])))

    def _older_part(self, record: array[float], finer: list[array[float]], end: int) -> bool:
        """Take the counts and sums of the ``finer`` records starting before ``end`` off
        ``record`` (a bucket reaching into them); False when nothing is left."""
        w = self.width
        for part in finer:
            for at in range(0, len(part), w):
                if part[at] >= end:
                    break
                record[1] -= part[at + 1]
                for _, base in self._slots:
                    record[base] -= part[at + base]
                    record[base + 1] -= part[at + base + 1]
        if record[1] <= 0:
            return False
        for _, base in self._slots:
            if record[base] <= 0:  # none of this property left: as a blank record's
                record[base : base + 4] = self._blank[base - 1 : base + 3]
        return True


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


class DistinctFeature(BucketedFeature):
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
