"""A synthetic but realistic event feed: personas, duplicates, disorder, late and malformed events.

Used by the demo, the benchmarks and ``segments preview`` examples. Deterministic for a seed.
The persona feed speaks the example shop's events (``rules/catalog.yaml``); for any other event
catalogue, ``generate_feed(config, catalog)`` draws visits of that catalogue's own event types,
with properties typed as it declares them.

Personas (share of customers): browsers look around; buyers view, add to cart, check out and buy;
cart abandoners add to cart and leave; engaged regulars come back for several longer sessions;
bots fire hundreds of page views in a minute. Journeys of many customers interleave in event
time; then a share of events is delayed within the out-of-orderness bound, a few beyond it
(late), some are sent twice, and some are broken in the ways real producers break them.
"""

from __future__ import annotations

import heapq
import itertools
import json
import random
from dataclasses import dataclass, field
from typing import Iterator

from .core.catalog import Catalog, PropertySpec
from .core.durations import DAY, HOUR, MINUTE, SECOND

PERSONAS: dict[str, float] = {
    "browser": 0.45,
    "buyer": 0.2,
    "abandoner": 0.2,
    "regular": 0.14,
    "bot": 0.01,
}
CATEGORIES = ("shoes", "bags", "dresses", "watches", "toys", "books")
COUNTRIES = ("DE", "FR", "NL", "ES", "IT", "US", "GB")


@dataclass(frozen=True)
class FeedConfig:
    customers: int = 1_000
    events: int = 20_000
    seed: int = 7
    start_ms: int = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    # Journeys start at this rate, in event time; events of a journey follow at human pace.
    journeys_per_second: float = 1.0
    out_of_order_share: float = 0.05
    max_delay_ms: int = 3 * SECOND  # keep below the job's out-of-orderness bound
    late_share: float = 0.0005  # delayed by far more than the bound
    late_delay_ms: int = 10 * MINUTE
    duplicate_share: float = 0.02
    malformed_share: float = 0.005
    personas: dict[str, float] = field(default_factory=lambda: dict(PERSONAS))
    # Order history before start_ms, sent first (as a shop imports last year's orders): this share
    # of customers bought 1-4 times over the history_days before, so value segments and the RFM
    # models have customers who bought months ago, lapsed or not. 0 days: none (the default).
    history_days: int = 0
    history_share: float = 0.35
    # Who visits: a weight per persona for picking the customer of each journey (None: everyone
    # alike). The demo's weeks of browsing history make regulars come back often, as they do.
    visit_weights: dict[str, float] | None = None
    # A later part of the same shop (the same customers and personas): its own event, cart and
    # order ids and its own random journeys. "" for a feed of one part.
    phase: str = ""


@dataclass(frozen=True)
class FeedRecord:
    """One Kafka record as a producer would send it; ``kind`` tells tests what it is."""

    key: bytes
    value: bytes
    kind: str  # "valid" | "duplicate" | "late" | "malformed"
    event_time: int | None


def customer_id(n: int) -> str:
    return f"c-{n:06d}"


class _Feed:
    def __init__(self, config: FeedConfig) -> None:
        self.c = config
        self.rng = random.Random(config.seed)
        names = list(config.personas)
        weights = [config.personas[n] for n in names]
        self.persona_of = [self.rng.choices(names, weights)[0] for _ in range(config.customers)]
        if config.phase:
            self.rng.seed(f"{config.seed}-{config.phase}")  # the same personas, other journeys
        self.tag = f"{config.seed}{config.phase}"
        self.visitors: list[int] | None = None
        self.visitor_weights: list[float] | None = None
        if config.visit_weights is not None:
            self.visitors = list(range(config.customers))
            self.visitor_weights = list(itertools.accumulate(config.visit_weights.get(self.persona_of[c], 1.0) for c in self.visitors))
        self.serial = 0
        self.carts = 0

    def _id(self) -> str:
        self.serial += 1
        return f"ev-{self.tag}-{self.serial:09d}"

    def _event(self, cust: int, event_type: str, t: int, **props: object) -> dict:
        return {
            "event_id": self._id(),
            "customer_id": customer_id(cust),
            "event_type": event_type,
            "event_time": t,
            "properties": props,
        }

    def journey(self, cust: int, t: int) -> list[dict]:
        """One visit of a customer starting at ``t``, by persona."""
        rng = self.rng
        persona = self.persona_of[cust]
        session = f"s-{cust}-{t // 1000}"
        out = [self._event(cust, "session_start", t, session_id=session, device=rng.choice(("web", "ios", "android")))]

        def later(lo: int, hi: int) -> int:
            nonlocal t
            t += rng.randint(lo, hi)
            return t

        if rng.random() < 0.05:
            out.append(self._event(cust, "identify", later(1 * SECOND, 5 * SECOND), country=rng.choice(COUNTRIES), email_opt_in=rng.random() < 0.7))
        if persona == "bot":
            for _ in range(rng.randint(120, 300)):
                out.append(self._event(cust, "page_view", later(50, 400), url=f"/p/{rng.randint(1, 5000)}", session_id=session))
            return out
        views = {"browser": (1, 6), "buyer": (2, 5), "abandoner": (1, 4), "regular": (3, 8)}[persona]
        product = f"p-{rng.randint(1, 500)}"
        category = rng.choice(CATEGORIES)
        price = round(rng.uniform(5, 120), 2)
        for _ in range(rng.randint(*views)):
            if rng.random() < 0.3:
                out.append(self._event(cust, "page_view", later(5 * SECOND, 40 * SECOND), url="/home", page_type="home", session_id=session))
            if rng.random() < 0.4:  # move on to another product
                product, category, price = f"p-{rng.randint(1, 500)}", rng.choice(CATEGORIES), round(rng.uniform(5, 120), 2)
            out.append(self._event(cust, "product_view", later(10 * SECOND, 90 * SECOND), product_id=product, category=category, price=price, session_id=session))
        if persona in ("buyer", "abandoner") or (persona == "regular" and rng.random() < 0.3):
            self.carts += 1
            cart = f"cart-{self.tag}-{self.carts}"
            quantity = rng.randint(1, 3)
            value = round(price * quantity, 2)
            out.append(self._event(cust, "cart_add", later(10 * SECOND, 60 * SECOND), cart_id=cart, product_id=product, category=category, price=price, quantity=quantity, cart_value=value))
            if persona == "buyer" or (persona == "regular" and rng.random() < 0.6):
                out.append(self._event(cust, "checkout", later(30 * SECOND, 5 * MINUTE), cart_id=cart, cart_value=value))
                out.append(self._event(cust, "purchase", later(10 * SECOND, 2 * MINUTE), order_id=f"o-{cart}", cart_id=cart, revenue=value, items=quantity))
        if persona == "regular":
            for _ in range(rng.randint(2, 5)):  # keep the session going for a few minutes
                out.append(self._event(cust, "page_view", later(40 * SECOND, 2 * MINUTE), url="/blog", page_type="content", session_id=session))
        return out

    def history(self) -> list[dict]:
        """Past orders (``history_days`` before the start), in event-time order: a purchase each,
        at most one a day per customer, the last of them at least a day before the start."""
        c, rng = self.c, self.rng
        out = []
        for cust in range(c.customers):
            if self.persona_of[cust] == "bot" or rng.random() >= c.history_share:
                continue
            days = sorted(rng.sample(range(1, c.history_days), min(c.history_days - 1, rng.choice((1, 1, 2, 2, 3, 4)))))
            for n, day in enumerate(days):
                t = c.start_ms - day * DAY + rng.randint(9 * HOUR, 21 * HOUR) - DAY
                value = round(rng.uniform(8, 90), 2)
                order = f"h-{self.tag}-{cust}-{n}"
                out.append(self._event(cust, "purchase", t, order_id=order, cart_id=order, revenue=value, items=rng.randint(1, 3)))
        out.sort(key=lambda e: e["event_time"])
        return out

    def ordered_events(self) -> Iterator[dict]:
        """Valid events in event-time order, up to ``events`` of them: the order history (if
        any), then interleaved journeys."""
        c, rng = self.c, self.rng
        produced = 0
        if c.history_days > 1:
            for e in self.history()[: c.events]:
                produced += 1
                yield e
        heap: list[tuple[int, int, dict]] = []
        journey_gap = max(1, int(1000 / c.journeys_per_second))
        t = c.start_ms
        seq = 0
        while produced < c.events:
            # Start journeys until the next one starts after the earliest pending event.
            while not heap or heap[0][0] >= t:
                if self.visitors is not None:
                    cust = rng.choices(self.visitors, cum_weights=self.visitor_weights)[0]
                else:
                    cust = rng.randrange(c.customers)
                    if self.persona_of[cust] == "bot" and rng.random() < 0.8:
                        cust = rng.randrange(c.customers)  # bots: few, but not every pick
                for e in self.journey(cust, t):
                    seq += 1
                    heapq.heappush(heap, (e["event_time"], seq, e))
                t += rng.randint(journey_gap // 2, journey_gap * 3 // 2)
            _, _, e = heapq.heappop(heap)
            produced += 1
            yield e

    def records(self) -> Iterator[FeedRecord]:
        c, rng = self.c, self.rng
        # Arrival order: each event arrives at event_time + delay.
        pending: list[tuple[int, int, FeedRecord]] = []
        seq = 0
        for e in self.ordered_events():
            t = e["event_time"]
            key = e["customer_id"].encode()
            value = json.dumps(e, separators=(",", ":")).encode()
            roll = rng.random()
            if roll < c.late_share:
                delay, kind = c.late_delay_ms, "late"
            elif roll < c.late_share + c.out_of_order_share:
                delay, kind = rng.randint(1, c.max_delay_ms), "valid"
            else:
                delay, kind = 0, "valid"
            seq += 1
            heapq.heappush(pending, (t + delay, seq, FeedRecord(key, value, kind, t)))
            if rng.random() < c.duplicate_share:
                seq += 1
                heapq.heappush(pending, (t + delay + rng.randint(0, c.max_delay_ms), seq, FeedRecord(key, value, "duplicate", t)))
            if rng.random() < c.malformed_share:
                seq += 1
                heapq.heappush(pending, (t, seq, self.malformed(e)))
            while pending and pending[0][0] <= t:
                yield heapq.heappop(pending)[2]
        while pending:
            yield heapq.heappop(pending)[2]

    def malformed(self, e: dict) -> FeedRecord:
        rng = self.rng
        broken = dict(e, event_id=self._id())
        how = rng.choice(("not_json", "no_customer", "bad_type", "unknown_event", "absurd_time", "bad_property"))
        if how == "not_json":
            return FeedRecord(e["customer_id"].encode(), b'{"event_id": "x", "customer_id": ', "malformed", None)
        if how == "no_customer":
            broken.pop("customer_id")
        elif how == "bad_type":
            broken["event_time"] = "yesterday"
        elif how == "unknown_event":
            broken["event_type"] = "page_veiw"
        elif how == "absurd_time":
            broken["event_time"] = 32_503_680_000_000  # year 3000
        else:
            broken["event_type"] = "cart_add"
            broken["properties"] = {"cart_id": "k", "cart_value": "lots"}
        return FeedRecord(e["customer_id"].encode(), json.dumps(broken).encode(), "malformed", None)


class _CatalogFeed(_Feed):
    """Visits of a catalogue's own event types: a few events seconds to minutes apart, now and then
    a profile update; every required property, most optional ones, values of the declared type
    (one of the allowed values when the catalogue lists them)."""

    def __init__(self, config: FeedConfig, catalog: Catalog) -> None:
        super().__init__(config)
        self.catalog = catalog
        self.activity = [t for t in catalog.event_types if t not in catalog.profile_types] or list(catalog.event_types)
        self.profile = sorted(catalog.profile_types)

    def _value(self, name: str, spec: PropertySpec, t: int) -> object:
        rng = self.rng
        if spec.values:
            return rng.choice(spec.values)
        if spec.type == "string":
            return f"{name}-{rng.randint(1, 5)}"
        if spec.type == "number":
            return round(rng.uniform(1, 200), 2)
        if spec.type == "bool":
            return rng.random() < 0.5
        return t - rng.randint(0, 30) * DAY  # a timestamp: some time before the event

    def _typed_event(self, cust: int, event_type: str, t: int) -> dict:
        props = {
            name: self._value(name, spec, t)
            for name, spec in self.catalog.events[event_type].properties.items()
            if spec.required or self.rng.random() < 0.6
        }
        return self._event(cust, event_type, t, **props)

    def journey(self, cust: int, t: int) -> list[dict]:
        rng = self.rng
        out = []
        if self.profile and rng.random() < 0.1:
            out.append(self._typed_event(cust, rng.choice(self.profile), t))
        for _ in range(rng.randint(1, 8)):
            t += rng.randint(5 * SECOND, 90 * SECOND)
            out.append(self._typed_event(cust, rng.choice(self.activity), t))
        return out

    def malformed(self, e: dict) -> FeedRecord:
        rng = self.rng
        broken = dict(e, event_id=self._id())
        how = rng.choice(("not_json", "no_customer", "bad_time", "unknown_event", "absurd_time"))
        if how == "not_json":
            return FeedRecord(e["customer_id"].encode(), b'{"event_id": "x", "customer_id": ', "malformed", None)
        if how == "no_customer":
            broken.pop("customer_id")
        elif how == "bad_time":
            broken["event_time"] = "yesterday"
        elif how == "unknown_event":
            broken["event_type"] = e["event_type"] + "_x"
        else:
            broken["event_time"] = 32_503_680_000_000  # year 3000
        return FeedRecord(e["customer_id"].encode(), json.dumps(broken).encode(), "malformed", None)


# What the persona feed sends: a catalogue that declares these can take it.
PERSONA_EVENTS: dict[str, tuple[str, ...]] = {
    "session_start": ("session_id", "device"),
    "identify": ("country", "email_opt_in"),
    "page_view": ("url", "page_type", "session_id"),
    "product_view": ("product_id", "category", "price", "session_id"),
    "cart_add": ("cart_id", "product_id", "category", "price", "quantity", "cart_value"),
    "checkout": ("cart_id", "cart_value"),
    "purchase": ("order_id", "cart_id", "revenue", "items"),
}


def speaks_personas(catalog: Catalog) -> bool:
    """Whether ``catalog`` declares every event type and property the persona feed sends."""
    return all(
        event_type in catalog.events and set(props) <= set(catalog.events[event_type].properties)
        for event_type, props in PERSONA_EVENTS.items()
    )


def generate_feed(config: FeedConfig, catalog: Catalog | None = None) -> Iterator[FeedRecord]:
    """Records in arrival order, deterministic for ``config.seed``: the example shop's personas,
    or, for a ``catalog`` that does not declare their events, visits of its own event types."""
    if catalog is None or speaks_personas(catalog):
        return _Feed(config).records()
    return _CatalogFeed(config, catalog).records()


def span_hint(config: FeedConfig) -> str:
    """Roughly how much event time a feed covers (for progress messages)."""
    seconds = config.events / max(config.journeys_per_second * 6, 1)
    for unit, size in (("d", DAY), ("h", HOUR), ("m", MINUTE)):
        if seconds * 1000 >= size:
            return f"~{seconds * 1000 / size:.1f}{unit}"
    return f"~{seconds:.0f}s"
