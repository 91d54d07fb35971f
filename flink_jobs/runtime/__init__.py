"""The runtime layer: plain Python (no pyflink) that the Flink functions need and Flink does not
give them. The batch engine and its policies (``batch_engine``: holding changes, write-behind,
rule upgrades; ``rule_files``: which rules are in use), the wire formats (``serde``,
``batching``), the state cache and the GC policy it needs, the metrics, and the Redis writer
(``redis_writer``, behind a small protocol, with its typed config). Unit-tested with dicts for
keyed state and a fake timer service."""
