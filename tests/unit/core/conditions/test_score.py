"""``score``: how it is read, and the scorer's values."""

from __future__ import annotations

from flink_jobs.core import loader
from flink_jobs.core.conditions import InSegment, Score
from flink_jobs.core.durations import HOUR
from flink_jobs.core.model import Comparison
from flink_jobs.core.scoring import FixedScorer

from ..helpers import CATALOG, changes, ev, rules, run, seg
from ..helpers import condition as _condition

# ---- reading it -----------------------------------------------------------------------------------


def test_score_and_segment():
    assert _condition("score: purchase_propensity\nat_least: 0.8") == Score(
        "purchase_propensity", Comparison("at_least", 0.8)
    )
    text = (
        "version: 1\nsegments:\n"
        "  - id: a\n    when: {segment: b}\n"
        "  - id: b\n    when: {score: anomaly_score, '>': 0.5}\n"
    )
    assert loader.load_rules_from_texts({"t.yaml": text}, catalog=CATALOG).segments[0].condition == InSegment("b")


# ---- evaluating it --------------------------------------------------------------------------------


def test_score_condition_reads_the_scorer():
    likely = seg("likely_buyers", Score("purchase_propensity", Comparison("at_least", 0.8)))
    scorer = FixedScorer({"c1": {"purchase_propensity": 0.91}}, default={"purchase_propensity": 0.2})
    r = run(rules(likely), [ev(1, "page_view", 0), ev(2, "page_view", 0, customer="c2")], until=HOUR, scorer=scorer)
    assert changes(r) == [("c1", "likely_buyers", "enter", 0)]
    assert r.changes[0].reason == "score purchase_propensity = 0.91 >= 0.8"
