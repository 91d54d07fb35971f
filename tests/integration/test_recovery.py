"""Recovery: a job killed without warning and started again from its last checkpoint gives
exactly the result of one uninterrupted run (Redis memberships and committed change records).

The first job's process is killed (SIGKILL), as a crash ends it: no savepoint, no flush. Everything it did
after its last checkpoint (records read, states changed in memory, timers) is lost and done
again by the second job from that checkpoint; Kafka transactions keep its uncommitted change
records out of read_committed consumers, and Redis writes converge because each is applied only
if it is not older than the last one for the same (customer, segment).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flink_jobs.core.engine import EngineConfig, SegmentEngine
from flink_jobs.core.loader import load_rules
from flink_jobs.core.runner import LocalRunner
from flink_jobs.serde import encode_change, parse_event

from .conftest import MINUTE, RULES, T0, Scenario, event
from .test_segmentation_job import _by_customer

pytestmark = pytest.mark.integration


def _events(first: int, last: int) -> list[dict]:
    """Per customer: product views a minute apart and a cart that is never checked out."""
    out = []
    for minute in range(first, last):
        for c in range(6):
            out.append(event(f"v-{c}-{minute}", f"c-{c}", "product_view", minute * MINUTE + c, product_id=f"p{minute % 3}"))
            if minute % 7 == c:
                out.append(event(f"a-{c}-{minute}", f"c-{c}", "cart_add", minute * MINUTE + c + 1, cart_id=f"k{c}", cart_value=60))
    return out


def _latest_checkpoint(root: Path, after: float) -> Path | None:
    done = [p.parent for p in root.glob("*/chk-*/_metadata") if p.stat().st_mtime > after]
    return max(done, key=lambda p: p.stat().st_mtime) if done else None


def test_a_killed_job_restarted_from_its_checkpoint_gives_the_uninterrupted_result(scenario: Scenario, tmp_path):
    """Two unbounded runs of the same program, the second restored from the first's checkpoint."""
    first, second = _events(0, 40), _events(40, 80)
    checkpoints = tmp_path / "checkpoints"
    settings = {
        "job.delivery_guarantee": "exactly-once",
        "job.transactional_id_prefix": f"it-{scenario.name}",
        "job.checkpoint_dir": checkpoints.as_uri(),
        "job.checkpoint_interval": "1s",
        "events.out_of_orderness": "1m",
    }
    scenario.produce(first)
    job = _start_job(scenario, tmp_path / "first.log", **settings)
    try:
        # Wait until the first part is in Redis and a checkpoint completed after that.
        deadline = time.monotonic() + 180
        while not any(k.startswith("cust:") for k in scenario.redis_state()):
            assert job.poll() is None, f"the first job ended ({job.returncode}):\n{_tail(tmp_path / 'first.log')}"
            assert time.monotonic() < deadline, f"the first job wrote nothing to Redis:\n{_tail(tmp_path / 'first.log')}"
            time.sleep(1)
        seen_at = time.time()
        checkpoint = None
        while checkpoint is None:
            assert time.monotonic() < deadline, f"no checkpoint completed under {checkpoints}"
            time.sleep(1)
            checkpoint = _latest_checkpoint(checkpoints, seen_at)
        # Events after the checkpoint: the first job may read (and process) some of them before
        # it is cancelled; the second must not count them twice.
        scenario.produce(second[: len(second) // 2])
        time.sleep(3)
    finally:
        _kill(job)  # as a crash ends it: the process and its JVM gone at once
    checkpoint = _latest_checkpoint(checkpoints, seen_at)
    assert checkpoint is not None
    scenario.produce(second[len(second) // 2 :])

    # The same program in a new process, restored from the checkpoint (a bounded run would be
    # another program: its source differs, and Flink refuses to map the state; and a second job in
    # the same JVM gets other generated uids for its table operators).
    runner = _reference(first + second)
    expected = [(c.customer_id, json.loads(encode_change(c))) for c in runner.changes]
    job = _start_job(scenario, tmp_path / "second.log", **settings, **{"job.restore_from": str(checkpoint)})
    try:
        got = scenario.read("changes", at_least=len(expected), timeout=180)
        time.sleep(5)  # anything emitted twice would show up now
        got = scenario.read("changes")
        assert job.poll() is None, f"the restored job ended ({job.returncode}):\n{_tail(tmp_path / 'second.log')}"
    finally:
        _kill(job)

    assert _by_customer(got) == _by_customer(expected)
    members = {(k.split(":", 1)[1], seg) for k, v in scenario.redis_state().items() if k.startswith("cust:") for seg in v}
    assert members == {(cid, seg) for cid, state in runner.states.items() for seg in state.members}


def _tail(log: Path, lines: int = 60) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _start_job(scenario: Scenario, log: Path, **settings) -> subprocess.Popen:
    # The environment of a user's shell: none of the variables a loopback Python worker of an
    # earlier job in this process may have left (PYFLINK_GATEWAY_DISABLED would stop the JVM launch).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEGMENTS_", "PYFLINK_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    argv = [sys.executable, "-m", "flink_jobs.jobs.segmentation_job", *scenario.settings(**settings)]
    with open(log, "wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _kill(job: subprocess.Popen) -> None:
    if job.poll() is None:
        os.killpg(job.pid, signal.SIGKILL)
    job.wait(timeout=60)


def _reference(events: list[dict]) -> LocalRunner:
    """The pure engine over the same events, as one uninterrupted run sees them (no final
    watermark: the jobs run unbounded)."""
    runner = LocalRunner(SegmentEngine(load_rules([str(RULES)]), EngineConfig()), out_of_orderness=MINUTE)
    for raw in events:
        runner.feed(parse_event(json.dumps(raw).encode(), now_ms=T0 + 365 * 24 * 60 * MINUTE))
    return runner
