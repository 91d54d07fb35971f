"""Flink jobs: one file per job, each with ``build_pipeline(env, config)`` and ``main(argv)``."""
