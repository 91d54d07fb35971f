"""Model inputs: the per-customer numbers the ML models read, from the generic aggregates.

This is the one definition of the models' features. The stream computes them through
``SegmentEngine.model_features`` on every scored instant; the training pipeline
(``flink_jobs/ml/train.py``) replays history through the same engine and calls the same method,
so training and serving cannot drift apart.

Two groups, each available only when the aggregates it reads are kept (generic aggregates on):

- **value** (purchase propensity, clustering) from the 1-day purchase buckets. Windows read as a
  rule's ``within: Nd`` does: today (UTC) and the N-1 days before. Recency and tenure are whole
  UTC calendar days, the resolution of those buckets.
- **behaviour** (anomaly model, outlier guard) from the 1-minute buckets of every event type:
  ``5m`` is the current UTC minute and the 4 before it, ``1h`` the current minute and the 59
  before it.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import Any, Final, Iterable, Mapping

from .catalog import MODEL_ROLES, Catalog
from .durations import DAY, HOUR, MINUTE
from .features import Feature, FeatureState, TieredStatsFeature, tiered_key
from .model import EventSelector

VALUE_WINDOW_DAYS = 365
# "No purchase in the last 365 days" reads as 365: the value group never looks further back.
RECENCY_CAP_DAYS = VALUE_WINDOW_DAYS


@dataclass(frozen=True)
class ModelInput:
    """One model input: its name (as in model cards), unit and meaning."""

    name: str
    group: str  # "value" | "behaviour"
    unit: str
    meaning: str


MODEL_INPUTS: tuple[ModelInput, ...] = (
    ModelInput(
        "recency_days", "value", "days",
        "UTC calendar days since the day of the last purchase (0 = today); 365 when none in the last 365 days",
    ),
    ModelInput(
        "tenure_days", "value", "days",
        "UTC calendar days since the day of the first purchase within the last 365 days; 0 when none",
    ),
    ModelInput("purchases_30d", "value", "purchases", "purchases today and the 29 days before"),
    ModelInput("purchases_90d", "value", "purchases", "purchases today and the 89 days before"),
    ModelInput("purchases_365d", "value", "purchases", "frequency: purchases today and the 364 days before"),
    ModelInput("revenue_365d", "value", "currency units", "monetary: sum of purchase revenue over the same 365 days"),
    ModelInput(
        "avg_order_value_365d", "value", "currency units per purchase",
        "revenue_365d / purchases carrying a revenue; 0 when none",
    ),
    ModelInput("events_5m", "behaviour", "events", "events of any type in the current UTC minute and the 4 before"),
    ModelInput("events_1h", "behaviour", "events", "events of any type in the current UTC minute and the 59 before"),
    ModelInput("active_minutes_1h", "behaviour", "minutes", "minutes (of those 60) with at least one event"),
    ModelInput("page_view_share_1h", "behaviour", "ratio 0..1", "page_view events / events_1h; 0 when no events"),
    ModelInput("product_views_1h", "behaviour", "events", "product_view events in the same 60 minutes"),
    ModelInput("sessions_1h", "behaviour", "sessions", "session_start events in the same 60 minutes"),
)
MODEL_INPUT_NAMES: tuple[str, ...] = tuple(i.name for i in MODEL_INPUTS)
BY_NAME: Mapping[str, ModelInput] = {i.name: i for i in MODEL_INPUTS}

_VALUE_NAMES = tuple(i.name for i in MODEL_INPUTS if i.group == "value")
_BEHAVIOUR_NAMES = tuple(i.name for i in MODEL_INPUTS if i.group == "behaviour")
# Final: compiled, a constant is inlined instead of looked up in the module's dict at every use.
_MINUTES_1H: Final = 60
_MINUTES_5M: Final = 5
# The roles whose counts are inputs of their own, as ints for the read's comparisons.
_PAGE_VIEW: Final = 1
_PRODUCT_VIEW: Final = 2
_SESSION_START: Final = 3


class ModelInputReader:
    """Computes the available model inputs from a customer's feature state.

    Built once per compiled rule set (``resolve``); ``read`` is called per scored instant, so it
    reads only the records it needs: those of the purchase days in the value window, and the
    last hour's minutes at the end of each activity feature.
    """

    def __init__(
        self,
        purchases: TieredStatsFeature | None,
        revenue: str | None,
        activity: tuple[tuple[str, TieredStatsFeature], ...],
    ) -> None:
        self._purchases = purchases
        # Offset of the revenue's (n, sum) in a purchase record (StatsFeature's layout).
        self._revenue = 2 + 4 * purchases.props.index(revenue) if purchases and revenue else 0
        roles = {"page_view": _PAGE_VIEW, "product_view": _PRODUCT_VIEW, "session_start": _SESSION_START}
        self._activity_keys: tuple[tuple[str, int, int], ...] = tuple(
            (feature.key, feature.width, roles.get(role, 0)) for role, feature in activity
        )
        self.names: tuple[str, ...] = (_VALUE_NAMES if purchases else ()) + (_BEHAVIOUR_NAMES if activity else ())

    @classmethod
    def resolve(cls, features: Iterable[Feature[Any]], catalog: Catalog) -> ModelInputReader:
        """Find the aggregates the inputs read; a group whose aggregates or catalogue roles are
        missing is left out (value: the purchase role; behaviour: the roles of ``MODEL_ROLES``)."""
        generic = {f.base: f for f in features if isinstance(f, TieredStatsFeature)}
        revenue = catalog.revenue_property
        purchases = None
        if catalog.purchase_event is not None:
            purchases = generic.get(tiered_key(EventSelector((catalog.purchase_event,))))
        if not (purchases is not None and revenue in purchases.props and purchases.keeps(DAY, VALUE_WINDOW_DAYS * DAY)):
            purchases = None
        role_of = {event_type: role for role, event_type in catalog.roles.items()}
        activity: list[tuple[str, TieredStatsFeature]] = []
        for event_type in catalog.event_types:
            feature = generic.get(tiered_key(EventSelector((event_type,))))
            if feature is None or not feature.keeps(MINUTE, HOUR):
                activity = []
                break
            activity.append((role_of.get(event_type, ""), feature))
        if any(role not in catalog.roles for role in MODEL_ROLES):
            activity = []
        return cls(purchases, revenue, tuple(activity))

    @classmethod
    def empty(cls) -> ModelInputReader:
        return cls(None, None, ())

    def read(self, features: dict[str, FeatureState], now: int) -> dict[str, float]:
        out: dict[str, float] = {}
        if self._purchases is not None:
            self._read_value(features.get(self._purchases.key), now, out)
        if self._activity_keys:
            self._read_behaviour(features, now, out)
        return out

    def _read_value(self, fs: array[float] | None, now: int, out: dict[str, float]) -> None:
        # The purchase records are keyed by their start in ms; each lies within one UTC day.
        # (Locals typed float: compiled, the arithmetic is on doubles, not boxed floats.)
        today = now // DAY
        d30, d90 = today - 29, today - 89
        last = first = None
        n365 = n90 = n30 = priced = 0.0
        revenue = 0.0
        base = self._revenue
        if fs:
            oldest = (today - VALUE_WINDOW_DAYS + 1) * DAY
            for start, at in self._purchases.buckets(fs, oldest, now):  # type: ignore[union-attr]
                count: float = fs[at + 1]
                if not count:
                    continue
                day = start // DAY
                n365 += count
                if day >= d90:
                    n90 += count
                    if day >= d30:
                        n30 += count
                priced += fs[at + base]
                revenue += fs[at + base + 1]
                if first is None:
                    first = day
                last = day
        out["recency_days"] = float(RECENCY_CAP_DAYS if last is None else today - last)
        out["tenure_days"] = float(0 if first is None else today - first)
        out["purchases_30d"] = float(n30)
        out["purchases_90d"] = float(n90)
        out["purchases_365d"] = float(n365)
        out["revenue_365d"] = float(revenue)
        out["avg_order_value_365d"] = revenue / priced if priced else 0.0

    def _read_behaviour(self, features: dict[str, FeatureState], now: int, out: dict[str, float]) -> None:
        # The records of the last hour are minutes (the finest tier), keyed by their start in ms,
        # and the newest of a feature's records: one pass back from its end reads them, whatever
        # the feature holds before them (bench/HISTORY.md). Bounds as floats, as the keys are:
        # a float compared with a large int takes a slow path. Compiled, the float locals are
        # doubles, not boxed floats.
        minute_ms = now - now % MINUTE
        oldest_ms = minute_ms - (_MINUTES_1H - 1) * MINUTE
        minute = float(minute_ms)
        oldest = float(oldest_ms)
        recent = float(minute_ms - (_MINUTES_5M - 1) * MINUTE)
        events_5m = events_1h = page_views = product_views = sessions = 0.0
        active = 0  # bit m: minute m of the hour (0 = the oldest) had an event
        for key, w, role in self._activity_keys:
            fs: array[float] | None = features.get(key)
            if not fs:
                continue
            n = 0.0
            at = len(fs) - w
            while at >= 0:
                b: float = fs[at]
                if b < oldest:
                    break
                if b <= minute:  # (later records: read at an instant before the clock)
                    count: float = fs[at + 1]
                    n += count
                    if b >= recent:
                        events_5m += count
                    active |= 1 << (int(b) - oldest_ms) // MINUTE
                at -= w
            events_1h += n
            if role == _PAGE_VIEW:
                page_views = n
            elif role == _PRODUCT_VIEW:
                product_views = n
            elif role == _SESSION_START:
                sessions = n
        out["events_5m"] = events_5m
        out["events_1h"] = events_1h
        out["active_minutes_1h"] = float(active.bit_count())
        out["page_view_share_1h"] = page_views / events_1h if events_1h else 0.0
        out["product_views_1h"] = product_views
        out["sessions_1h"] = sessions


# Pickled rules reach the workers; compiled by mypyc these classes need it (see pickling.py).
from .pickling import register_dataclasses  # noqa: E402

register_dataclasses(globals(), __name__)
