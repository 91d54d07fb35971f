"""The engine on hand-written scenarios: each semantic of ARCHITECTURE.md, as a reader would check it."""

from __future__ import annotations

import hashlib

import pytest

from flink_jobs.core.conditions import (
    Aggregate,
)
from flink_jobs.core.durations import DAY, HOUR, MINUTE, SECOND
from flink_jobs.core.engine import EngineConfig, SegmentEngine
from flink_jobs.core.features import StatsFeature
from flink_jobs.core.model import Comparison, RuleSet
from flink_jobs.core.runner import LocalRunner
from flink_jobs.core.state import STATE_SLOTS, state_size

from .helpers import ABANDONED, CATALOG, T0, VIEWED_TWICE, changes, ev, rules, run, seg, sel


def test_duplicates_are_ignored_and_counted():
    events = [ev(1, "product_view", 0), ev(1, "product_view", 0), ev(2, "product_view", SECOND), ev(2, "product_view", SECOND)]
    r = run(rules(VIEWED_TWICE), events, until=HOUR)
    assert changes(r) == []
    assert r.stats.duplicates == 2


def test_event_later_than_the_allowed_lateness_goes_to_the_late_output():
    # The customer was already evaluated at 20 s when the event of 10 s arrives.
    events = [ev(1, "product_view", 0), ev(2, "product_view", 20 * SECOND), ev(3, "page_view", HOUR), ev(4, "product_view", 10 * SECOND)]
    r = run(rules(VIEWED_TWICE), events, until=2 * HOUR)
    assert [e.event_id for e in r.late_events] == ["e4"]
    assert r.stats.late == 1


def test_event_behind_the_watermark_but_not_behind_the_customer_is_applied_in_order():
    """Nothing happened for this customer between 0 s and the watermark (~1 h), so the event of
    10 s can still be applied exactly as if it had been on time: no loss, no late routing."""
    events = [ev(1, "product_view", 0), ev(2, "page_view", HOUR), ev(3, "product_view", 10 * SECOND), ev(4, "product_view", 20 * SECOND)]
    r = run(rules(VIEWED_TWICE), events, until=2 * HOUR)
    assert r.late_events == []
    assert changes(r) == [
        ("c1", "product_viewed_repeatedly", "enter", 20 * SECOND),
        ("c1", "product_viewed_repeatedly", "exit", 10 * MINUTE),
    ]


def test_event_within_the_allowed_lateness_is_applied_at_the_current_instant():
    config = EngineConfig(allowed_lateness=10 * MINUTE)
    events = [ev(1, "product_view", 0), ev(2, "product_view", 2 * SECOND), ev(3, "page_view", 60 * SECOND), ev(4, "product_view", SECOND)]
    r = run(rules(VIEWED_TWICE), events, until=HOUR, bound=0, config=config)
    assert r.late_events == []
    assert r.stats.late_applied == 1
    # The clock had reached 2 s (the page view at 60 s waits for the watermark): the late view is
    # applied there, into its own 1 s bucket, and the first view's exit at 10 m ends the match.
    assert changes(r) == [
        ("c1", "product_viewed_repeatedly", "enter", 2 * SECOND),
        ("c1", "product_viewed_repeatedly", "exit", 10 * MINUTE),
    ]


def test_ttl_ends_membership_even_while_the_condition_holds():
    segment = seg("viewer", Aggregate("count", sel("page_view"), None, DAY, Comparison("at_least", 1)), ttl=HOUR)
    r = run(rules(segment), [ev(1, "page_view", 0), ev(2, "page_view", 30 * MINUTE)], until=3 * DAY)
    assert changes(r) == [("c1", "viewer", "enter", 0), ("c1", "viewer", "exit", HOUR)]
    assert r.changes[1].reason == "ttl 1h ran out"


def test_excluded_segment_keeps_customers_out_and_lets_them_back_in():
    bot = seg("suspected_bot", Aggregate("count", sel("page_view"), None, MINUTE, Comparison("greater_than", 3)))
    marketing = seg("browsers", Aggregate("count", sel("page_view"), None, DAY, Comparison("at_least", 1)), exclude=("suspected_bot",))
    events = [ev(i, "page_view", i * SECOND) for i in range(5)]
    r = run(rules(bot, marketing), events, until=HOUR)
    assert changes(r) == [
        ("c1", "browsers", "enter", 0),
        ("c1", "suspected_bot", "enter", 3 * SECOND),
        ("c1", "browsers", "exit", 3 * SECOND),
        ("c1", "suspected_bot", "exit", MINUTE + SECOND),
        ("c1", "browsers", "enter", MINUTE + SECOND),
    ]
    assert r.changes[2].reason == "excluded while in suspected_bot"


def test_new_rule_is_evaluated_from_state_already_held_without_replay():
    """A rule published later over a long window of generic aggregates is populated at once."""
    old = SegmentEngine(rules(ABANDONED))
    state = old.new_state("c1")
    for i in range(3):
        old.step(state, ev(i, "purchase", i * DAY, revenue=100), watermark=T0 + i * DAY)
    assert state.members == {}
    loyal = seg("loyal", Aggregate("count", sel("purchase"), None, 30 * DAY, Comparison("at_least", 3)))
    result = SegmentEngine(RuleSet((ABANDONED, loyal), "rs-2", CATALOG)).step(state, None, watermark=T0 + 2 * DAY)
    assert [(c.segment_id, c.kind, c.event_time - T0, c.rule_version) for c in result.changes] == [("loyal", "enter", 2 * DAY, "rs-2")]
    # and its exit is scheduled from the buckets already held: the first purchase leaves the
    # 30-day window (1 h steps) 30 days after its hour began
    assert T0 + 30 * DAY in result.timers_to_register


def test_new_rule_over_a_short_window_fills_from_live_events():
    """Windows of up to 1 h are not kept generically: such a rule starts from what arrives next
    (within its own window length it is complete again)."""
    old = SegmentEngine(rules(ABANDONED))
    state = old.new_state("c1")
    for i in range(3):
        old.step(state, ev(i, "product_view", i * SECOND), watermark=T0 + i * SECOND)
    engine = SegmentEngine(RuleSet((ABANDONED, VIEWED_TWICE), "rs-2", CATALOG))
    assert engine.step(state, None, watermark=T0 + 2 * SECOND).changes == []
    for i in range(3, 6):
        result = engine.step(state, ev(i, "product_view", i * SECOND), watermark=T0 + i * SECOND)
    assert [(c.segment_id, c.kind, c.event_time - T0) for c in result.changes] == [("product_viewed_repeatedly", "enter", 5 * SECOND)]


CART_K = sel("cart_add", cart_id="k")
COUNTED = seg("counted", Aggregate("count", CART_K, None, HOUR, Comparison("at_least", 3)))
SUMMED = seg("summed", Aggregate("sum", CART_K, "cart_value", HOUR, Comparison("greater_than", 25)))
PRICED = seg("priced", Aggregate("max", CART_K, "price", HOUR, Comparison("at_least", 7)))


def _cart_adds(engine: SegmentEngine, state, first: int, last: int) -> list:
    out = []
    for i in range(first, last + 1):
        result = engine.step(state, ev(i, "cart_add", i * MINUTE, cart_id="k", cart_value=10, price=i), watermark=T0 + i * MINUTE)
        out += [(c.segment_id, c.kind, (c.event_time - T0) // MINUTE) for c in result.changes]
    return out


def test_a_rule_summing_a_new_property_of_counted_events_keeps_the_counts_and_sums_from_then():
    """The aggregates of the same events at the same resolution are one feature; a rule that
    sums another property changes its layout. The counts held go on, the new sum starts empty
    (no replay), and a property the new rules no longer read leaves while the others stay."""
    cfg = EngineConfig(generic_aggregates=False)
    first = SegmentEngine(RuleSet((COUNTED, PRICED), "rs-1", CATALOG), cfg)
    state = first.new_state("c1")
    assert _cart_adds(first, state, 0, 1) == []

    second = SegmentEngine(RuleSet((COUNTED, PRICED, SUMMED), "rs-2", CATALOG), cfg)
    # 3 cart adds: counted enters with the two held; 10 + 10 + 10 of cart_value are summed from
    # the change on, so summed enters only at the third add after it (30 > 25), not at the second
    assert _cart_adds(second, state, 2, 4) == [("counted", "enter", 2), ("summed", "enter", 4)]
    assert second.explain(state)[1:] == [
        ("priced", False, "max(price of cart_add where cart_id = k, 1h) = 4, needs >= 7"),
        ("summed", True, "sum(cart_value of cart_add where cart_id = k, 1h) = 30 > 25"),
    ]

    # counted leaves the rules (its members exit at the clock); its counts stay, read by the others
    third = SegmentEngine(RuleSet((PRICED, SUMMED), "rs-3", CATALOG), cfg)
    assert _cart_adds(third, state, 5, 7) == [("counted", "exit", 4), ("priced", "enter", 7)]
    assert [k.rpartition("|")[2] for k in state.features] == ["cart_value,price"]
    assert [why for _, _, why in third.explain(state)] == [
        "max(price of cart_add where cart_id = k, 1h) = 7 >= 7",
        "sum(cart_value of cart_add where cart_id = k, 1h) = 60 > 25",
    ]

    fourth = SegmentEngine(RuleSet((PRICED,), "rs-4", CATALOG), cfg)  # cart_value is no longer read
    assert _cart_adds(fourth, state, 8, 8) == [("summed", "exit", 7)]
    assert [k.rpartition("|")[2] for k in state.features] == ["price"]
    assert fourth.explain(state) == [("priced", True, "max(price of cart_add where cart_id = k, 1h) = 8 >= 7")]
    stats = fourth.compiled.features[0]
    assert stats.value(state.features[stats.key], T0 + 8 * MINUTE, HOUR, "count", None) == 9


def test_switching_generic_aggregates_keeps_the_sum_a_rule_reads_from_a_shared_aggregate():
    """A rule's aggregate at a generic resolution is the generic one, with all the event type's
    number properties; without the generic aggregates it has only the rule's. The sum the rule
    reads is carried over both ways (as format 1 did not: it read another property's slots)."""
    units = seg("units", Aggregate("sum", sel("cart_add"), "quantity", DAY, Comparison("at_least", 4)))
    on, off = EngineConfig(generic_aggregates=True), EngineConfig(generic_aggregates=False)
    state = SegmentEngine(rules(units), on).new_state("c1")
    for i, config in enumerate((on, off, on)):
        engine = SegmentEngine(rules(units), config)
        engine.step(state, ev(i, "cart_add", i * MINUTE, cart_id="k", cart_value=100, quantity=2), watermark=T0 + i * MINUTE)
        assert engine.explain(state) == [
            ("units", i > 0, f"sum(quantity of cart_add, 1d) = {2 * (i + 1)}" + (" >= 4" if i else ", needs >= 4"))
        ]


def test_switching_generic_aggregates_off_drops_them_and_on_starts_them():
    """The same rules without the generic aggregates: a state kept with them is reconciled on its
    next step (they leave it; the rules' own features and the memberships stay), and with them
    again it is reconciled once more and they count from there."""
    with_generic = SegmentEngine(rules(ABANDONED))
    state = with_generic.new_state("c1")
    with_generic.step(state, ev(1, "cart_add", 0, cart_id="k1", cart_value=80), watermark=T0)
    with_generic.step(state, ev(2, "page_view", 20 * MINUTE), watermark=T0 + 20 * MINUTE)
    assert set(state.members) == {"abandoned_cart"}
    generic_keys = {k for k in state.features if k.startswith("stats|")}
    assert {k.split("|")[1] for k in generic_keys} == {"cart_add", "page_view"}

    without = SegmentEngine(rules(ABANDONED), EngineConfig(generic_aggregates=False))
    assert without.rule_version == with_generic.rule_version
    assert without.state_version != with_generic.state_version
    result = without.step(state, ev(3, "page_view", 21 * MINUTE), watermark=T0 + 21 * MINUTE)
    assert result.changes == [] and set(state.members) == {"abandoned_cart"}
    assert set(state.features) == {f.key for f in without.compiled.features} & set(state.features)
    assert not generic_keys & set(state.features) and state.features, "only the rules' own features are left"
    assert state.rule_version == without.state_version

    again = SegmentEngine(rules(ABANDONED))
    result = again.step(state, ev(4, "page_view", 22 * MINUTE), watermark=T0 + 22 * MINUTE)
    assert result.changes == [] and state.rule_version == again.state_version
    stats = {f.key: f for f in again.compiled.features if isinstance(f, StatsFeature)}
    now = T0 + 22 * MINUTE
    counts = {k: stats[k].value(fs, now, stats[k].retention, "count", None) for k, fs in state.features.items() if k in stats}
    assert set(counts) == {k for k in generic_keys if "|page_view|" in k}
    assert set(counts.values()) == {1}, "they count from the switch on, not before"


def test_removed_segment_members_exit():
    engine = SegmentEngine(rules(VIEWED_TWICE))
    state = engine.new_state("c1")
    for i in range(3):
        engine.step(state, ev(i, "product_view", i), watermark=T0 + i)
    assert "product_viewed_repeatedly" in state.members
    result = SegmentEngine(RuleSet((ABANDONED,), "rs-2", CATALOG)).step(state, None, watermark=T0 + 2)
    assert [(c.segment_id, c.kind, c.event_time - T0, c.rule_version, c.reason) for c in result.changes] == [
        ("product_viewed_repeatedly", "exit", 2, "rs-2", "segment removed from the rules (version rs-2)")
    ]


def test_a_removed_segments_members_leave_when_the_change_took_effect_not_at_their_last_event():
    engine = SegmentEngine(rules(VIEWED_TWICE))
    state = engine.new_state("c1")
    for i in range(3):
        engine.step(state, ev(i, "product_view", i), watermark=T0 + i)
    # The customer's last instant was 2 ms; the rules change when the job's time is a day later.
    without = SegmentEngine(RuleSet((ABANDONED,), "rs-2", CATALOG))
    without.reconcile_at = T0 + DAY
    [change] = without.step(state, None, watermark=T0 + 2).changes
    assert (change.kind, change.event_time - T0, change.rule_version) == ("exit", DAY, "rs-2")


def test_a_changed_segments_members_who_no_longer_match_leave_when_the_change_took_effect():
    engine = SegmentEngine(rules(VIEWED_TWICE))
    state = engine.new_state("c1")
    for i in range(3):
        engine.step(state, ev(i, "product_view", i), watermark=T0 + i)
    assert "product_viewed_repeatedly" in state.members
    # The same segment now asks for more than three views: c1 no longer matches.
    stricter = seg(
        "product_viewed_repeatedly",
        Aggregate("count", sel("product_view"), None, 10 * MINUTE, Comparison("greater_than", 5)),
    )
    changed = SegmentEngine(RuleSet((stricter,), "rs-2", CATALOG))
    changed.reconcile_at = T0 + HOUR
    [change] = changed.step(state, None, watermark=T0 + 2).changes
    assert (change.kind, change.event_time - T0, change.rule_version) == ("exit", HOUR, "rs-2")
    assert change.reason.startswith("rules changed (version rs-2): ")
    # A customer who now matches enters at their own clock: the new rules over the history held.
    looser = seg(
        "product_viewed_repeatedly",
        Aggregate("count", sel("product_view"), None, 10 * MINUTE, Comparison("greater_than", 1)),
    )
    again = SegmentEngine(RuleSet((looser,), "rs-3", CATALOG))
    again.reconcile_at = T0 + 2 * HOUR
    [change] = again.step(state, None, watermark=T0 + 2).changes
    assert (change.kind, change.event_time - T0, change.rule_version) == ("enter", 2, "rs-3")


def test_state_stays_bounded_for_a_long_lived_customer():
    engine = SegmentEngine(rules(VIEWED_TWICE, ABANDONED))
    runner = LocalRunner(engine, out_of_orderness=5 * SECOND)
    sizes = []
    for day in range(460):
        for i in range(3):
            runner.feed(ev(day * 10 + i, "product_view", day * DAY + i * MINUTE))
        sizes.append(state_size(runner.states["c1"]))
    # Buckets are kept up to their tier's span (1 h, 2 d, 35 d) and the 400-day horizon for daily
    # buckets; dedup ids for a day. Past the horizon the size stops growing (give or take the up
    # to 8 expired buckets per feature that pruning lets linger, and dedup ids pruned in bulk).
    assert sizes[100] > sizes[10]
    assert max(sizes[410:]) <= sizes[405] * 1.1


def test_config_rejects_a_dedup_horizon_shorter_than_the_lateness():
    with pytest.raises(ValueError, match="dedup_horizon must be at least allowed_lateness"):
        EngineConfig(dedup_horizon=MINUTE, allowed_lateness=HOUR)


def test_state_round_trips_through_its_encoding_mid_stream():
    """Encoding and decoding between every step (as a state backend does) changes nothing."""
    from flink_jobs.core.state import decode_state, encode_state

    ruleset = rules(VIEWED_TWICE, ABANDONED)
    events = [ev(1, "cart_add", 0, cart_id="k1", cart_value=60.5), ev(2, "product_view", 1), ev(3, "product_view", 2), ev(4, "product_view", 3)]
    plain = run(ruleset, events, until=DAY)
    engine = SegmentEngine(ruleset)
    state = engine.new_state("c1")
    got = []
    for e in events:
        state = decode_state(encode_state(state))
        got += engine.step(state, e, watermark=e.event_time - 5 * SECOND - 1).changes
    state = decode_state(encode_state(state))
    for t in sorted(state.timers):
        state = decode_state(encode_state(state))
        got += engine.step(state, t, watermark=T0 + DAY).changes
    assert [(c.segment_id, c.kind, c.event_time) for c in got] == [(c.segment_id, c.kind, c.event_time) for c in plain.changes]


def test_a_state_of_a_newer_format_is_refused_by_name():
    """A downgrade that meets states a newer version wrote fails loudly, not with wrong segments."""
    import marshal

    from flink_jobs.core.state import decode_state

    with pytest.raises(ValueError, match="customer state format 99 is not readable by this version"):
        decode_state(marshal.dumps((99, "c1")))


def test_distinct_buckets_are_one_flat_array_of_value_hashes():
    """Format 5 keeps a distinct feature's buckets as one array ``[bucket, n, hashes...]`` (a
    state's objects are allocated on every cache miss and freed on every eviction): equal values
    count once whatever their type (1, 1.0), a late value joins its bucket, and the dicts of
    formats 1-4 (a set or a list of values per bucket) are read into the same array."""
    import marshal
    from array import array

    from flink_jobs.core.features import distinct_hash
    from flink_jobs.core.state import decode_state, encode_state

    explorer = seg(
        "category_explorer",
        Aggregate("distinct", sel("product_view"), "category", 2 * HOUR, Comparison("greater_than", 2)),
    )
    # A window of 2 hours: buckets of a minute.
    engine = SegmentEngine(rules(explorer), EngineConfig(allowed_lateness=10 * MINUTE))
    state = engine.new_state("c1")
    arrived = [("shoes", 0), ("bags", 1), ("shoes", 2), (7, 3), (7.0, 4), ("7", 5), ("belts", 4 * MINUTE // SECOND)]
    for i, (category, second) in enumerate(arrived):
        t = second * SECOND
        engine.step(state, ev(i, "product_view", t, category=category), watermark=T0 + t)
    (key,) = [k for k in state.features if k.startswith("distinct|")]
    fs = state.features[key]
    assert type(fs) is array and fs.typecode == "d"
    h = distinct_hash
    first = [h("shoes"), h("bags"), h(7), h("7")]
    assert list(fs) == [T0 // MINUTE, 4, *first, T0 // MINUTE + 4, 1, h("belts")]
    assert h(7) == h(7.0) == h(True + 6) and h(7) != h("7")
    assert state.members == {"category_explorer": T0 + 3 * SECOND}
    engine.step(state, ev(99, "product_view", 3 * MINUTE, category="hats"), watermark=T0 + 5 * MINUTE)
    assert list(state.features[key])[6:9] == [T0 // MINUTE + 3, 1, h("hats")]  # late: its own bucket, in order
    assert decode_state(encode_state(state)).features[key] == state.features[key]
    old = list(marshal.loads(encode_state(state)))
    old[0] = 4
    old[1 + STATE_SLOTS.index("features")][key] = {
        T0 // MINUTE + 4: ["belts"], T0 // MINUTE: ["shoes", "bags", 7, "7"], T0 // MINUTE + 3: ["hats"]
    }
    assert decode_state(marshal.dumps(tuple(old), 2)).features[key] == state.features[key]
    old[0] = 2
    ids, times = old[1 + STATE_SLOTS.index("seen")]
    old[1 + STATE_SLOTS.index("seen")] = dict(zip(array("Q", ids), array("q", times)))
    old[1 + STATE_SLOTS.index("features")][key] = {
        T0 // MINUTE + 4: {"belts"}, T0 // MINUTE: {"shoes", "bags", 7, "7"}, T0 // MINUTE + 3: {"hats"}
    }
    restored = decode_state(marshal.dumps(tuple(old))).features[key]  # a set's order is its own
    assert restored[:2] == fs[:2] and sorted(restored[2:6]) == sorted(fs[2:6]) and restored[6:] == fs[6:]


def test_seen_event_ids_are_two_sorted_arrays_pruned_to_the_dedup_horizon():
    """Dedup memory is two arrays (hashes sorted, event times aligned): a duplicate is found
    whatever the order the ids came in, pruning keeps what is within the horizon, and older
    formats' dicts are read into the same arrays."""
    import marshal

    from flink_jobs.core.engine import event_id_hash
    from flink_jobs.core.state import decode_state, encode_state, seen_contains

    config = EngineConfig(dedup_horizon=HOUR)
    engine = SegmentEngine(rules(VIEWED_TWICE), config)
    state = engine.new_state("c1")
    events = [ev(n, "page_view", n * MINUTE) for n in range(100)]  # 100 minutes: beyond the horizon
    for e in events:
        engine.step(state, e, watermark=e.event_time - 1)
    engine.step(state, None, watermark=T0 + 100 * MINUTE)
    ids, times = state.seen
    assert list(ids) == sorted(ids) and len(ids) == len(times) <= 100
    assert all(seen_contains(state.seen, event_id_hash(e.event_id)) for e in events[-60:])
    assert not seen_contains(state.seen, event_id_hash(events[0].event_id))  # pruned: over an hour old
    again = engine.step(state, events[-1], watermark=T0 + 100 * MINUTE)
    assert again.duplicates == 1
    restored = decode_state(encode_state(state))
    assert [list(a) for a in restored.seen] == [list(a) for a in state.seen]
    old = list(marshal.loads(encode_state(state)))
    old[0] = 3
    old[1 + STATE_SLOTS.index("seen")] = dict(zip(reversed(ids), reversed(times)))
    assert [list(a) for a in decode_state(marshal.dumps(tuple(old), 2)).seen] == [list(a) for a in state.seen]


def test_decoded_states_share_one_string_object_per_key():
    """Feature keys and segment ids are interned when the rules are compiled (in a worker the rules
    arrive unpickled, as fresh strings), and decoding interns a state's keys: every state in
    memory refers to one string per key instead of holding its own copies, whether its bytes were
    written with interned keys or not."""
    import marshal
    import pickle

    from flink_jobs.core.state import decode_state, encode_state

    engine = SegmentEngine(pickle.loads(pickle.dumps(rules(VIEWED_TWICE, ABANDONED))))
    states = []
    for customer in ("c1", "c2"):
        state = engine.new_state(customer)
        for n in range(3):
            engine.step(state, ev(n, "product_view", n * SECOND, customer=customer), watermark=T0 + n * SECOND)
        engine.step(state, ev(9, "cart_add", 4 * SECOND, customer=customer, cart_id="k", cart_value=60.0), watermark=T0 + 5 * SECOND)
        assert state.members
        states.append(state)
    data = encode_state(states[0])
    plain = list(marshal.loads(data))  # as older versions wrote them: keys not interned
    features = plain[1 + STATE_SLOTS.index("features")]
    plain[1 + STATE_SLOTS.index("features")] = {"".join(list(k)): v for k, v in features.items()}
    members = plain[1 + STATE_SLOTS.index("members")]
    plain[1 + STATE_SLOTS.index("members")] = {"".join(list(k)): v for k, v in members.items()}
    decoded = [decode_state(data), decode_state(marshal.dumps(tuple(plain), 2)), decode_state(encode_state(states[1]))]
    keys = {f.key: f.key for f in engine.compiled.features}
    ids = {c.id: c.id for c in engine.compiled.segments}
    for state in decoded:
        assert state.features and all(k is keys[k] for k in state.features)
        assert state.members and all(k is ids[k] for k in state.members)
    assert decoded[0].features == states[0].features and decoded[0].members == states[0].members


# ---- hold: a quarantine after the condition stopped holding -------------------------------------------------

BURST = Aggregate("count", sel("page_view"), None, MINUTE, Comparison("greater_than", 2))
BOT = seg("bot", BURST, hold=DAY)
BROWSING = seg("browsing", Aggregate("count", sel("product_view"), None, DAY, Comparison("at_least", 1)), exclude=("bot",))


def _burst(first: int, at: int) -> list:
    return [ev(first + i, "page_view", at + i * SECOND) for i in range(3)]


def test_a_held_member_leaves_a_hold_after_the_condition_stopped_holding():
    r = run(rules(BOT), _burst(0, 0), until=3 * DAY)
    # The burst leaves the minute at 1 min (its first view's exit): the member stays a day more.
    assert changes(r) == [("c1", "bot", "enter", 2 * SECOND), ("c1", "bot", "exit", MINUTE + DAY)]
    assert r.changes[-1].reason.startswith("hold of 1d after it stopped matching ran out: ")
    assert r.states["c1"].held_until == {}


def test_holding_again_during_the_hold_starts_it_anew_when_it_next_stops():
    events = _burst(0, 0) + _burst(10, 12 * HOUR)
    r = run(rules(BOT), events, until=3 * DAY)
    assert changes(r) == [("c1", "bot", "enter", 2 * SECOND), ("c1", "bot", "exit", 12 * HOUR + MINUTE + DAY)]


def test_segments_excluding_a_held_one_stay_closed_for_the_hold():
    events = _burst(0, 0) + [ev(10, "product_view", 2 * HOUR), ev(11, "product_view", DAY + 2 * HOUR)]
    r = run(rules(BOT, BROWSING), events, until=3 * DAY)
    assert [c for c in changes(r) if c[1] == "browsing"] == [
        ("c1", "browsing", "enter", DAY + MINUTE),  # the bot's hold ran out, the views of the last day count
        ("c1", "browsing", "exit", 2 * DAY + 2 * HOUR),
    ]


def test_a_hold_removed_from_the_rules_ends_when_the_state_is_brought_up_to_them():
    r = run(rules(BOT), _burst(0, 0), until=2 * MINUTE)
    assert r.states["c1"].held_until == {"bot": T0 + MINUTE + DAY}
    engine = SegmentEngine(RuleSet((seg("bot", BURST),), "rs-2", CATALOG))  # another version: reconciled
    runner = LocalRunner(engine, states=r.states, out_of_orderness=5 * SECOND)
    runner.feed(ev(20, "product_view", HOUR))
    runner.advance(T0 + 2 * HOUR)
    # Reconciled at the next step, and re-evaluated at the state's clock (the burst's exit at 1 min).
    assert [(c.segment_id, c.kind, c.event_time - T0) for c in runner.changes] == [("bot", "exit", MINUTE)]
    assert runner.states["c1"].held_until == {} and T0 + MINUTE + DAY not in runner.states["c1"].timers


def test_event_id_hash_is_the_8_byte_blake2b_states_were_written_with():
    """States keep these hashes for deduplication across restarts and upgrades: the function
    may change how it computes them, never what they are."""
    from flink_jobs.core.engine import event_id_hash

    for event_id in ("e-1", "", "é-ünïcode", "x" * 300):
        digest = hashlib.blake2b(event_id.encode(), digest_size=8).digest()
        assert event_id_hash(event_id) == int.from_bytes(digest, "little")
    assert event_id_hash("e-1") == 11461081932386169649
