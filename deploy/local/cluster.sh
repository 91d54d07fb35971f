#!/usr/bin/env bash
# A standalone Flink cluster from the apache-flink wheel's own distribution, and job submission.
#
#   deploy/local/cluster.sh start            JobManager + 1 TaskManager (2 slots) on localhost
#   deploy/local/cluster.sh submit [ARGS]    flink run the segmentation job (ARGS go to the job,
#                                            e.g. --bounded --set kafka.events_topic=x); waits
#                                            for a bounded job to finish, prints its result
#   deploy/local/cluster.sh taskmanager      start one more TaskManager (as a watchdog restarts one)
#   deploy/local/cluster.sh status           exit 0 when the REST API answers with a TaskManager
#   deploy/local/cluster.sh stop             stop-cluster.sh, then make sure both JVMs are gone
#
# FLINK_HOME is the installed `pyflink` package of the project venv (VENV, default .venv). Config
# and logs live under .cache/flink/ (FLINK_CONF_DIR, FLINK_LOG_DIR): the installed package is
# never edited. The venv's bin/ goes first on PATH for the client and for the cluster, because
# thread mode finds libpython (and pemja) through `python` on PATH; process mode gets the venv's
# python through -pyexec. Flink's Prometheus reporter is on (ports metrics.flink_reporter_ports,
# see flink_jobs/flink/reporter.py). Settings: FLINK_REST_PORT (8081), FLINK_TM_SLOTS (2),
# FLINK_TM_MEMORY (1600m, for Flink itself: the state caches' job.state_cache_memory per slot is
# added and reserved as task off-heap memory, see flink_jobs/flink/cluster_memory.py), FLINK_JM_MEMORY
# (1024m), CLUSTER_START_TIMEOUT (120 s), FLINK_TASKMANAGERS (1), FLINK_CONF_EXTRA (a JSON object
# of more settings, e.g. '{"heartbeat.timeout": 10000}').
set -euo pipefail

# shellcheck source=lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

VENV="${VENV:-${REPO_ROOT}/.venv}"
PYTHON="${VENV}/bin/python"
FLINK_CACHE="${CACHE_DIR}/flink"
export FLINK_CONF_DIR="${FLINK_CACHE}/conf"
export FLINK_LOG_DIR="${FLINK_CACHE}/log"
# The wheel's lib/ plus opt/'s flink-python jar (links; see link_lib).
export FLINK_LIB_DIR="${FLINK_CACHE}/lib"
REST_PORT="${FLINK_REST_PORT:-8081}"
REST="http://localhost:${REST_PORT}"

[[ -x "${PYTHON}" ]] || die "no venv python at ${PYTHON}: run pip install -e '.[dev]' in a venv there (or set VENV)"
FLINK_HOME="$("${PYTHON}" -c 'import os, pyflink; print(os.path.dirname(pyflink.__file__))')"
export FLINK_HOME
export PATH="${VENV}/bin:${PATH}"

# flink-python (with pemja) on the cluster's own class path, and pemja parent-first: thread mode
# loads pemja's native library once per JVM, and a second job on the same TaskManager (a job
# resumed from a savepoint) would otherwise load it again from its own class loader and fail with
# "NoSuchFieldException: loadedLibraryNames" (pemja's Java 8 workaround; Java 17 has no such field).
link_lib() {
  rm -rf "${FLINK_LIB_DIR}"
  mkdir -p "${FLINK_LIB_DIR}"
  ln -s "${FLINK_HOME}"/lib/*.jar "${FLINK_HOME}"/opt/flink-python-*.jar "${FLINK_LIB_DIR}/"
}

write_conf() {
  link_lib
  mkdir -p "${FLINK_CONF_DIR}" "${FLINK_LOG_DIR}"
  cp "${FLINK_HOME}"/conf/log4j*.properties "${FLINK_HOME}/conf/masters" "${FLINK_CONF_DIR}/"
  # One line per TaskManager that start-cluster.sh starts on this machine.
  for _ in $(seq "${FLINK_TASKMANAGERS:-1}"); do echo localhost; done >"${FLINK_CONF_DIR}/workers"
  "${PYTHON}" - "${FLINK_HOME}/conf/config.yaml" "${FLINK_CONF_DIR}/config.yaml" <<PY
import sys, yaml
conf = yaml.safe_load(open(sys.argv[1]))
conf.setdefault("rest", {}).update({"port": ${REST_PORT}, "address": "localhost", "bind-address": "localhost"})
conf["jobmanager"]["memory"]["process"]["size"] = "${FLINK_JM_MEMORY:-1024m}"
# FLINK_TM_MEMORY is for Flink itself; the segment tasks' state caches (job.state_cache_memory
# per slot, Python memory) are added on top and reserved as task off-heap memory.
import json, subprocess
memory = json.loads(subprocess.run(
    [sys.executable, "-m", "flink_jobs.flink.cluster_memory", "--slots", "${FLINK_TM_SLOTS:-2}",
     "--process-size", "${FLINK_TM_MEMORY:-1600m}"],
    check=True, stdout=subprocess.PIPE, text=True).stdout)
for key, value in memory.items():  # taskmanager.memory.process.size -> nested, as config.yaml has it
    *path, leaf = key.split(".")
    node = conf
    for part in path:
        node = node.setdefault(part, {})
    node[leaf] = value
conf["taskmanager"]["numberOfTaskSlots"] = ${FLINK_TM_SLOTS:-2}
# FLINK_CONF_EXTRA: more settings as a JSON object of dotted keys (the fault suite's heartbeats).
import os
for key, value in json.loads(os.environ.get("FLINK_CONF_EXTRA") or "{}").items():
    *path, leaf = key.split(".")
    node = conf
    for part in path:
        node = node.setdefault(part, {})
    node[leaf] = value
conf.setdefault("classloader", {}).setdefault("parent-first-patterns", {})["additional"] = ["pemja."]
# The TaskManager's Python workers: the venv's interpreter, not whatever python is on PATH.
conf.setdefault("python", {})["executable"] = "${PYTHON}"
# Flink's Prometheus reporter (plugin in \$FLINK_HOME/plugins, which config.sh uses by default):
# reporters are cluster settings, a submitted job cannot add one. SEGMENTS_METRICS_* apply.
reporter = subprocess.run([sys.executable, "-m", "flink_jobs.flink.reporter"], check=True, capture_output=True, text=True)
conf.update(yaml.safe_load(reporter.stdout) or {})
yaml.safe_dump(conf, open(sys.argv[2], "w"), default_flow_style=False)
PY
}

rest_ok() {
  "${PYTHON}" - "${REST}/overview" <<'PY' 2>/dev/null
import json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=3) as r:
    sys.exit(0 if json.load(r).get("taskmanagers", 0) >= 1 else 1)
PY
}

cluster_pids() {
  pgrep -f "org.apache.flink.runtime.(entrypoint.StandaloneSessionClusterEntrypoint|taskexecutor.TaskManagerRunner).*${FLINK_CONF_DIR}" || true
}

cmd_start() {
  require_java
  if rest_ok; then
    log "flink: already up at ${REST}"
    return 0
  fi
  port_in_use "${REST_PORT}" && die "port ${REST_PORT} is taken by something else: set FLINK_REST_PORT"
  write_conf
  local start
  start="$(now)"
  if ! "${FLINK_HOME}/bin/start-cluster.sh" >"${FLINK_LOG_DIR}/start-cluster.out" 2>&1; then
    cat "${FLINK_LOG_DIR}/start-cluster.out" >&2
    cmd_stop
    die "flink: start-cluster.sh failed"
  fi
  local deadline=$((SECONDS + ${CLUSTER_START_TIMEOUT:-120}))
  until rest_ok; do
    ((SECONDS < deadline)) || die "flink: no TaskManager registered at ${REST} after ${CLUSTER_START_TIMEOUT:-120}s; logs in ${FLINK_LOG_DIR}"
    sleep 1
  done
  log "flink: up at ${REST} (FLINK_HOME=${FLINK_HOME}, logs ${FLINK_LOG_DIR}) in $(elapsed "${start}")s"
}

cmd_status() {
  if rest_ok; then
    echo "flink: up ${REST}"
  else
    echo "flink: down"
    return 3
  fi
}

cmd_submit() {
  rest_ok || die "flink: not running at ${REST}; run: deploy/local/cluster.sh start"
  local start
  start="$(now)"
  # -pym: the job module of the installed package (its relative imports need a package); the
  # TaskManager imports flink_jobs from the venv, which has the project installed.
  "${FLINK_HOME}/bin/flink" run -m "localhost:${REST_PORT}" -pyexec "${PYTHON}" -pyclientexec "${PYTHON}" \
    -pym flink_jobs.flink.segmentation_job "$@"
  log "flink: submitted job returned after $(elapsed "${start}")s"
}

cmd_taskmanager() {
  rest_ok || die "flink: not running at ${REST}; run: deploy/local/cluster.sh start"
  "${FLINK_HOME}/bin/taskmanager.sh" start >>"${FLINK_LOG_DIR}/taskmanager-start.out" 2>&1
}

cmd_stop() {
  if [[ -f "${FLINK_CONF_DIR}/config.yaml" ]]; then
    "${FLINK_HOME}/bin/stop-cluster.sh" >"${FLINK_LOG_DIR}/stop-cluster.out" 2>&1 || true
  fi
  local pids deadline=$((SECONDS + 30))
  pids="$(cluster_pids)"
  while [[ -n "${pids}" ]] && ((SECONDS < deadline)); do
    sleep 1
    pids="$(cluster_pids)"
  done
  if [[ -n "${pids}" ]]; then
    log "flink: still running after stop-cluster.sh, sending SIGKILL to ${pids//$'\n'/ }"
    # shellcheck disable=SC2086
    kill -9 ${pids} 2>/dev/null || true
  fi
  log "flink: stopped"
}

case "${1:-}" in
  start) cmd_start ;;
  status) cmd_status ;;
  submit) shift; cmd_submit "$@" ;;
  taskmanager) cmd_taskmanager ;;
  stop) cmd_stop ;;
  *) print_header "$0"; exit 2 ;;
esac
