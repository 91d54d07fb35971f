#!/usr/bin/env bash
# Creates the project's Kafka topics, idempotently: missing topics are created, a topic with
# fewer partitions than wanted is grown, a missing topic config is added. Nothing is deleted.
#
#   events            EVENTS_PARTITIONS (default 2)   input, key = customer_id
#   events.dlq        1                               invalid input + reason
#   events.late       1                               events beyond allowed lateness
#   segment-changes   EVENTS_PARTITIONS               membership enter/exit, key = customer_id
#   segment-rules     1, cleanup.policy=compact       rule files (broadcast), key = file name
#   segment-rules-status 1, cleanup.policy=compact    what the job announces (the catalogue in
#                                                     use, for the sources' event gate), key = gate/<job>/<run>
#
# Usage: deploy/local/topics.sh [--bootstrap HOST:PORT]
#   default bootstrap: KAFKA_BOOTSTRAP from the environment, else from .cache/stack/stack.env
set -euo pipefail
# shellcheck source-path=SCRIPTDIR

# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BOOTSTRAP="${KAFKA_BOOTSTRAP:-$(stack_env_get KAFKA_BOOTSTRAP)}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --bootstrap) BOOTSTRAP="${2:?--bootstrap needs HOST:PORT}"; shift 2 ;;
    -h | --help) print_header "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown argument: $1" ;;
  esac
done
[[ -n "${BOOTSTRAP}" ]] || die "no Kafka bootstrap: start the stack (deploy/local/stack.sh start) or set KAFKA_BOOTSTRAP"

EVENTS_PARTITIONS="${EVENTS_PARTITIONS:-2}"
[[ "${EVENTS_PARTITIONS}" =~ ^[1-9][0-9]*$ ]] || die "EVENTS_PARTITIONS must be a positive integer"

# name partitions [config,config...]
TOPICS=(
  "events ${EVENTS_PARTITIONS} -"
  "events.dlq 1 -"
  "events.late 1 -"
  "segment-changes ${EVENTS_PARTITIONS} -"
  "segment-rules 1 cleanup.policy=compact"
  "segment-rules-status 1 cleanup.policy=compact"
)

start="$(now)"
# One describe of all topics; its summary lines carry PartitionCount and Configs.
describe="$(kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "${BOOTSTRAP}" --describe)" ||
  die "cannot describe topics at ${BOOTSTRAP}"

for spec in "${TOPICS[@]}"; do
  read -r name partitions configs <<<"${spec}"
  summary="$(awk -F'\t' -v t="Topic: ${name}" '$1 == t && /PartitionCount/' <<<"${describe}")"
  if [[ -z "${summary}" ]]; then
    args=(--create --if-not-exists --topic "${name}" --partitions "${partitions}" --replication-factor 1)
    if [[ "${configs}" != "-" ]]; then
      IFS=',' read -r -a kvs <<<"${configs}"
      for kv in "${kvs[@]}"; do args+=(--config "${kv}"); done
    fi
    kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "${BOOTSTRAP}" "${args[@]}" >/dev/null
    log "topics: created ${name} (partitions=${partitions}$([[ "${configs}" == "-" ]] || echo ", ${configs}"))"
    continue
  fi

  have="$(sed -n 's/.*PartitionCount: \([0-9]*\).*/\1/p' <<<"${summary}")"
  if ((have < partitions)); then
    kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "${BOOTSTRAP}" \
      --alter --topic "${name}" --partitions "${partitions}" >/dev/null
    log "topics: ${name}: grew partitions ${have} -> ${partitions}"
  elif ((have > partitions)); then
    log "topics: ${name}: has ${have} partitions, wanted ${partitions} (Kafka cannot shrink; left as is)"
  fi

  if [[ "${configs}" != "-" ]]; then
    IFS=',' read -r -a kvs <<<"${configs}"
    for kv in "${kvs[@]}"; do
      if ! grep -qE "(Configs: |,)${kv}(,|\$)" <<<"${summary}"; then
        kafka_tool kafka.admin.ConfigCommand --bootstrap-server "${BOOTSTRAP}" --alter \
          --entity-type topics --entity-name "${name}" --add-config "${kv}" >/dev/null
        log "topics: ${name}: set ${kv}"
      fi
    done
  fi
done

log "topics: ${#TOPICS[@]} topics in place at ${BOOTSTRAP} ($(elapsed "${start}")s)"
