#!/usr/bin/env bash
# Resolves the jars of the local stack from Maven Central into .cache/jars/ (git-ignored):
#   - Apache Kafka broker + admin tools (KAFKA_VERSION)       -> .cache/jars/kafka/<version>/
#   - Flink fat Kafka SQL connector (FLINK_KAFKA_CONNECTOR_VERSION) -> .cache/jars/flink/<version>/
# Versions come from deploy/local/versions.env. Idempotent: a folder that is complete is skipped.
#
# Usage: deploy/local/fetch-jars.sh [--force] [kafka|flink ...]
# Env:   FETCH_MAVEN_ARGS  extra Maven arguments, e.g. "-Dmaven.repo.local=/tmp/m2 -o"
set -euo pipefail
# shellcheck source-path=SCRIPTDIR

# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  print_header "${BASH_SOURCE[0]}"
}

FORCE=0
TARGETS=()
for arg in "$@"; do
  case "${arg}" in
    --force) FORCE=1 ;;
    kafka | flink) TARGETS+=("${arg}") ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: ${arg}" ;;
  esac
done
((${#TARGETS[@]})) || TARGETS=(kafka flink)

# resolve NAME POM DEST MAVEN_ARGS...: copy the pom's dependencies into DEST, atomically.
resolve() {
  local name="$1" pom="$2" dest="$3"
  shift 3
  if [[ -f "${dest}/.complete" && "${FORCE}" -eq 0 ]]; then
    log "${name}: present in ${dest} ($(find "${dest}" -name '*.jar' | wc -l) jars), skipping"
    return 0
  fi
  command -v mvn >/dev/null 2>&1 || die "mvn not found (apt-get install -y maven)"
  local tmp="${dest}.tmp.$$" start extra=()
  read -r -a extra <<<"${FETCH_MAVEN_ARGS:-}"
  start="$(now)"
  rm -rf "${tmp}"
  mkdir -p "${tmp}" "${LOG_DIR}"
  log "${name}: resolving with Maven (log: ${LOG_DIR}/fetch-jars-${name}.log)"
  if ! mvn -B -f "${pom}" "$@" "${extra[@]}" \
    dependency:copy-dependencies -DoutputDirectory="${tmp}" -DincludeScope=runtime \
    >"${LOG_DIR}/fetch-jars-${name}.log" 2>&1; then
    tail -n 30 "${LOG_DIR}/fetch-jars-${name}.log" >&2
    rm -rf "${tmp}"
    die "${name}: Maven could not resolve the jars (see ${LOG_DIR}/fetch-jars-${name}.log)"
  fi
  touch "${tmp}/.complete"
  rm -rf "${dest}"
  mkdir -p "$(dirname "${dest}")"
  mv "${tmp}" "${dest}"
  log "${name}: resolved $(find "${dest}" -name '*.jar' | wc -l) jars ($(du -sh "${dest}" | cut -f1)) in $(elapsed "${start}")s"
}

# jar_has JAR ENTRY: the jar contains ENTRY (python3 zipfile: unzip may be missing).
jar_has() {
  python3 - "$1" "$2" <<'PY'
import sys, zipfile
sys.exit(0 if sys.argv[2] in zipfile.ZipFile(sys.argv[1]).namelist() else 1)
PY
}

for target in "${TARGETS[@]}"; do
  case "${target}" in
    kafka)
      resolve kafka "${LOCAL_DIR}/jars/kafka/pom.xml" "${KAFKA_JARS_DIR}" \
        -Dkafka.version="${KAFKA_VERSION}" -Dkafka.scala.version="${KAFKA_SCALA_VERSION}" \
        -Dlog4j.version="${LOG4J_VERSION}"
      jar_has "${KAFKA_JARS_DIR}/kafka_${KAFKA_SCALA_VERSION}-${KAFKA_VERSION}.jar" kafka/Kafka.class ||
        die "kafka: kafka.Kafka main class not found in the resolved jars"
      echo "KAFKA_JARS_DIR=${KAFKA_JARS_DIR}"
      ;;
    flink)
      resolve flink "${LOCAL_DIR}/jars/flink/pom.xml" "${FLINK_JARS_DIR}" \
        -Dflink.kafka.connector.version="${FLINK_KAFKA_CONNECTOR_VERSION}" -DexcludeTransitive=true
      [[ -f "${FLINK_KAFKA_CONNECTOR_JAR}" ]] || die "flink: ${FLINK_KAFKA_CONNECTOR_JAR} missing after resolve"
      # The fat jar must carry the (shaded) Kafka clients; the thin one fails at job build time.
      jar_has "${FLINK_KAFKA_CONNECTOR_JAR}" \
        org/apache/flink/kafka/shaded/org/apache/kafka/clients/consumer/KafkaConsumer.class ||
        die "flink: ${FLINK_KAFKA_CONNECTOR_JAR} does not bundle kafka-clients (thin jar?)"
      echo "FLINK_KAFKA_CONNECTOR_JAR=${FLINK_KAFKA_CONNECTOR_JAR}"
      ;;
  esac
done
