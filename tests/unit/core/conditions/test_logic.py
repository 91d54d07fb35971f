"""``all``, ``any``, ``not``, lists and several comparisons."""

from __future__ import annotations

from flink_jobs.core.conditions import Aggregate, AllOf, AnyOf, Not, ProfileField, Score
from flink_jobs.core.durations import HOUR
from flink_jobs.core.model import Comparison

from ..helpers import condition as _condition
from ..helpers import selector as _sel

# ---- reading it -----------------------------------------------------------------------------------


def test_all_any_not_and_a_list_means_all_of():
    combined = _condition(
        "all:\n"
        "  - score: anomaly_score\n"
        "    less_than: 0.5\n"
        "  - not:\n"
        "      profile: email_opt_in\n"
        "      equals: false\n"
        "  - any:\n"
        "      - profile: tier\n"
        "        equals: gold\n"
        "      - - profile: age\n"
        "          at_least: 18\n"
        "        - profile: country\n"
        "          equals: DE\n"
    )
    assert combined == AllOf(
        (
            Score("anomaly_score", Comparison("less_than", 0.5)),
            Not(ProfileField("email_opt_in", Comparison("equals", False))),
            AnyOf(
                (
                    ProfileField("tier", Comparison("equals", "gold")),
                    AllOf(
                        (
                            ProfileField("age", Comparison("at_least", 18)),
                            ProfileField("country", Comparison("equals", "DE")),
                        )
                    ),
                )
            ),
        )
    )
    assert _condition("- score: anomaly_score\n  less_than: 0.5") == Score(
        "anomaly_score", Comparison("less_than", 0.5)
    )


def test_several_comparisons_make_an_all_of_one_leaf_each_and_symbols_become_words():
    assert _condition("count: product_view\nwithin: 1h\n'>=': 2\nat_most: 5") == AllOf(
        (
            Aggregate("count", _sel("product_view"), None, HOUR, Comparison("at_least", 2)),
            Aggregate("count", _sel("product_view"), None, HOUR, Comparison("at_most", 5)),
        )
    )
    assert _condition("score: anomaly_score\n'!=': 1\n'<': 3").children == (
        Score("anomaly_score", Comparison("not_equals", 1)),
        Score("anomaly_score", Comparison("less_than", 3)),
    )
