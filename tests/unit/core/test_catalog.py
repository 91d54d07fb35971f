"""The event catalogue as data: the shipped example, a team's own events end to end through the
loader, the engine and the parser, and the problems of rule sets without one or with two."""

from __future__ import annotations

import json

import pytest

from flink_jobs.core import loader
from flink_jobs.core.catalog import PropertySpec
from flink_jobs.core.conditions import Aggregate, SinceLast
from flink_jobs.core.diagnostics import RuleLoadError
from flink_jobs.core.durations import DAY, MINUTE
from flink_jobs.core.model import Comparison, Event, EventSelector
from flink_jobs.runtime.serde import EventSchema, Invalid, parse_event

from .helpers import CATALOG, T0, changes, run

TEAM_CATALOG = """\
version: 1
catalog:
  common_properties:
    platform: {type: string, values: [ios, android, web]}
  profile_fields:
    plan: string
    seats: number
  events:
    app_install: {}
    email_open:
      properties:
        campaign: {type: string, required: true}
    subscription_renewed:
      properties:
        amount: number
        months: number
    account_updated:
      updates_profile: true
  roles:
    purchase: {event: subscription_renewed, revenue: amount}
  scores: [churn_risk]
"""

TEAM_RULES = """\
version: 1
segments:
  - id: engaged_reader
    description: opened three emails of the spring campaign in a week
    owner: crm
    when:
      count: {event: email_open, where: {campaign: spring}}
      within: 7d
      at_least: 3
  - id: loyal_payer
    description: renewed for at least 200 in a year, and not long ago
    owner: finance
    when:
      rfm:
        recency: {at_most: 60d}
        monetary: {at_least: 200}
      within: 365d
  - id: team_plan
    description: on the team plan
    owner: sales
    when:
      profile: plan
      equals: team
"""


def _team():
    return loader.load_rules_from_texts({"catalog.yaml": TEAM_CATALOG, "team.yaml": TEAM_RULES})


def test_the_shipped_catalogue_declares_the_example_shop():
    assert CATALOG.event_types == (
        "page_view",
        "product_view",
        "cart_add",
        "cart_remove",
        "checkout",
        "purchase",
        "session_start",
        "identify",
    )
    assert list(CATALOG.property_types("checkout")) == ["session_id", "device", "channel", "cart_id", "cart_value"]
    assert set(CATALOG.profile_fields) <= set(CATALOG.property_types("identify"))
    assert CATALOG.profile_types == {"identify"} and "identify" not in CATALOG.activity_types
    assert (CATALOG.purchase_event, CATALOG.revenue_property) == ("purchase", "revenue")
    assert CATALOG.scores == ("purchase_propensity", "anomaly_score", "customer_cluster", "event_rate_z")
    assert CATALOG.version.startswith("cat-") and CATALOG.file.endswith("rules/catalog.yaml")


def test_a_teams_own_events_roles_and_profile_fields_make_the_rules():
    rules = _team()
    catalog = rules.catalog
    assert catalog.event_types == ("app_install", "email_open", "subscription_renewed", "account_updated")
    assert catalog.events["email_open"].properties["campaign"] == PropertySpec("string", required=True)
    assert catalog.events["app_install"].properties["platform"].values == ("ios", "android", "web")
    renewals = EventSelector(("subscription_renewed",))
    loyal = rules.by_id()["loyal_payer"].condition
    assert loyal.children[1] == Aggregate("sum", renewals, "amount", 365 * DAY, Comparison("at_least", 200))
    assert loyal.children[0] == SinceLast(renewals, Comparison("at_most", 60 * DAY))


def test_the_engine_reads_the_teams_events():
    rules = _team()
    events = [
        Event("a1", "c1", "account_updated", T0, {"plan": "team"}),
        *(Event(f"o{i}", "c1", "email_open", T0 + i * MINUTE, {"campaign": "spring"}) for i in range(3)),
        Event("r1", "c1", "subscription_renewed", T0 + DAY, {"amount": 120, "months": 12}),
        Event("r2", "c1", "subscription_renewed", T0 + 2 * DAY, {"amount": 120, "months": 12}),
    ]
    runner = run(rules, events, until=3 * DAY)
    assert changes(runner) == [
        ("c1", "team_plan", "enter", 0),
        ("c1", "engaged_reader", "enter", 2 * MINUTE),
        ("c1", "loyal_payer", "enter", 2 * DAY),
    ]


def test_the_parser_accepts_exactly_the_catalogues_events():
    schema = EventSchema(_team().catalog)

    def parse(event_type: str, **properties: object) -> Event | Invalid:
        doc = {"event_id": "e", "customer_id": "c", "event_type": event_type, "event_time": T0, "properties": properties}
        return parse_event(json.dumps(doc).encode(), now_ms=T0, schema=schema)

    assert isinstance(parse("email_open", campaign="spring", platform="ios"), Event)
    assert parse("email_open", platform="ios") == Invalid("schema", "email_open is missing required property: campaign")
    assert parse("page_view") == Invalid(
        "schema", "unknown event_type 'page_view'; expected one of: app_install, email_open, subscription_renewed, account_updated"
    )
    wrong = parse("app_install", platform="windows")
    assert isinstance(wrong, Invalid) and wrong.code == "schema" and "platform" in wrong.reason


def test_a_rule_on_an_event_the_catalogue_does_not_declare_points_at_the_catalogue():
    text = "version: 1\nsegments:\n  - id: s\n    when: {count: page_view, within: 1h, at_least: 1}\n"
    with pytest.raises(RuleLoadError) as caught:
        loader.load_rules_from_texts({"catalog.yaml": TEAM_CATALOG, "s.yaml": text})
    (problem,) = caught.value.diagnostics
    assert (problem.file, problem.line, problem.message) == ("s.yaml", 4, "unknown event type 'page_view'")
    assert problem.help == (
        "Event types in catalog.yaml: app_install, email_open, subscription_renewed, account_updated; "
        "declare a new event type under 'events:' in catalog.yaml"
    )


def test_rules_without_a_catalogue_or_with_two_are_refused():
    with pytest.raises(RuleLoadError) as caught:
        loader.load_rules_from_texts({"team.yaml": TEAM_RULES})
    assert [(d.file, d.message) for d in caught.value.diagnostics] == [("catalog.yaml", "no event catalogue")]
    with pytest.raises(RuleLoadError) as caught:
        loader.load_rules_from_texts({"catalog.yaml": TEAM_CATALOG, "more.yaml": TEAM_CATALOG, "team.yaml": TEAM_RULES})
    assert [(d.file, d.message) for d in caught.value.diagnostics] == [("more.yaml", "a second event catalogue")]


def test_the_catalogue_is_part_of_the_rule_set_version():
    edited = TEAM_CATALOG.replace("seats: number", "seats: number\n    region: string")
    one = _team().version
    two = loader.load_rules_from_texts({"catalog.yaml": edited, "team.yaml": TEAM_RULES}).version
    assert one != two


def test_every_undeclared_event_type_of_a_list_is_reported():
    text = "version: 1\nsegments:\n  - id: s\n    when: {count: [email_opn, push_open, app_install], within: 1h, at_least: 1}\n"
    with pytest.raises(RuleLoadError) as caught:
        loader.load_rules_from_texts({"catalog.yaml": TEAM_CATALOG, "s.yaml": text})
    assert [d.message for d in caught.value.diagnostics] == [
        "unknown event type 'email_opn'",
        "unknown event type 'push_open'",
    ]
