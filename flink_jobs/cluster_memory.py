"""TaskManager memory with room for the segment function's state caches.

Each parallel task of the segment function keeps decoded customer states within
``job.state_cache_memory`` (``state_cache.StateCache``). That is Python memory: in thread mode
inside the TaskManager's process but outside the JVM heap and every pool Flink sizes, in process
mode in the Python worker beside it. Flink's place for such memory is task off-heap memory
(``taskmanager.memory.task.off-heap.size``: "native memory reserved for tasks"), which counts
in the process size, so a container or a host sized by it has the room. A TaskManager runs one
segment task per slot, so it reserves the budget once per slot, on top of the memory the cluster
was given for Flink itself.

    python -m flink_jobs.cluster_memory --slots 2 --process-size 1600m [job arguments]

prints the two settings as JSON (``deploy/local/cluster.sh`` writes them into the cluster's
config.yaml); the job arguments (``--config``, ``--set``) and SEGMENTS_* variables apply, so the
reservation follows the job's own configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .config import Config, ConfigError, load_config, parse_memory_size

MIB = 1024 * 1024


def taskmanager_memory(config: Config, slots: int, process_size: int) -> dict[str, str]:
    """``taskmanager.memory.*`` settings: ``process_size`` (bytes, for Flink itself) plus the
    state caches of ``slots`` segment tasks, reserved as task off-heap memory."""
    reserved = -(-config.job.state_cache_memory * slots // MIB)  # MiB, rounded up
    return {
        "taskmanager.memory.process.size": f"{-(-process_size // MIB) + reserved}m",
        "taskmanager.memory.task.off-heap.size": f"{reserved}m",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flink_jobs.cluster_memory", description=__doc__.split("\n")[0])
    parser.add_argument("--slots", type=int, required=True, help="task slots per TaskManager")
    parser.add_argument("--process-size", required=True, help="TaskManager memory for Flink itself, e.g. 1600m")
    args, job_args = parser.parse_known_args(argv)
    if args.slots < 1:
        parser.error("--slots must be at least 1")
    try:
        config = load_config(job_args, stack_env=None, environ={
            # The connector jar does not matter here; the consistency check wants a file.
            **os.environ, "FLINK_KAFKA_CONNECTOR_JAR": os.environ.get("FLINK_KAFKA_CONNECTOR_JAR") or __file__,
        })  # fmt: skip
        process_size = parse_memory_size("--process-size", args.process_size)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(taskmanager_memory(config, args.slots, process_size)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
