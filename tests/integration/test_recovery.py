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
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flink_jobs.core.engine import EngineConfig, SegmentEngine
from flink_jobs.core.loader import load_rules
from flink_jobs.core.runner import LocalRunner
from flink_jobs.ml.serving import OnnxScorer
from flink_jobs.runtime.serde import EventSchema, encode_change, parse_event

from .conftest import MINUTE, RULES, T0, Scenario, event, model_versions_of
from .test_segmentation_job import _by_customer

pytestmark = pytest.mark.integration


def _events(first: int, last: int, start: int = T0) -> list[dict]:
    """Per customer: product views a minute apart and a cart that is never checked out, from
    ``start`` (epoch ms)."""
    out = []
    offset = start - T0
    for minute in range(first, last):
        for c in range(6):
            at = offset + minute * MINUTE + c
            out.append(event(f"v-{c}-{minute}", f"c-{c}", "product_view", at, product_id=f"p{minute % 3}"))
            if minute % 7 == c:
                out.append(event(f"a-{c}-{minute}", f"c-{c}", "cart_add", at + 1, cart_id=f"k{c}", cart_value=60))
    return out


def _latest_checkpoint(root: Path, after: float) -> Path | None:
    """The checkpoint whose metadata was written last, if after ``after``. By the metadata's time,
    not its folder's: a subsumed checkpoint that Flink is deleting (or was, when the job was
    killed) has the newest folder time, and missing state files."""
    done = []
    for metadata in root.glob("*/chk-*/_metadata"):
        try:
            written = metadata.stat().st_mtime
        except FileNotFoundError:  # deleted since the glob: subsumed
            continue
        if written > after:
            done.append((written, int(metadata.parent.name.removeprefix("chk-")), metadata.parent))
    return max(done)[2] if done else None


@pytest.mark.parametrize("clock", ["catching-up", "live"])
def test_a_killed_job_restarted_from_its_checkpoint_gives_the_uninterrupted_result(scenario: Scenario, tmp_path, clock: str):
    """Two unbounded runs of the same program, the second restored from the first's checkpoint.
    Event times of January 2026 make the job catch up (changed states wait for the checkpoint);
    from the wall clock on, it is live (changed states are written within job.state_write_behind)."""
    start = T0 if clock == "catching-up" else int(time.time() * 1000)
    first, second = _events(0, 40, start), _events(40, 80, start)
    checkpoints = tmp_path / "checkpoints"
    settings = _settings(scenario, checkpoints)
    scenario.produce(first)
    job = _start_job(scenario, tmp_path / "first.log", **settings)
    try:
        seen_at = _await_checkpoint(scenario, job, checkpoints, tmp_path / "first.log")
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
    _assert_restored_gives(scenario, tmp_path / "second.log", settings, checkpoint, _reference(first + second))


def test_a_checkpoint_restored_with_other_batch_keys_stops_the_job_naming_the_setting(scenario: Scenario, tmp_path):
    """Customers are stored under their batch key: restored with another job.batch_keys, they would
    silently start afresh. The job refuses at start instead, naming the setting and its value."""
    checkpoints = tmp_path / "checkpoints"
    settings = {**_settings(scenario, checkpoints), "job.restart_attempts": "0"}
    scenario.produce(_events(0, 20))
    job = _start_job(scenario, tmp_path / "first.log", **settings)
    try:
        seen_at = _await_checkpoint(scenario, job, checkpoints, tmp_path / "first.log")
    finally:
        _kill(job)
    checkpoint = _latest_checkpoint(checkpoints, seen_at)
    assert checkpoint is not None
    text = _refused_restore(scenario, tmp_path / "second.log", settings, checkpoint, **{"job.batch_keys": "64"})
    assert "job.batch_keys is 64, but the state being restored was written with job.batch_keys=32" in text, _tail(tmp_path / "second.log")
    assert "--set job.batch_key_layout=balanced --set job.batch_keys=32 --set job.max_parallelism=128" in text


# The last version whose JVM batcher checkpointed its held records as text (held-records-utf8),
# and the job's module in that version's layout.
TEXT_HELD_RECORDS = "00a7afe"
TEXT_HELD_RECORDS_JOB = "flink_jobs.jobs.segmentation_job"
ROOT = Path(__file__).resolve().parents[2]


def test_a_checkpoint_of_the_text_batch_version_restores_into_this_one(scenario: Scenario, tmp_path):
    """An upgrade: the first job runs the code of TEXT_HELD_RECORDS (a git worktree), is killed
    while the batcher holds the last minute of events (they are only in its state: their offsets
    are behind the checkpoint), and this version restores its checkpoint and converts them."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the earlier version's code cannot be had")
    old = tmp_path / "old"
    added = subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old), TEXT_HELD_RECORDS], capture_output=True, text=True
    )
    assert added.returncode == 0, f"git worktree add {TEXT_HELD_RECORDS} failed (a shallow clone?): {added.stderr}"
    try:
        (old / ".cache").symlink_to(ROOT / ".cache")  # the stack's addresses and the connector jar
        _upgrade(scenario, tmp_path, old)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], capture_output=True)


def _upgrade(scenario: Scenario, tmp_path: Path, old: Path) -> None:
    first, second = _events(0, 40), _events(40, 80)
    # The newest events of the first part: held by the old job's batcher when it is killed (the
    # watermark is a minute behind them), and a change of their own should they be lost.
    first += [event(f"h-{i}", "c-held", "product_view", 40 * MINUTE - 10 + i, product_id="p1") for i in range(3)]
    checkpoints = tmp_path / "checkpoints"
    settings = _settings(scenario, checkpoints)
    # That version knows no event catalogue: its rules folder holds the rules alone.
    old_rules = tmp_path / "old-rules"
    old_rules.mkdir()
    shutil.copy(RULES / "scenarios.yaml", old_rules / "scenarios.yaml")
    scenario.produce(first)
    # Nor a status topic.
    old_settings = {**settings, "job.rules_path": str(old_rules), "kafka.status_topic": None}
    job = _start_job(scenario, tmp_path / "old.log", cwd=old, module=TEXT_HELD_RECORDS_JOB, **old_settings)
    try:
        seen_at = _await_checkpoint(scenario, job, checkpoints, tmp_path / "old.log")
    finally:
        _kill(job)
    assert str(old) in (tmp_path / "old.log").read_text(errors="replace"), "the first job did not run the old code"
    checkpoint = _latest_checkpoint(checkpoints, seen_at)
    assert checkpoint is not None
    scenario.produce(second)

    # That version placed batch key i under Flink key i, 128 of them: restored with this version's
    # defaults, the customers would be looked for under other keys. The job refuses, saying how.
    text = _refused_restore(scenario, tmp_path / "refused.log", settings, checkpoint, **{"job.restart_attempts": "0"})
    assert "--set job.batch_key_layout=identity --set job.batch_keys=128" in text, _tail(tmp_path / "refused.log")

    # That version ran without models (they needed process mode then): so does this one here.
    runner = _reference(first + second, models=False)
    assert "c-held" in {change.customer_id for change in runner.changes}
    legacy = {**settings, "job.batch_key_layout": "identity", "job.batch_keys": "128", "job.models": "false"}
    # The rule set is now the rules and their catalogue: another version, the same memberships.
    _assert_restored_gives(scenario, tmp_path / "new.log", legacy, checkpoint, runner, same_rule_version=False)


def _refused_restore(scenario: Scenario, log: Path, settings: dict[str, str], checkpoint: Path, **more: str) -> str:
    """Starts a job from ``checkpoint`` that must stop at start (its state layout differs);
    returns its log."""
    job = _start_job(scenario, log, **settings, **more, **{"job.restore_from": str(checkpoint)})
    try:
        job.wait(timeout=180)
    finally:
        _kill(job)
    assert job.returncode != 0, f"the job restored a checkpoint of another state layout and ran:\n{_tail(log)}"
    return log.read_text(errors="replace")


def _settings(scenario: Scenario, checkpoints: Path) -> dict[str, str]:
    return {
        "job.delivery_guarantee": "exactly-once",
        "job.transactional_id_prefix": f"it-{scenario.name}",
        "job.checkpoint_dir": checkpoints.as_uri(),
        "job.checkpoint_interval": "1s",
        "events.out_of_orderness": "1m",
    }


def _await_checkpoint(scenario: Scenario, job: subprocess.Popen, checkpoints: Path, log: Path) -> float:
    """Waits until the job has written to Redis and a checkpoint completed after that; returns
    when the first was seen."""
    deadline = time.monotonic() + 180
    while not any(k.startswith("cust:") for k in scenario.redis_state()):
        assert job.poll() is None, f"the first job ended ({job.returncode}):\n{_tail(log)}"
        assert time.monotonic() < deadline, f"the first job wrote nothing to Redis:\n{_tail(log)}"
        time.sleep(1)
    seen_at = time.time()
    while _latest_checkpoint(checkpoints, seen_at) is None:
        assert time.monotonic() < deadline, f"no checkpoint completed under {checkpoints}"
        time.sleep(1)
    return seen_at


def _assert_restored_gives(
    scenario: Scenario,
    log: Path,
    settings: dict[str, str],
    checkpoint: Path,
    runner: LocalRunner,
    *,
    same_rule_version: bool = True,
) -> None:
    """A job restored from ``checkpoint`` ends up with exactly the change records and Redis
    memberships of ``runner``'s uninterrupted run."""
    expected = [(c.customer_id, json.loads(encode_change(c, model_versions_of(runner)))) for c in runner.changes]
    job = _start_job(scenario, log, **settings, **{"job.restore_from": str(checkpoint)})
    try:
        got = scenario.read("changes", at_least=len(expected), timeout=180)
        time.sleep(5)  # anything emitted twice would show up now
        got = scenario.read("changes")
        assert job.poll() is None, f"the restored job ended ({job.returncode}):\n{_tail(log)}"
    finally:
        _kill(job)
    if not same_rule_version:
        got = [(k, {**v, "rule_version": "-"}) for k, v in got]
        expected = [(k, {**v, "rule_version": "-"}) for k, v in expected]
    assert _by_customer(got) == _by_customer(expected)
    members = {(k.split(":", 1)[1], seg) for k, v in scenario.redis_state().items() if k.startswith("cust:") for seg in v}
    assert members == {(cid, seg) for cid, state in runner.states.items() for seg in state.members}


def _tail(log: Path, lines: int = 60) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _start_job(
    scenario: Scenario, log: Path, cwd: Path | None = None, module: str = "flink_jobs.flink.segmentation_job", **settings
) -> subprocess.Popen:
    # The environment of a user's shell: none of the variables a loopback Python worker of an
    # earlier job in this process may have left (PYFLINK_GATEWAY_DISABLED would stop the JVM launch).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEGMENTS_", "PYFLINK_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    argv = [sys.executable, "-m", module, *scenario.settings(**settings)]
    with open(log, "wb") as out:
        # `-m` imports flink_jobs from the working directory: another checkout runs its own code.
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=cwd)


def _kill(job: subprocess.Popen) -> None:
    if job.poll() is None:
        os.killpg(job.pid, signal.SIGKILL)
    job.wait(timeout=60)


def _reference(events: list[dict], models: bool = True) -> LocalRunner:
    """The pure engine over the same events, as one uninterrupted run sees them (no final
    watermark: the jobs run unbounded), with the shipped models as the job runs them by default."""
    rules = load_rules([str(RULES)])
    scorer = OnnxScorer(known_scores=rules.catalog.scores) if models else None
    runner = LocalRunner(SegmentEngine(rules, EngineConfig(), scorer=scorer), out_of_orderness=MINUTE)
    for raw in events:
        runner.feed(parse_event(json.dumps(raw).encode(), schema=EventSchema(runner.engine.compiled.rules.catalog), now_ms=T0 + 365 * 24 * 60 * MINUTE))
    return runner
