"""The synthetic feed follows the event catalogue: the example shop's personas for a catalogue that
declares their events, visits of its own event types for any other."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from flink_jobs.core.loader import load_catalog
from flink_jobs.runtime.serde import EventSchema, Invalid, ParseLimits, parse_event
from flink_jobs.synthetic import FeedConfig, _Feed, generate_feed, speaks_personas

from .core.helpers import CATALOG

TEAM = load_catalog(Path(__file__).resolve().parents[1] / "integration" / "team_rules" / "catalog.yaml")
NOW = 1_767_225_600_000 + 30 * 24 * 3600 * 1000


def _verdicts(catalog, records):
    schema = EventSchema(catalog)
    return [(r.kind, parse_event(r.value, now_ms=NOW, schema=schema, limits=ParseLimits())) for r in records]


def test_the_example_catalogue_takes_the_persona_feed_and_a_teams_gets_its_own_events():
    assert speaks_personas(CATALOG) and not speaks_personas(TEAM)
    config = FeedConfig(customers=40, events=600, malformed_share=0.05)
    for catalog in (CATALOG, TEAM):
        verdicts = _verdicts(catalog, list(generate_feed(config, catalog)))
        valid = [p for kind, p in verdicts if kind != "malformed"]
        assert valid and all(not isinstance(p, Invalid) for p in valid)
        assert all(isinstance(p, Invalid) for kind, p in verdicts if kind == "malformed")
        assert {p.event_type for p in valid} <= set(catalog.event_types)
    team = {p.event_type for kind, p in _verdicts(TEAM, generate_feed(config, TEAM)) if kind != "malformed"}
    assert team == set(TEAM.event_types)
    required = [p for kind, p in _verdicts(TEAM, generate_feed(config, TEAM)) if kind != "malformed" and p.event_type == "email_open"]
    assert required and all("campaign" in p.properties for p in required)


def test_the_catalogue_feed_is_deterministic_for_a_seed():
    config = FeedConfig(customers=10, events=100)
    assert [r.value for r in generate_feed(config, TEAM)] == [r.value for r in generate_feed(config, TEAM)]


def test_a_later_phase_keeps_the_customers_and_their_personas_but_not_their_ids():
    first = list(generate_feed(FeedConfig(customers=50, events=600, seed=3)))
    later = list(generate_feed(FeedConfig(customers=50, events=600, seed=3, phase="live")))
    ids = {json.loads(r.value)["event_id"] for r in first if r.kind == "valid"}
    later_ids = {json.loads(r.value)["event_id"] for r in later if r.kind == "valid"}
    assert ids and later_ids and not ids & later_ids
    assert [r.value for r in first] != [r.value for r in later]  # other journeys
    assert _Feed(FeedConfig(customers=50, seed=3)).persona_of == _Feed(FeedConfig(customers=50, seed=3, phase="live")).persona_of


def test_visit_weights_make_one_persona_visit_more():
    config = FeedConfig(customers=400, events=20_000, seed=5)
    personas = _Feed(config).persona_of

    def regular_share(feed_config: FeedConfig) -> float:
        visits = [json.loads(r.value)["customer_id"] for r in generate_feed(feed_config) if r.kind == "valid"]
        return sum(personas[int(c[2:])] == "regular" for c in visits) / len(visits)

    assert regular_share(replace(config, visit_weights={"regular": 12.0})) > 2 * regular_share(config)
