"""The JVM batcher's record formats against Python's reader (a JVM, no services).

Checkpoints of earlier versions hold the batcher's held records as text; on restore
``KeyGroupBatcher.fromText`` turns them into today's binary layout, which ``decode_batch`` reads.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from flink_jobs.runtime.batching import BatchRecord, decode_batch

ROOT = Path(__file__).resolve().parents[2]

# Held records as earlier versions wrote them: partition, offset, timestamp (empty: none), key,
# value; key and value tagged t (text), b (base64 of bytes), - (null).
LEGACY = {
    "3\x1f10\x1f99\x1ftc-9\x1ft{}": BatchRecord(3, 10, 99, b"c-9", b"{}"),
    "1\x1f11\x1f\x1f-\x1fb//4=": BatchRecord(1, 11, None, None, b"\xff\xfe"),
    "0\x1f12\x1f5\x1ftkunde-\u00fc\x1ft{\"a\": \"\u20ac\"}": BatchRecord(
        0, 12, 5, "kunde-\u00fc".encode(), '{"a": "\u20ac"}'.encode()
    ),
    "0\x1f13\x1f7\x1ft\x1ft": BatchRecord(0, 13, 7, b"", b""),
}

_CONVERT = """
import json, sys
from flink_jobs.flink.jvm import ensure_jar, on_local_jvm_classpath
on_local_jvm_classpath(ensure_jar())
from pyflink.java_gateway import get_gateway
batcher = get_gateway().jvm.dev.segments.flink.KeyGroupBatcher
print(json.dumps([bytes(batcher.fromText(text)).hex() for text in json.loads(sys.stdin.read())]))
"""


def test_held_records_of_earlier_versions_convert_to_the_binary_layout():
    texts = list(LEGACY)
    done = subprocess.run(
        [sys.executable, "-c", _CONVERT], input=json.dumps(texts), capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert done.returncode == 0, done.stderr
    converted = json.loads(done.stdout.strip().splitlines()[-1])
    assert [decode_batch(bytes.fromhex(h)) for h in converted] == [[LEGACY[t]] for t in texts]


_PLACEMENT = """
import json, sys
from flink_jobs.flink.jvm import ensure_jar, on_local_jvm_classpath
on_local_jvm_classpath(ensure_jar())
from pyflink.java_gateway import get_gateway
gateway = get_gateway()
jvm = gateway.jvm
batcher = jvm.dev.segments.flink.KeyGroupBatcher
assign = jvm.org.apache.flink.runtime.state.KeyGroupRangeAssignment
def task(value, max_parallelism, parallelism):
    fields = gateway.new_array(jvm.Object, 1)
    fields[0] = value
    return assign.assignKeyToParallelOperator(jvm.org.apache.flink.types.Row.of(fields), max_parallelism, parallelism)
out = []
for batch_keys, max_parallelism, balanced in json.loads(sys.stdin.read()):
    placed = batcher.placedKeys(batch_keys, max_parallelism, balanced)
    tasks = {p: [task(v, max_parallelism, p) for v in placed] for p in range(1, 9)}
    out.append([list(placed), tasks, batcher.layoutOf(placed, max_parallelism, balanced)])
print(json.dumps(out))
"""


def test_balanced_batch_keys_fall_evenly_over_the_parallel_tasks():
    """Each parallel task works on whole batch keys, so its share of the customers is its share of
    the batch keys. Placed by Flink's hash of the key row, 16 batch keys split 11/5 over 2 tasks;
    the balanced layout gives every task the same number, give or take one (or, with more batch
    keys than key groups, one key group's worth)."""
    cases = [(32, 128, True), (16, 128, True), (128, 128, True), (300, 128, True), (32, 256, True), (16, 128, False)]
    done = subprocess.run(
        [sys.executable, "-c", _PLACEMENT], input=json.dumps(cases), capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    for (batch_keys, max_parallelism, balanced), (placed, tasks, layout) in zip(cases, results):
        assert len(set(placed)) == batch_keys
        if not balanced:
            assert placed == list(range(batch_keys)) and layout == f"identity:{batch_keys}"
            assert max(map(tasks["2"].count, range(2))) > batch_keys // 2 + 1  # why balanced is the default
            continue
        assert layout.startswith(f"balanced:{batch_keys}:{max_parallelism}:")
        for parallelism, task_of in tasks.items():
            counts = [task_of.count(t) for t in range(int(parallelism))]
            slack = -(-batch_keys // max_parallelism)
            assert max(counts) - min(counts) <= slack, (batch_keys, max_parallelism, parallelism, counts)
