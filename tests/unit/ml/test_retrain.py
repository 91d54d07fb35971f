"""Retraining on the product's own events (flink_jobs/ml/retrain.py, flink_jobs/cli/retrain.py):
a time split, a comparison with the model in use, and a model written only when not worse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flink_jobs import synthetic
from flink_jobs.cli import retrain as command
from flink_jobs.core.durations import DAY
from flink_jobs.ml.cards import load_card
from flink_jobs.ml.published import model_record
from flink_jobs.ml.retrain import split_times

REPO = Path(__file__).resolve().parents[3]
FEED = synthetic.FeedConfig(customers=3_000, events=12_000, seed=21, history_days=600, history_share=0.6)


@pytest.fixture(scope="module")
def replay(tmp_path_factory) -> Path:
    """The demo's kind of feed (order history, then live visits) as a JSON-lines replay file."""
    path = tmp_path_factory.mktemp("replay") / "events.jsonl"
    with path.open("wb") as out:
        for record in synthetic.generate_feed(FEED):
            out.write(record.value + b"\n")
    return path


def test_the_split_holds_out_the_latest_horizon():
    from flink_jobs.core.model import Event

    events = [Event(f"e{i}", "c", "purchase", i * DAY, {}) for i in range(601)]
    split = split_times(events, None)
    assert (split.horizon, split.holdout_cut, split.train_cut) == (200 * DAY, 400 * DAY, 200 * DAY)
    assert split_times(events * 2, 30 * DAY).train_cut == 540 * DAY
    assert split_times([Event("e", "c", "purchase", 0, {}), Event("f", "c", "purchase", 3000 * DAY, {})], None).horizon == 273 * DAY


def test_a_model_not_worse_is_written_with_a_card_the_job_accepts(replay, tmp_path, capsys):
    out = tmp_path / "retrained"
    # Any tolerance this wide counts the retrained model as not worse.
    assert command.main(["--events", str(replay), "--out", str(out), "--tolerance", "1"]) == 0
    printed = capsys.readouterr()
    assert "in use     1.0.0: average precision" in printed.out and "retrained  1.1.0: average precision" in printed.out
    assert "invalid records skipped" in printed.err  # the feed's malformed records, as the job's DLQ takes them
    card = load_card(out / "purchase_propensity.card.json", ["purchase_propensity"])
    assert card.version == "1.1.0"
    raw = json.loads((out / "purchase_propensity.card.json").read_text())
    assert raw["training"]["retrained_from"] == "1.0.0" and raw["metrics"]["in_use_on_the_same_holdout"]["version"] == "1.0.0"
    key, _, published = model_record(out / "purchase_propensity.card.json")  # sha256 and tensors match
    assert (key, published.version) == ("models/purchase_propensity", "1.1.0")


def test_a_worse_model_is_not_written(replay, tmp_path, capsys):
    out = tmp_path / "retrained"
    # A negative tolerance: the retrained model would have to beat the one in use by 1.
    assert command.main(["--events", str(replay), "--out", str(out), "--tolerance", "-1"]) == 1
    assert "not written: worse than the model in use" in capsys.readouterr().out
    assert not out.exists()


def test_too_little_history_says_so(tmp_path, capsys):
    path = tmp_path / "few.jsonl"
    with path.open("wb") as out:
        for record in synthetic.generate_feed(synthetic.FeedConfig(customers=50, events=500, seed=3)):
            out.write(record.value + b"\n")
    assert command.main(["--events", str(path), "--out", str(tmp_path / "x")]) == 1
    assert "not enough to tell" in capsys.readouterr().err


def test_the_schedules_call_the_retraining_and_the_publisher_with_flags_they_know(capsys):
    import re

    import yaml

    from flink_jobs.cli.segments import main as segments

    cronjob = yaml.safe_load((REPO / "deploy" / "kubernetes" / "base" / "retrain-cronjob.yaml").read_text())
    assert (cronjob["apiVersion"], cronjob["kind"]) == ("batch/v1", "CronJob")
    [container] = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    scripts = [container["args"][0], (REPO / "deploy" / "cron" / "retrain.cron").read_text()]
    with pytest.raises(SystemExit):
        command.main(["--help"])
    retrain_help = capsys.readouterr().out
    assert segments(["publish-model", "--help"]) == 0
    publish_help = capsys.readouterr().out
    for script in scripts:
        retrain_part, publish_part = script.split("flink_jobs.cli.retrain")[1].split("publish-model")
        assert {f for f in re.findall(r"(--[a-z-]+)", retrain_part)} <= set(re.findall(r"(--[a-z-]+)", retrain_help))
        assert {f for f in re.findall(r"(--[a-z-]+)", publish_part)} <= set(re.findall(r"(--[a-z-]+)", publish_help))
