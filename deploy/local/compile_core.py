"""Compiles the core's hot path with mypyc (issue 35), in place: each module gets a C extension
beside its .py, which Python imports instead. The .py files stay the fallback: remove the
extensions (``--clean``) and the same code runs interpreted.

What is compiled: the engine, its features, state, windows, the rule model and conditions (the
work of every event). What is not: the reference evaluator (it checks the engine, so it stays
independent of the compiler), the local runner (the benchmarks hand it duck-typed engines, which
compiled code refuses), the loader and the syntax (read once per rule set).

The shared library goes inside the package (``flink_jobs/core/_native__mypyc...so``), not at the
top level where mypyc puts it by default: the editable install finds ``flink_jobs`` by name, and
the repository root is not on the path of a TaskManager's Python.

Skipped when the sources and the compiler are what the last build used (a stamp in .cache/).
``flink_jobs/core/__init__.py`` refuses to import an extension older than its .py, so an edit
without a new build cannot run stale code.

    .venv/bin/python deploy/local/compile_core.py           # build if needed (setup.sh runs this)
    .venv/bin/python deploy/local/compile_core.py --clean   # remove the extensions: interpreted
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "flink_jobs" / "core"
STAMP = ROOT / ".cache" / "mypyc" / "stamp"
GROUP = "flink_jobs.core._native"
MODULES = (
    "engine.py", "features.py", "state.py", "windows.py", "model.py", "compiler.py", "model_inputs.py",
    "scoring.py", "durations.py", "pickling.py",
    *sorted(f"conditions/{p.name}" for p in (CORE / "conditions").glob("*.py")),
)
# mypy's settings for the compile: the project's checks without its per-package sections (mypyc
# reads them as unused and stops).
MYPY_CONFIG = "[mypy]\npython_version = 3.11\ncheck_untyped_defs = True\nno_implicit_optional = True\n"


def extensions() -> list[Path]:
    return sorted(CORE.rglob("*.so"))


def clean() -> None:
    for path in extensions():
        path.unlink()
    STAMP.unlink(missing_ok=True)


def fingerprint() -> str:
    import mypy.version

    digest = hashlib.sha256(f"{mypy.version.__version__} {sys.version}".encode())
    for name in MODULES:
        digest.update(name.encode() + (CORE / name).read_bytes())
    digest.update(MYPY_CONFIG.encode())
    return digest.hexdigest()


def build() -> int:
    try:
        stamp = fingerprint()
    except ImportError:
        print("compile_core: mypy is not installed: the core runs interpreted", file=sys.stderr)
        return 0
    if STAMP.exists() and STAMP.read_text() == stamp and len(extensions()) == len(MODULES) + 1:
        # The same sources (a checkout or a touch gave them a newer time): the extensions are
        # still theirs; make them newer, or core/__init__.py would take them for stale.
        for path in extensions():
            path.touch()
        return 0
    clean()
    with tempfile.TemporaryDirectory(prefix="mypyc-") as work:
        config = Path(work) / "mypy.ini"
        config.write_text(MYPY_CONFIG)
        setup = Path(work) / "setup.py"
        files = [str(Path("flink_jobs/core") / name) for name in MODULES]
        setup.write_text(
            "from setuptools import setup\nfrom mypyc.build import mypycify\n"
            f"setup(name='flink-segments-core', ext_modules=mypycify(['--config-file', {str(config)!r}, *{files!r}], "
            f"group_name={GROUP!r}), script_args=['build_ext', '--inplace', '--build-temp', {work + '/temp'!r}, "
            f"'--build-lib', {work + '/lib'!r}])\n"
        )
        # mypyc writes its C sources to ./build (removed after; build/ is ignored by git).
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        done = subprocess.run([sys.executable, str(setup)], cwd=ROOT, capture_output=True, text=True, env=env)
        shutil.rmtree(ROOT / "build", ignore_errors=True)
    if done.returncode != 0:
        clean()
        print(f"compile_core: mypyc failed, the core runs interpreted:\n{done.stdout[-3000:]}{done.stderr[-3000:]}", file=sys.stderr)
        return 1
    STAMP.parent.mkdir(parents=True, exist_ok=True)
    STAMP.write_text(stamp)
    print(f"compile_core: compiled {len(MODULES)} modules of flink_jobs/core with mypyc")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clean", action="store_true", help="remove the compiled extensions: run the core interpreted")
    args = parser.parse_args()
    if args.clean:
        clean()
        print("compile_core: removed the compiled extensions; the core runs interpreted")
        return 0
    return build()


if __name__ == "__main__":
    sys.exit(main())
