"""The short fault-injection run (deploy/local/faults.py): a standalone cluster with two
TaskManagers, TaskManagers killed with SIGKILL right after a checkpoint and while one is in
progress, restarted as a watchdog would, under a live feed; then the same input without faults.
The committed change records and Redis must be identical: nothing lost, duplicated or
reordered. The long run (100 faults and more) is the same script: `deploy/local/faults.py`."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from .conftest import REPO, Stack

pytestmark = pytest.mark.integration

_spec = importlib.util.spec_from_file_location("faults", REPO / "deploy" / "local" / "faults.py")
assert _spec and _spec.loader
faults = importlib.util.module_from_spec(_spec)
sys.modules["faults"] = faults  # its dataclasses look their module up there
_spec.loader.exec_module(faults)


def test_taskmanagers_killed_under_a_live_feed_lose_duplicate_and_reorder_nothing(stack: Stack):
    report = faults.run(6, bootstrap=stack.bootstrap, redis_url=stack.redis_url, redis_down_s=15)
    print(report.table())
    assert report.injected == list(faults.KINDS)
    assert report.changes > 100 and report.records_in > 1000
    assert (report.lost, report.duplicated, report.reordered) == (0, 0, 0), report.table()
    assert report.redis_equal, report.table()
