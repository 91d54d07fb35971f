"""The Flink layer: every pyflink import of the project is in this package.

The functions (``functions.py``) only move records, state, timers and outputs between Flink and
the batch engine (``runtime/batch_engine.py``); the sources, the JVM batcher's wiring, the sinks
and the job (``segmentation_job.py``: ``build_pipeline(env, config)`` and ``main``) build the
topology; the rest derives Flink settings (metrics reporter, TaskManager memory) and builds the
job's own JVM operators (``jvm/``).
"""
