"""The job submitted with `flink run` to a standalone cluster started from the wheel's Flink."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request

import pytest

from .conftest import MINUTE, REPO, T0, Scenario, event

pytestmark = pytest.mark.integration

CLUSTER = str(REPO / "deploy" / "local" / "cluster.sh")
MIB = 1024 * 1024


def _taskmanager_memory() -> dict[str, int]:
    """The memory configuration the cluster's TaskManager reports (Flink REST API)."""
    port = os.environ.get("FLINK_REST_PORT", "8081")
    with urllib.request.urlopen(f"http://localhost:{port}/taskmanagers", timeout=10) as r:
        (tm,) = json.load(r)["taskmanagers"]
    with urllib.request.urlopen(f"http://localhost:{port}/taskmanagers/{tm['id']}", timeout=10) as r:
        return json.load(r)["memoryConfiguration"]


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
        # The state caches (job.state_cache_memory per slot) reserved as task off-heap memory,
        # on top of Flink's own 1600m: the heap stays what Flink gives 1600m (cluster_memory).
        memory = _taskmanager_memory()
        assert memory["taskOffHeap"] == 2 * 768 * MIB
        assert memory["totalProcessMemory"] == (1600 + 2 * 768) * MIB
        assert memory["taskHeap"] >= 300 * MIB
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
