"""The job's own JVM operators (``EventKeys.java``, ``KeyGroupBatcher.java``, the event gate),
compiled against the Flink that the apache-flink wheel ships and the Kafka connector jar (the
gate's follower reads the rules status topic with the connector's Kafka client).

Shipped as source and compiled with ``javac`` on first use (or by ``deploy/local/setup.sh``):
a jar built here always matches the installed Flink, and nothing binary is checked in. The jar
lands in ``.cache/jars/segments/`` under a name that carries a hash of the source, the Flink
version and the connector's, so an edit or an upgrade builds a new one.

    python -m flink_jobs.flink.jvm          # build if needed, print the jar's path
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ...config.local_stack import REPO_ROOT, STACK_ENV, default_connector_jar, read_env_file

SOURCES = ("KeyGroupBatcher.java", "EventKeys.java", "EventGate.java", "GateFollower.java", "EventTimeOf.java")
BATCHER_CLASS = "dev.segments.flink.KeyGroupBatcher"
_HERE = Path(__file__).resolve().parent
DEFAULT_DIR = REPO_ROOT / ".cache" / "jars" / "segments"


class JarBuildError(RuntimeError):
    pass


def flink_home() -> Path:
    import pyflink  # the wheel's Flink distribution: lib/ holds flink-dist with the operator API

    return Path(pyflink.__file__).resolve().parent


def local_connector_jar() -> Path:
    """The Kafka connector jar of the local stack (``FLINK_KAFKA_CONNECTOR_JAR``, or where
    ``deploy/local/fetch-jars.sh`` puts it)."""
    given = os.environ.get("FLINK_KAFKA_CONNECTOR_JAR") or read_env_file(STACK_ENV).get("FLINK_KAFKA_CONNECTOR_JAR")
    # The stack's file may name a checkout that has moved: then where fetch-jars.sh puts it.
    jar = given if given and Path(given).is_file() else default_connector_jar({})
    if not jar or not Path(jar).is_file():
        raise JarBuildError(
            "the Kafka connector jar is missing: the job's JVM operators are compiled against it; run "
            "deploy/local/fetch-jars.sh flink, or set FLINK_KAFKA_CONNECTOR_JAR (job.connector_jar for the job)"
        )
    return Path(jar).resolve()


def jar_path(directory: Path = DEFAULT_DIR, connector: Path | None = None) -> Path:
    connector = connector or local_connector_jar()
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update((_HERE / name).read_bytes())
    dist = sorted((flink_home() / "lib").glob("flink-dist*.jar"))
    digest.update(" ".join(p.name for p in [*dist, connector]).encode())
    return directory / f"segments-flink-{digest.hexdigest()[:12]}.jar"


def ensure_jar(directory: Path = DEFAULT_DIR, connector: Path | None = None) -> Path:
    """The jar's path, compiling it first if it is not there. ``connector``: the Kafka connector
    jar to compile against (the local stack's when not given)."""
    connector = connector or local_connector_jar()
    target = jar_path(directory, connector)
    if target.is_file():
        return target
    javac, jar = shutil.which("javac"), shutil.which("jar")
    if javac is None or jar is None:
        raise JarBuildError(
            "javac/jar not found: the job's batching operator is compiled on first use; install a JDK "
            "(apt-get install -y openjdk-17-jdk-headless) or set job.batcher_jar to a prebuilt jar "
            "(python -m flink_jobs.flink.jvm on a machine with a JDK)"
        )
    classpath = os.pathsep.join([str(flink_home() / "lib" / "*"), str(connector)])
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


def on_local_jvm_classpath(*jars: Path | str) -> bool:
    """Put ``jars`` on the classpath of the JVM that PyFlink launches from this process for a
    local mini-cluster (it appends HADOOP_CLASSPATH to that JVM's classpath). False when it is too
    late: the JVM is already running, or this process was started by ``flink run`` (whose JVM
    takes the jars from ``pipeline.jars`` instead).

    ``add_jars`` alone is not enough locally: it adds the jars to the context class loader of the
    one JVM thread that served the call, but PyFlink's gateway serves each Python-side connection
    from its own thread, and a second connection opens whenever two Python threads talk to the
    JVM at once (a Kafka client's I/O thread collecting a Java proxy is enough). Later calls served
    there cannot see the jars: "Could not find any factory for identifier 'kafka'", or the
    batching operator's class missing. On the JVM's own classpath every thread sees them. (The
    connector's classes are all under org.apache.flink, which Flink loads parent-first, so the
    copy shipped in pipeline.jars never competes with this one.)"""
    from pyflink import java_gateway

    if java_gateway._gateway is not None or "PYFLINK_GATEWAY_PORT" in os.environ:
        return False
    current = [p for p in os.environ.get("HADOOP_CLASSPATH", "").split(os.pathsep) if p]
    for jar in jars:
        path = str(Path(jar).resolve())
        if path not in current:
            current.append(path)
    os.environ["HADOOP_CLASSPATH"] = os.pathsep.join(current)
    return True


def main() -> int:
    try:
        print(ensure_jar())
    except JarBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
