"""The SQL function that reads event time for the source's watermark agrees with the Python parser."""

from __future__ import annotations

import json

import pytest

from flink_jobs.flink.jvm import ensure_jar
from flink_jobs.flink.sources import event_time_sql, register_event_time_function
from flink_jobs.runtime.serde import _timestamp

pytestmark = pytest.mark.integration

NOW_BOUND = 24 * 3600 * 1000


def test_watermark_event_time_matches_the_parser(stack):
    from pyflink.table import EnvironmentSettings, TableEnvironment

    readable = [
        "2026-01-01T11:00:00+01:00",
        "2026-01-01T10:00:00Z",
        "2026-01-01T10:00:00.123Z",
        "2026-01-01T10:00:00.5-00:30",
        "2026-01-01T10:00:00.123456+05:45",
        1767261600123,
    ]
    ignored = ["2026-01-01T10:00:00", "garbage", 1.5e12, "2999-01-01T00:00:00Z", 32503680000000, None, [1], {"a": 1}]
    docs = [json.dumps({"event_time": v}) for v in readable + ignored] + ["not json", "{}", '{"event_time": 17672']
    t_env = TableEnvironment.create(EnvironmentSettings.in_batch_mode())
    t_env.get_config().set("pipeline.jars", ensure_jar().as_uri())
    register_event_time_function(t_env)
    rows = ", ".join(f"({i}, CAST('" + d.replace("'", "''") + "' AS BYTES))" for i, d in enumerate(docs))
    result = t_env.execute_sql(f"SELECT i, {event_time_sql('v', NOW_BOUND)} FROM (VALUES {rows}) AS T(i, v)")
    with result.collect() as it:
        # Rows come back in no particular order when the query runs in parallel.
        got = [time for _, time in sorted(tuple(row) for row in it)]
    assert got == [_timestamp(v) for v in readable] + [0] * (len(ignored) + 3)
