"""The job submitted with `flink run` to a standalone cluster started from the wheel's Flink."""

from __future__ import annotations

import subprocess

import pytest

from .conftest import MINUTE, REPO, T0, Scenario, event

pytestmark = pytest.mark.integration

CLUSTER = str(REPO / "deploy" / "local" / "cluster.sh")


def test_job_runs_on_a_standalone_cluster(scenario: Scenario):
    scenario.produce(
        [
            event("v1", "c-views", "product_view", 0),
            event("v2", "c-views", "product_view", 1 * MINUTE),
            event("v3", "c-views", "product_view", 2 * MINUTE),
        ]
    )
    scenario.produce([b"{broken"], key=b"c-x")
    started = subprocess.run([CLUSTER, "start"], capture_output=True, text=True, timeout=300)
    assert started.returncode == 0, started.stderr
    try:
        submitted = subprocess.run(
            [CLUSTER, "submit", "--bounded", *scenario.settings()], capture_output=True, text=True, timeout=600
        )
        assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
        assert "Job has been submitted with JobID" in submitted.stdout
    finally:
        subprocess.run([CLUSTER, "stop"], capture_output=True, text=True, timeout=120)
    changes = [(k, v["segment"], v["kind"], v["event_time"] - T0) for k, v in scenario.read("changes")]
    assert changes == [
        ("c-views", "repeat_product_viewer", "enter", 2 * MINUTE),
        ("c-views", "repeat_product_viewer", "exit", 10 * MINUTE),
    ]
    assert [(k, v["code"]) for k, v in scenario.read("dlq")] == [("c-x", "not_json")]
    assert scenario.redis_state() == {"ver:c-views": {"repeat_product_viewer": T0 + 10 * MINUTE}}
    assert subprocess.run([CLUSTER, "status"], capture_output=True).returncode == 3
