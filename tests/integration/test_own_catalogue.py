"""A team's own event catalogue, end to end with no Python change: its rules validate, preview
shows their audience, and the real job on Kafka accepts exactly its events and writes the
memberships to Redis (tests/integration/team_rules/: new event types, revenue called 'amount',
profile fields of its own)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flink_jobs.cli import main
from flink_jobs.core.engine import EngineConfig, SegmentEngine
from flink_jobs.core.loader import load_rules
from flink_jobs.core.runner import LocalRunner
from flink_jobs.runtime.serde import EventSchema, Invalid, encode_change, parse_event

from .conftest import MINUTE, T0, Scenario, event
from .test_segmentation_job import MAX_WATERMARK, _by_customer

pytestmark = pytest.mark.integration

TEAM = Path(__file__).resolve().parent / "team_rules"
DAY = 24 * 60 * MINUTE

EVENTS = [
    event("u1", "c-ana", "account_updated", 0, plan="team", seats=12),
    *(event(f"o{i}", "c-ana", "email_open", i * MINUTE, campaign="spring", platform="ios") for i in range(3)),
    event("r1", "c-ana", "subscription_renewed", DAY, amount=120, months=12),
    event("r2", "c-ana", "subscription_renewed", 2 * DAY, amount=120, months=12),
    event("i1", "c-ben", "app_install", 0, platform="android"),
    event("u2", "c-ben", "account_updated", 3 * DAY, plan="solo"),
    # Not this team's events: the shop's page view, and an email open without its campaign.
    event("x1", "c-ben", "page_view", MINUTE, url="/"),
    event("x2", "c-ben", "email_open", 2 * MINUTE, platform="web"),
]


def _reference() -> LocalRunner:
    rules = load_rules([TEAM])
    schema = EventSchema(rules.catalog)
    runner = LocalRunner(SegmentEngine(rules, EngineConfig()), out_of_orderness=5 * MINUTE)
    for raw in EVENTS:
        parsed = parse_event(json.dumps(raw).encode(), now_ms=T0 + 365 * DAY, schema=schema)
        if not isinstance(parsed, Invalid):
            runner.feed(parsed)
    runner.advance(MAX_WATERMARK)
    return runner


def test_a_teams_own_catalogue_from_validate_to_redis(scenario: Scenario, tmp_path, capsys):
    assert main(["validate", str(TEAM)]) == 0
    assert capsys.readouterr().out.startswith("ok: 4 segments in 2 files")

    feed = tmp_path / "events.jsonl"
    feed.write_text("".join(json.dumps(e) + "\n" for e in EVENTS))
    assert main(["preview", "--rules", str(TEAM), "--events", str(feed), "--out-of-orderness", "5m"]) == 0
    preview = capsys.readouterr()
    table = preview.out.split("sample members\n", 1)[1].split("\n\n", 1)[0]
    audience = {line.split()[0]: int(line.split()[1]) for line in table.splitlines()}
    # At the last event (day 3): ana reads the spring campaign, pays and is on the team plan; ben
    # installed the app and opened nothing for a day, and a day later that match ended (keep 24h).
    assert audience == {"engaged_reader": 1, "loyal_payer": 1, "team_plan": 1, "installed_not_opened": 0}
    assert "2 invalid lines skipped" in preview.err

    scenario.produce(EVENTS)
    scenario.run_bounded(**{"job.rules_path": str(TEAM)})

    reference = _reference()
    expected = [(c.customer_id, json.loads(encode_change(c))) for c in reference.changes]
    assert _by_customer(scenario.read("changes")) == _by_customer(expected)
    segments = {seg for changes in _by_customer(expected).values() for seg in (c["segment"] for c in changes)}
    assert segments == {"engaged_reader", "loyal_payer", "team_plan", "installed_not_opened"}
    members = {
        (key.split(":", 1)[1], seg) for key, value in scenario.redis_state().items() if key.startswith("cust:") for seg in value
    }
    assert members == {(cid, seg) for cid, state in reference.states.items() for seg in state.members}
    assert ("c-ana", "team_plan") in members  # a profile membership outlives the end of the input

    dead = [value for _, value in scenario.read("dlq")]
    assert [d["reason"] for d in dead] == [
        "unknown event_type 'page_view'; expected one of: app_install, email_open, subscription_renewed, account_updated",
        "email_open is missing required property: campaign",
    ]
