"""The pure core: the rule model (``model``), the rule constructs (``conditions``, one module
each), reading rule YAML (``syntax``, ``loader``), the compiler, the features and the incremental
evaluator (``engine``), the local runner, and the brute-force reference evaluator that the
property tests hold the engine to (``reference``).

Nothing in this package imports pyflink, kafka, redis or onnxruntime; the Flink job and the CLI
wrap it. import-linter's contracts (pyproject.toml) and tests/unit/core/test_purity.py enforce it.
"""
