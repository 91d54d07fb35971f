#!/usr/bin/env bash
# Creates the project's Python environment (.venv) and installs the package with its pinned
# dependencies. Idempotent: re-installs only when pyproject.toml changed since the last run.
#
#   deploy/local/setup.sh            # runtime + dev/test + model-training dependencies
#
# Needs Python 3.11 (`python3.11` or `python3` of that version) and Java 17 on PATH (Flink and
# Kafka run on it); both are on a fresh machine of this project's kind.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

VENV="${REPO_ROOT}/.venv"
STAMP="${VENV}/.installed-pyproject.sha256"

find_python() {
  local candidate
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 \
      && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      command -v "$candidate"
      return 0
    fi
  done
  return 1
}

command -v java >/dev/null 2>&1 || die "java is not on PATH: Flink ${FLINK_VERSION} and Kafka ${KAFKA_VERSION} need Java ${JAVA_MIN_VERSION}+ (apt-get install -y openjdk-17-jre-headless)"

if [[ ! -x "${VENV}/bin/python" ]]; then
  python="$(find_python)" || die "Python 3.11 not found (the pinned apache-flink ${APACHE_FLINK_PY_VERSION} supports it; install python3.11)"
  log "creating ${VENV} with ${python}"
  "$python" -m venv "$VENV"
fi

want="$(sha256sum "${REPO_ROOT}/pyproject.toml" | cut -d' ' -f1)"
# The job's JVM operators, compiled against the installed Flink and the Kafka connector jar
# (skipped when built).
build_jvm() {
  command -v javac >/dev/null 2>&1 || die "javac is not on PATH: the job compiles its batching operator (flink_jobs/flink/jvm) with it (apt-get install -y openjdk-17-jdk-headless)"
  "${LOCAL_DIR}/fetch-jars.sh" flink >/dev/null
  "${VENV}/bin/python" -m flink_jobs.flink.jvm >/dev/null || die "could not build flink_jobs/flink/jvm (see above)"
}

# The core's hot path compiled with mypyc (deploy/local/compile_core.py; about 30 s, skipped when
# its sources did not change). Without a C compiler it stays interpreted: slower, the same results.
compile_core() {
  "${VENV}/bin/python" "${LOCAL_DIR}/compile_core.py" || log "WARNING: the core runs interpreted (mypyc failed, above)"
}

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
  log "python environment up to date (${VENV})"
  build_jvm
  compile_core
  exit 0
fi
log "installing the package and its pinned dependencies into ${VENV} (first time: a few minutes, apache-flink is large)"
start="$(now)"
"${VENV}/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
# `bench`: the live feed of bench/job_bench.py. `train`: the tests compare the ONNX models with
# scikit-learn and replay CDNOW (lifetimes); its pins are solved together with the job's
# (pyproject.toml says why), so one environment holds both.
"${VENV}/bin/python" -m pip install --quiet --disable-pip-version-check -e "${REPO_ROOT}[dev,train,bench]"
"${VENV}/bin/python" -m pip check || die "conflicting packages in ${VENV} (listed above): the pins in pyproject.toml must be solved together"
echo "$want" > "$STAMP"
log "installed in $(awk -v s="$start" -v e="$(now)" 'BEGIN { printf "%.0f", e - s }') s"
build_jvm
compile_core
