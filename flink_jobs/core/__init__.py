"""The pure core: the rule model (``model``), the rule constructs (``conditions``, one module
each), reading rule YAML (``syntax``, ``loader``), the compiler, the features and the incremental
evaluator (``engine``), the local runner, and the brute-force reference evaluator that the
property tests hold the engine to (``reference``).

Nothing in this package imports pyflink, kafka, redis or onnxruntime; the Flink job and the CLI
wrap it. import-linter's contracts (pyproject.toml) and tests/unit/core/test_purity.py enforce it.
"""

from pathlib import Path as _Path


def _refuse_stale_extensions() -> None:
    """The hot modules may be compiled by mypyc (deploy/local/compile_core.py, run by
    deploy/local/setup.sh): an extension beside its .py is imported instead of it. One older than
    its .py was built from other code, so importing it would run that: refuse, and say how."""
    here = _Path(__file__).parent
    for extension in here.rglob("*.so"):
        source = extension.with_name(extension.name.split(".", 1)[0] + ".py")
        if source.exists() and source.stat().st_mtime > extension.stat().st_mtime:
            raise ImportError(
                f"{source} changed after it was compiled into {extension.name}: run deploy/local/setup.sh "
                "(or .venv/bin/python deploy/local/compile_core.py) to compile it again, "
                "or deploy/local/compile_core.py --clean to run the core interpreted"
            )


_refuse_stale_extensions()
