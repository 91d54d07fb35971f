"""TaskManager memory with room for the segment function's state caches.

Each parallel task of the segment function keeps decoded customer states within
``job.state_cache_memory`` (``runtime.state_cache.StateCache``). That is Python memory: in thread
mode inside the TaskManager's process but outside the JVM heap and every pool Flink sizes, in
process mode in the Python worker beside it. Flink's place for such memory is task off-heap memory
(``taskmanager.memory.task.off-heap.size``: "native memory reserved for tasks"), which counts
in the process size, so a container or a host sized by it has the room. A TaskManager runs one
segment task per slot, so it reserves the budget once per slot, on top of the memory the cluster
was given for Flink itself.

    python -m flink_jobs.flink.cluster_memory --slots 2 --process-size 1600m [job arguments]

prints the settings as JSON (``deploy/local/cluster.sh`` writes them into the cluster's
config.yaml); the job arguments (``--config``, ``--set``) and SEGMENTS_* variables apply, so the
reservation follows the job's own configuration.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..config import Config, ConfigError, load_config_for_tools, parse_memory_size

MIB = 1024 * 1024


# Flink's defaults for what it derives from a TaskManager's process size (config.yaml of the
# wheel sets only the process size; TaskManagerOptions): JVM metaspace, and the fractions and
# bounds of JVM overhead (of the process), network and managed memory (of total Flink memory).
METASPACE = 256 * MIB
OVERHEAD = (0.1, 192 * MIB, 1024 * MIB)
NETWORK = (0.1, 64 * MIB, 1024 * MIB)
MANAGED_FRACTION = 0.4


def _fraction(total: int, bounds: tuple[float, int, int]) -> int:
    fraction, low, high = bounds
    return min(max(int(total * fraction), low), high)


def taskmanager_memory(config: Config, slots: int, process_size: int) -> dict[str, str]:
    """``taskmanager.memory.*`` settings: ``process_size`` (bytes) for Flink itself, plus the
    state caches of ``slots`` segment tasks reserved as task off-heap memory.

    Added to the process size alone, the reservation would be shared out again: Flink derives
    JVM overhead, network and managed memory as fractions of the whole (1600m + 2 x 768m left a
    negative heap, and the TaskManager refused to start). So those three are fixed at what
    Flink derives for ``process_size`` alone, and the heap stays what it was."""
    reserved = config.job.state_cache_memory * slots
    memory = {
        "taskmanager.memory.process.size": f"{-(-(process_size + reserved) // MIB)}m",
        "taskmanager.memory.task.off-heap.size": f"{-(-reserved // MIB)}m",
    }
    if reserved:
        overhead = _fraction(process_size, OVERHEAD)
        flink = process_size - METASPACE - overhead
        network = _fraction(flink, NETWORK)
        memory.update({
            "taskmanager.memory.jvm-overhead.min": f"{overhead}b",
            "taskmanager.memory.jvm-overhead.max": f"{overhead}b",
            "taskmanager.memory.network.min": f"{network}b",
            "taskmanager.memory.network.max": f"{network}b",
            "taskmanager.memory.managed.size": f"{int(flink * MANAGED_FRACTION)}b",
        })  # fmt: skip
    return memory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flink_jobs.flink.cluster_memory", description=__doc__.split("\n")[0])
    parser.add_argument("--slots", type=int, required=True, help="task slots per TaskManager")
    parser.add_argument("--process-size", required=True, help="TaskManager memory for Flink itself, e.g. 1600m")
    args, job_args = parser.parse_known_args(argv)
    if args.slots < 1:
        parser.error("--slots must be at least 1")
    try:
        config = load_config_for_tools(job_args)
        process_size = parse_memory_size("--process-size", args.process_size)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(taskmanager_memory(config, args.slots, process_size)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
