"""``segments publish`` and ``segments status`` against the running job: diff, backtest, one-unit
publication, the job's answer (accepted, or its located rejection with the old rules kept)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from flink_jobs.cli import publish
from flink_jobs.cli.segments import main as segments

from .conftest import MINUTE, RULES, Scenario, event
from .test_hot_reload import FRENCH, _produce_with_tick

pytestmark = pytest.mark.integration

LONG = """
  - id: long_window
    description: Viewed a product in the last 500 days.
    owner: integration-tests
    when:
      count: product_view
      within: 500d
      at_least: 1
"""


def _folder(tmp_path: Path, name: str, extra: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    shutil.copy(RULES / "catalog.yaml", folder / "catalog.yaml")
    (folder / "scenarios.yaml").write_text((RULES / "scenarios.yaml").read_text() + extra)
    return folder


def test_publish_diffs_backtests_publishes_one_unit_and_prints_the_jobs_answer(scenario: Scenario, tmp_path, capsys):
    settings = scenario.settings(**{"events.out_of_orderness": "1s"})
    now = int(time.time() * 1000)
    # Recent events for the backtest (the events topic's records of the last hour).
    recent = [{**event(f"r{i}", f"c-recent{i}", "identify", 0, country="FR"), "event_time": now - 60_000 + i} for i in range(3)]
    _produce_with_tick(scenario, [event("d1", "c-de", "identify", 0, country="DE")])  # a first change
    scenario.produce(recent)
    job = scenario.start_unbounded(**{"events.out_of_orderness": "1s"})
    try:
        scenario.read("changes", at_least=1, timeout=120)
        assert segments(["status", *settings]) == 0
        assert "rules rs-" in capsys.readouterr().out

        # A new segment: the diff and backtest name it, the job takes the set, the segment fills.
        french = _folder(tmp_path, "french", FRENCH)
        assert segments(["publish", str(french), "--yes", "--since", "1h", "--by", "ana", "--wait", "90", *settings]) == publish.EXIT_OK
        out = capsys.readouterr().out
        assert "+ french_speaker" in out and "added" in out and "(owner integration-tests)" in out
        assert "french_speaker" in out.split("backtest on")[1].splitlines()[1] and "-> 3 customers" in out
        [accepted] = [line for line in out.splitlines() if "accepted" in line]
        version = accepted.split("accepted, ")[1].split(" in use")[0]
        # The same audience from the events topic, as tools read it.
        argv = ["preview", "--rules", str(french), "--topic", scenario.topics["events"], "--bootstrap", scenario.stack.bootstrap]
        assert segments([*argv, "--format", "json"]) == 0
        report = json.loads(capsys.readouterr().out)
        [fr] = [s for s in report["segments"] if s["id"] == "french_speaker"]
        assert fr["members"] == ["c-recent0", "c-recent1", "c-recent2"]
        _produce_with_tick(scenario, [event("f1", "c-fr", "identify", 30 * MINUTE, country="FR")])
        deadline = time.monotonic() + 60
        while not any(k == "c-fr" and v["segment"] == "french_speaker" for k, v in scenario.read("changes")):
            assert time.monotonic() < deadline, scenario.read("changes")
            time.sleep(1)
        [entered] = [v for k, v in scenario.read("changes") if k == "c-fr"]
        assert entered["rule_version"] == version

        # Valid here (a publisher with a longer horizon), refused by the job: its located
        # rejection is printed, exit 1, and the job keeps the rules it had.
        long = _folder(tmp_path, "long", FRENCH + LONG)
        code = segments(["publish", str(long), "--yes", "--since", "0", "--wait", "90", *settings, "--set", "job.horizon=1000d"])
        printed = capsys.readouterr()
        assert code == publish.EXIT_REJECTED, printed
        assert f"rejected, still using {version}" in printed.err and "scenarios.yaml:" in printed.err and "500d" in printed.err
        assert segments(["status", *settings]) == 0
        status = capsys.readouterr().out
        assert f"rules {version}" in status and "published by ana" in status and "last publication rejected" in status

        # Publishing what runs is a no-op.
        assert segments(["publish", str(french), "--yes", *settings]) == publish.EXIT_OK
        assert "nothing to publish" in capsys.readouterr().out
    finally:
        job.cancel().result()


HISTORY = """
  - id: browsed_this_month
    description: Viewed a page in the last 30 days (from the aggregates the job already holds).
    owner: integration-tests
    when:
      count: page_view
      within: 30d
      at_least: 1
"""


def test_a_new_segment_over_history_fills_without_new_events_and_a_removed_one_ends_when_taken(scenario: Scenario, tmp_path, capsys):
    settings = scenario.settings(**{"events.out_of_orderness": "1s"})
    # Three customers viewed pages a few days ago and send nothing after the publish; c-de is in
    # german_speaker (a segment without timers: a member until the rule goes).
    past = [event(f"p{i}", f"c-past{i}", "page_view", i * MINUTE, url="/") for i in range(3)]
    _produce_with_tick(scenario, [*past, event("d1", "c-de", "identify", 5 * MINUTE, country="DE")])
    job = scenario.start_unbounded(**{"events.out_of_orderness": "1s"})
    try:
        first = scenario.read("changes", at_least=1, timeout=120)
        assert [(k, v["segment"]) for k, v in first] == [("c-de", "german_speaker")]
        entered_at = first[0][1]["event_time"]

        # The new set: browsed_this_month added, german_speaker removed.
        folder = tmp_path / "next"
        folder.mkdir()
        (folder / "catalog.yaml").write_text((RULES / "catalog.yaml").read_text())
        scenarios = (RULES / "scenarios.yaml").read_text()
        head, rest = scenarios.split("  - id: german_speaker", 1)
        kept = rest.split("\n\n", 1)[1] if "\n\n" in rest else ""
        (folder / "scenarios.yaml").write_text(head + kept + HISTORY)
        assert segments(["publish", str(folder), "--yes", "--since", "0", "--wait", "90", *settings]) == publish.EXIT_OK
        out = capsys.readouterr().out
        assert "+ browsed_this_month" in out and "- german_speaker" in out
        version = [line for line in out.splitlines() if "accepted" in line][0].split("accepted, ")[1].split(" in use")[0]

        # No new event for any of them: by the next checkpoint (1 s here) the job has moved them.
        deadline = time.monotonic() + 60
        while True:
            changes = scenario.read("changes")
            filled = {k for k, v in changes if v["segment"] == "browsed_this_month" and v["kind"] == "enter"}
            removed = [v for k, v in changes if k == "c-de" and v["kind"] == "exit"]
            if filled == {"c-past0", "c-past1", "c-past2"} and removed:
                break
            assert time.monotonic() < deadline, changes
            time.sleep(1)
        [exit_] = removed
        assert exit_["segment"] == "german_speaker" and exit_["rule_version"] == version
        assert exit_["event_time"] > entered_at and "segment removed from the rules" in exit_["reason"]
        assert "german_speaker" not in scenario.redis_state().get("cust:c-de", {})
    finally:
        job.cancel().result()
