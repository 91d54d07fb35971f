"""The job's own JVM operator (``KeyGroupBatcher.java``), compiled against the Flink that the
apache-flink wheel ships.

Shipped as source and compiled with ``javac`` on first use (or by ``deploy/local/setup.sh``):
a jar built here always matches the installed Flink, and nothing binary is checked in. The jar
lands in ``.cache/jars/segments/`` under a name that carries a hash of the source and the Flink
version, so an edit or a Flink upgrade builds a new one.

    python -m flink_jobs.jvm          # build if needed, print the jar's path
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCES = ("KeyGroupBatcher.java",)
BATCHER_CLASS = "dev.segments.flink.KeyGroupBatcher"
_HERE = Path(__file__).resolve().parent
DEFAULT_DIR = _HERE.parent.parent / ".cache" / "jars" / "segments"


class JarBuildError(RuntimeError):
    pass


def flink_home() -> Path:
    import pyflink  # the wheel's Flink distribution: lib/ holds flink-dist with the operator API

    return Path(pyflink.__file__).resolve().parent


def jar_path(directory: Path = DEFAULT_DIR) -> Path:
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update((_HERE / name).read_bytes())
    dist = sorted((flink_home() / "lib").glob("flink-dist*.jar"))
    digest.update(" ".join(p.name for p in dist).encode())
    return directory / f"segments-flink-{digest.hexdigest()[:12]}.jar"


def ensure_jar(directory: Path = DEFAULT_DIR) -> Path:
    """The jar's path, compiling it first if it is not there."""
    target = jar_path(directory)
    if target.is_file():
        return target
    javac, jar = shutil.which("javac"), shutil.which("jar")
    if javac is None or jar is None:
        raise JarBuildError(
            "javac/jar not found: the job's batching operator is compiled on first use; install a JDK "
            "(apt-get install -y openjdk-17-jdk-headless) or set job.batcher_jar to a prebuilt jar "
            "(python -m flink_jobs.jvm on a machine with a JDK)"
        )
    classpath = str(flink_home() / "lib" / "*")
    with tempfile.TemporaryDirectory() as tmp:
        classes = Path(tmp) / "classes"
        classes.mkdir()
        cmd = [javac, "--release", "11", "-nowarn", "-d", str(classes), "-cp", classpath]
        done = subprocess.run(cmd + [str(_HERE / n) for n in SOURCES], capture_output=True, text=True)
        if done.returncode != 0:
            raise JarBuildError(f"javac failed:\n{done.stderr.strip()}")
        directory.mkdir(parents=True, exist_ok=True)
        partial = Path(tmp) / target.name
        done = subprocess.run([jar, "cf", str(partial), "-C", str(classes), "."], capture_output=True, text=True)
        if done.returncode != 0:
            raise JarBuildError(f"jar failed:\n{done.stderr.strip()}")
        shutil.move(str(partial), target)  # whole or absent: a concurrent start sees no half jar
    return target


def main() -> int:
    try:
        print(ensure_jar())
    except JarBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
