#!/usr/bin/env bash
# Prometheus for the local stack: Debian's `prometheus` (it brings `promtool`), scraping the
# job's Python exporters (file_sd) and Flink's reporter, with the project's alert rules. Runs as
# a plain process; config and data under .cache/observability/, log in .cache/stack/logs/.
#
# Usage: deploy/local/prometheus.sh COMMAND
#   install   install the Debian package when prometheus or promtool is missing (apt-get; as
#             root, or through passwordless sudo)
#   start     install if needed, write the config, start on a free port, wait until ready
#             (idempotent: a running Prometheus gets the new config and a reload)
#   status    exit 0 when it answers /-/ready, 3 otherwise
#   stop      SIGTERM, wait, SIGKILL; removes the pid and env files
#   env       print `export PROMETHEUS_URL=...` lines: eval "$(deploy/local/prometheus.sh env)"
#
# Env (all optional):
#   PROMETHEUS_PORT=9090             preferred port; a free one is picked when it is taken
#   PROMETHEUS_SCRAPE_INTERVAL=15s   scrape and rule evaluation interval (tests use 2s)
#   PROMETHEUS_START_TIMEOUT=60      seconds to wait for /-/ready
#   SEGMENTS_METRICS_*               the job's metrics settings (ports, targets folder) are read
#                                    through flink_jobs.flink.reporter, as the job reads them
set -euo pipefail
# shellcheck source-path=SCRIPTDIR

# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

OBS_DIR="${REPO_ROOT}/deploy/observability"
PROM_STATE_DIR="${CACHE_DIR}/observability"
PROM_CONFIG="${PROM_STATE_DIR}/prometheus.yml"
PROM_DATA="${PROM_STATE_DIR}/prometheus-data"
PROM_PID_FILE="${PROM_STATE_DIR}/prometheus.pid"
PROM_ENV="${PROM_STATE_DIR}/prometheus.env"
PROM_LOG="${LOG_DIR}/prometheus.log"
VENV_PYTHON="${REPO_ROOT}/.venv/bin/python"

usage() { print_header "${BASH_SOURCE[0]}"; }


cmd_install() {
  command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 && return 0
  mkdir -p "${LOG_DIR}"
  as_root true || die "prometheus missing: install it (sudo apt-get install -y prometheus), or run this as root"
  log "prometheus: not installed, installing the Debian package (apt-get), log ${LOG_DIR}/apt-prometheus.log"
  # Keep apt from starting the packaged service: this script runs its own process.
  local policy=/usr/sbin/policy-rc.d had_policy=0
  [[ -e "${policy}" ]] && had_policy=1
  if ((had_policy == 0)); then
    as_root sh -c "printf '#!/bin/sh\nexit 101\n' >${policy} && chmod +x ${policy}"
  fi
  {
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q &&
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus
  } >>"${LOG_DIR}/apt-prometheus.log" 2>&1 || {
    ((had_policy == 1)) || as_root rm -f "${policy}"
    tail -n 20 "${LOG_DIR}/apt-prometheus.log" >&2
    die "prometheus: apt-get install prometheus failed (log ${LOG_DIR}/apt-prometheus.log)"
  }
  ((had_policy == 1)) || as_root rm -f "${policy}"
  log "prometheus: installed $(prometheus --version 2>&1 | awk 'NR == 1 { print $3 }')"
}

prom_running() { pid_alive "${PROM_PID_FILE}" "${PROM_CONFIG}"; }

prom_ready() {
  python3 - "http://127.0.0.1:$1/-/ready" <<'PY' 2>/dev/null
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=3) as r:
    sys.exit(0 if r.status == 200 else 1)
PY
}

# The job's metrics settings, as the job resolves them (defaults, SEGMENTS_METRICS_*).
read_scrape_env() {
  [[ -x "${VENV_PYTHON}" ]] || die "no ${VENV_PYTHON}: run deploy/local/setup.sh first"
  local out
  out="$("${VENV_PYTHON}" -m flink_jobs.flink.reporter --scrape-env)" || die "cannot read the job's metrics settings"
  FLINK_REPORTER_PORTS="$(sed -n 's/^FLINK_REPORTER_PORTS=//p' <<<"${out}")"
  TARGETS_DIR="$(sed -n 's/^TARGETS_DIR=//p' <<<"${out}")"
  [[ -n "${TARGETS_DIR}" ]] || TARGETS_DIR="${PROM_STATE_DIR}/targets"
}

write_config() {
  local listen="$1" flink_targets="" first last port
  if [[ -n "${FLINK_REPORTER_PORTS}" ]]; then
    first="${FLINK_REPORTER_PORTS%-*}"
    last="${FLINK_REPORTER_PORTS#*-}"
    for ((port = first; port <= last; port++)); do
      flink_targets+="${flink_targets:+, }\"localhost:${port}\""
    done
  fi
  mkdir -p "${TARGETS_DIR}"
  # Registrations of Python workers that were killed (no atexit) would show as down targets.
  "${VENV_PYTHON}" -c 'import socket, sys; from pathlib import Path; from flink_jobs.runtime.metrics import remove_stale_targets; remove_stale_targets(Path(sys.argv[1]), socket.gethostname())' "${TARGETS_DIR}"
  sed -e "s|@SCRAPE_INTERVAL@|${PROMETHEUS_SCRAPE_INTERVAL:-15s}|g" \
    -e "s|@RULES_FILE@|${OBS_DIR}/prometheus/alerts.yml|g" \
    -e "s|@TARGETS_DIR@|${TARGETS_DIR}|g" \
    -e "s|@FLINK_TARGETS@|${flink_targets}|g" \
    -e "s|@LISTEN@|${listen}|g" \
    "${OBS_DIR}/prometheus/prometheus.local.yml" >"${PROM_CONFIG}.tmp"
  promtool check config "${PROM_CONFIG}.tmp" >>"${PROM_LOG}" 2>&1 ||
    { tail -n 20 "${PROM_LOG}" >&2; die "prometheus: generated config is invalid (${PROM_CONFIG}.tmp)"; }
  mv "${PROM_CONFIG}.tmp" "${PROM_CONFIG}"
}

write_env() {
  local port="$1"
  cat >"${PROM_ENV}.tmp" <<EOF
# Written by deploy/local/prometheus.sh start; removed by stop.
PROMETHEUS_URL=http://localhost:${port}
PROMETHEUS_PORT=${port}
PROMETHEUS_TARGETS_DIR=${TARGETS_DIR}
PROMETHEUS_CONFIG=${PROM_CONFIG}
PROMETHEUS_LOG=${PROM_LOG}
EOF
  mv "${PROM_ENV}.tmp" "${PROM_ENV}"
}

cmd_start() {
  cmd_install
  mkdir -p "${PROM_STATE_DIR}" "${PROM_DATA}" "${LOG_DIR}"
  read_scrape_env
  local port start
  if prom_running; then
    port="$(<"${PROM_STATE_DIR}/port")"
    write_config "localhost:${port}"
    python3 -c 'import sys, urllib.request; urllib.request.urlopen(urllib.request.Request(sys.argv[1], method="POST"), timeout=10)' \
      "http://127.0.0.1:${port}/-/reload" || die "prometheus: running (pid $(<"${PROM_PID_FILE}")) but the reload failed; see ${PROM_LOG}"
    log "prometheus: already running (pid $(<"${PROM_PID_FILE}"), http://localhost:${port}), config reloaded"
  else
    port="$(pick_port "${PROMETHEUS_PORT:-9090}")"
    [[ "${port}" == "${PROMETHEUS_PORT:-9090}" ]] || log "prometheus: port ${PROMETHEUS_PORT:-9090} is taken, using ${port}"
    write_config "localhost:${port}"
    log "prometheus: starting $(prometheus --version 2>&1 | awk 'NR == 1 { print $3 }') on localhost:${port}, log ${PROM_LOG}"
    nohup setsid prometheus --config.file="${PROM_CONFIG}" --storage.tsdb.path="${PROM_DATA}" \
      --storage.tsdb.retention.time=2d --web.listen-address="127.0.0.1:${port}" --web.enable-lifecycle \
      >>"${PROM_LOG}" 2>&1 </dev/null 9>&- &
    echo "$!" >"${PROM_PID_FILE}"
    wait_exec "${PROM_PID_FILE}" "${PROM_CONFIG}"
    echo "${port}" >"${PROM_STATE_DIR}/port"
  fi
  start="$(now)"
  local deadline=$((SECONDS + ${PROMETHEUS_START_TIMEOUT:-60}))
  until prom_ready "${port}"; do
    if ! prom_running; then
      tail -n 20 "${PROM_LOG}" >&2
      rm -f "${PROM_PID_FILE}"
      die "prometheus: exited during start-up (log ${PROM_LOG})"
    fi
    ((SECONDS < deadline)) || die "prometheus: not ready after ${PROMETHEUS_START_TIMEOUT:-60}s (log ${PROM_LOG})"
    sleep 0.2
  done
  write_env "${port}"
  log "prometheus: ready at http://localhost:${port} after $(elapsed "${start}")s (targets: ${TARGETS_DIR}, flink ports: ${FLINK_REPORTER_PORTS:-off})"
}

cmd_status() {
  local port
  if prom_running; then
    port="$(<"${PROM_STATE_DIR}/port")"
    if prom_ready "${port}"; then
      echo "prometheus: up      pid $(<"${PROM_PID_FILE}")  http://localhost:${port}"
      return 0
    fi
    echo "prometheus: running pid $(<"${PROM_PID_FILE}")  http://localhost:${port}  NOT ready"
    return 3
  fi
  echo "prometheus: down"
  return 3
}

cmd_stop() {
  stop_pid "${PROM_PID_FILE}" "${PROM_CONFIG}" prometheus 30
  rm -f "${PROM_ENV}"
}

cmd_env() {
  [[ -f "${PROM_ENV}" ]] || die "prometheus not started (no ${PROM_ENV}): run $0 start"
  grep -E '^[A-Z_]+=' "${PROM_ENV}" | sed 's/^/export /'
}

take_lock() {
  mkdir -p "${PROM_STATE_DIR}"
  exec 9>"${PROM_STATE_DIR}/.lock"
  flock -w 120 9 || die "another prometheus.sh holds ${PROM_STATE_DIR}/.lock"
}

main() {
  local cmd="${1:-}"
  case "${cmd}" in
    install | start | stop) take_lock ;;
  esac
  case "${cmd}" in
    install) cmd_install ;;
    start) cmd_start ;;
    status) cmd_status ;;
    stop) cmd_stop ;;
    env) cmd_env ;;
    -h | --help | help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

main "$@"
