"""The TaskManager memory deploy/local/cluster.sh gives a cluster: Flink's own plus the state
caches of its slots, reserved as task off-heap memory."""

from __future__ import annotations

import json

from flink_jobs.config import load_config
from flink_jobs.flink import cluster_memory

MIB = 1024 * 1024


def _config(*argv: str):
    return load_config(list(argv), environ={"FLINK_KAFKA_CONNECTOR_JAR": __file__}, stack_env=None)


def test_each_slot_reserves_the_state_cache_budget_on_top():
    memory = cluster_memory.taskmanager_memory(_config(), slots=2, process_size=1600 * MIB)
    assert memory["taskmanager.memory.process.size"] == "3136m"  # 1600m + 2 x 768m
    assert memory["taskmanager.memory.task.off-heap.size"] == "1536m"
    # What Flink derives from 1600m alone, fixed, so that the reservation is not shared out
    # again by fractions (the heap stays 320m, as with 1600m).
    flink = 1600 * MIB - 256 * MIB - 192 * MIB  # total Flink memory: process - metaspace - JVM overhead
    assert memory["taskmanager.memory.jvm-overhead.min"] == memory["taskmanager.memory.jvm-overhead.max"] == f"{192 * MIB}b"
    assert memory["taskmanager.memory.network.min"] == memory["taskmanager.memory.network.max"] == f"{int(flink * 0.1)}b"
    assert memory["taskmanager.memory.managed.size"] == f"{int(flink * 0.4)}b"
    off = cluster_memory.taskmanager_memory(_config("--set", "job.state_cache_memory=0"), 1, 1600 * MIB)
    assert off == {"taskmanager.memory.process.size": "1600m", "taskmanager.memory.task.off-heap.size": "0m"}


def test_main_follows_the_job_settings_and_names_a_wrong_size(capsys):
    assert cluster_memory.main(["--slots", "3", "--process-size", "1g", "--set", "job.state_cache_memory=100m"]) == 0
    memory = json.loads(capsys.readouterr().out)
    assert memory["taskmanager.memory.process.size"] == "1324m"
    assert memory["taskmanager.memory.task.off-heap.size"] == "300m"
    assert cluster_memory.main(["--slots", "2", "--process-size", "16x"]) == 2
    assert "--process-size: expected a memory size such as 768m" in capsys.readouterr().err
