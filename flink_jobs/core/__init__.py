"""The pure core: rule model, loader, compiler and incremental evaluator.

Nothing in this package imports pyflink, kafka, redis or onnxruntime; the Flink job and the CLI
wrap it. A unit test enforces that.
"""
