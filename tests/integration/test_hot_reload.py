"""Rules published to the rules topic take effect without a restart; a broken set is rejected
and the last good rules stay in use."""

from __future__ import annotations

import time

import pytest

from flink_jobs.core.loader import load_rules_from_texts

from .conftest import MINUTE, RULES, Scenario, event

pytestmark = pytest.mark.integration

FRENCH = """
  - id: french_speaker
    description: Profile country is FR.
    owner: integration-tests
    when:
      profile: country
      equals: FR
"""


def _publish(scenario: Scenario, name: str, text: str | None) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=scenario.stack.bootstrap, acks="all")
    producer.send(scenario.topics["rules"], key=name.encode(), value=None if text is None else text.encode())
    producer.flush()
    producer.close()


def _produce_with_tick(scenario: Scenario, records: list[dict]) -> None:
    """The events, then one of another customer 10s later: the watermark (1s out-of-orderness)
    passes the events, so the job processes them without waiting for the end of the input."""
    last = max(r["event_time"] for r in records)
    tick = {**event(f"tick-{last}", "c-tick", "page_view", 0), "event_time": last + 10_000}
    scenario.produce([*records, tick])


def _wait_for(scenario: Scenario, predicate, customer: str, first_at: int, timeout: float = 90):
    """Produce identify events for ``customer`` (a new event id each time, so a customer seen
    under the old rules is reconciled at its next step) until ``predicate(changes)`` holds."""
    deadline = time.monotonic() + timeout
    n = 0
    while True:
        _produce_with_tick(scenario, [event(f"{customer}-{n}", customer, "identify", first_at + n * MINUTE, country="FR")])
        n += 1
        settle = time.monotonic() + 5
        while time.monotonic() < settle:
            changes = scenario.read("changes")
            if predicate(changes):
                return changes
            time.sleep(0.5)
        assert time.monotonic() < deadline, f"not seen in {timeout}s: {changes}"


def test_new_rules_apply_live_and_broken_rules_are_rejected(scenario: Scenario):
    base = (RULES / "scenarios.yaml").read_text()
    new_texts = {"catalog.yaml": (RULES / "catalog.yaml").read_text(), "scenarios.yaml": base + FRENCH}
    new_version = load_rules_from_texts(new_texts).version

    _produce_with_tick(scenario, [event("d1", "c-de", "identify", 0, country="DE")])
    job = scenario.start_unbounded(**{"events.out_of_orderness": "1s"})
    try:
        first = scenario.read("changes", at_least=1, timeout=120)
        assert [(k, v["segment"], v["kind"]) for k, v in first] == [("c-de", "german_speaker", "enter")]
        old_version = first[0][1]["rule_version"]

        # A set is its rules and their catalogue: the rules alone are rejected until it comes.
        _publish(scenario, "scenarios.yaml", new_texts["scenarios.yaml"])
        _publish(scenario, "catalog.yaml", new_texts["catalog.yaml"])
        changes = _wait_for(
            scenario, lambda cs: any(v["segment"] == "french_speaker" for _, v in cs), "c-fr", 1 * MINUTE
        )
        entered = [v for k, v in changes if k == "c-fr" and v["segment"] == "french_speaker"]
        assert [v["kind"] for v in entered] == ["enter"]
        assert entered[0]["rule_version"] == new_version != old_version

        # A second file that does not load: the whole set is rejected, the last good stays.
        _publish(scenario, "broken.yaml", "version: 1\nsegments:\n  - id: Not Valid\n")
        time.sleep(3)
        changes = _wait_for(
            scenario,
            lambda cs: any(k == "c-fr2" and v["segment"] == "french_speaker" for k, v in cs),
            "c-fr2",
            30 * MINUTE,
        )
        entered = [v for k, v in changes if k == "c-fr2"]
        assert [(v["segment"], v["kind"], v["rule_version"]) for v in entered] == [
            ("french_speaker", "enter", new_version)
        ]
    finally:
        job.cancel().result()
    assert scenario.read("dlq") == [] and scenario.read("late") == []


def test_hostile_rule_files_on_the_topic_are_refused_and_the_job_keeps_going(scenario: Scenario):
    """Each bound of core/syntax/bounds.py, tried on the running job: every file is refused, the
    rules in use stay, events keep flowing, and the job never restarts (restart_attempts is 0:
    a crash would end it)."""
    from flink_jobs.core.syntax import bounds

    broken = RULES.parents[1] / "rules_broken"
    segment = "  - {{id: s{n}, description: x, owner: x, when: {{count: page_view, within: 1h, at_least: 1}}}}\n"
    hostile = {
        name: (broken / name).read_text()
        for name in ("hostile_deep_nesting.yaml", "hostile_alias_bomb.yaml", "hostile_recursive_anchor.yaml", "hostile_many_aliases.yaml")
    }
    hostile["hostile_big.yaml"] = "version: 1\nsegments:\n" + "# padding\n" * (bounds.MAX_FILE_BYTES // 10 + 1)
    hostile["hostile_many_segments.yaml"] = "version: 1\nsegments:\n" + "".join(segment.format(n=n) for n in range(bounds.MAX_SEGMENTS + 1))

    _produce_with_tick(scenario, [event("d0", "c-de0", "identify", 0, country="DE")])
    job = scenario.start_unbounded(**{"events.out_of_orderness": "1s"})
    try:
        scenario.read("changes", at_least=1, timeout=120)
        # The rules in use on the topic too, so that each hostile file is read with a catalogue
        # (a set without one is refused before its rule files are read).
        texts = {path.name: path.read_text() for path in sorted(RULES.glob("*.yaml"))}
        version = load_rules_from_texts(texts).version
        for name, text in texts.items():
            _publish(scenario, name, text)
        for n, (name, text) in enumerate(hostile.items(), start=1):
            _publish(scenario, name, text)
            customer = f"c-de{n}"
            started = time.monotonic()
            _produce_with_tick(scenario, [event(f"d{n}", customer, "identify", n * 10 * MINUTE, country="DE")])
            entered = scenario.read("changes", at_least=n + 1, timeout=60)
            [(segment, rule_version)] = [(v["segment"], v["rule_version"]) for k, v in entered if k == customer]
            assert (segment, rule_version) == ("german_speaker", version), name
            print(f"{name}: next change {time.monotonic() - started:.1f} s after it was published")
            assert job.get_job_status().result().name == "RUNNING", name
            _publish(scenario, name, None)  # each bound alone in the next set
    finally:
        job.cancel().result()
