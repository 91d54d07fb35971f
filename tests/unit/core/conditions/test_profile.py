"""``profile``: fields typed as the catalogue declares them."""

from __future__ import annotations

from flink_jobs.core.conditions import ProfileField
from flink_jobs.core.model import Comparison

from ..helpers import condition as _condition

# ---- reading it -----------------------------------------------------------------------------------


def test_profile_fields_are_typed_by_the_field():
    assert _condition("profile: country\nin: [DE, AT, CH]") == ProfileField(
        "country", Comparison("in", ("DE", "AT", "CH"))
    )
    assert _condition("profile: email_opt_in\nequals: false") == ProfileField(
        "email_opt_in", Comparison("equals", False)
    )
    # Timestamps are ISO-8601 text held as epoch milliseconds (UTC when no zone is given).
    assert _condition("profile: signup_at\nat_least: 2024-01-01") == ProfileField(
        "signup_at", Comparison("at_least", 1_704_067_200_000)
    )
    assert _condition("profile: signup_at\nless_than: '2024-01-01T01:00:00+01:00'") == (
        ProfileField("signup_at", Comparison("less_than", 1_704_067_200_000))
    )
