# shellcheck shell=bash source-path=SCRIPTDIR disable=SC2034 # variables are used by the sourcing scripts
# Shared helpers for the local stack scripts. Sourced, never executed.
#
# Layout (all git-ignored, under the repository root):
#   .cache/jars/kafka/<KAFKA_VERSION>/*.jar                 broker + admin tools classpath
#   .cache/jars/flink/<FLINK_KAFKA_CONNECTOR_VERSION>/*.jar fat Kafka connector for PyFlink
#   .cache/stack/stack.env                                  KAFKA_BOOTSTRAP, REDIS_URL, ... of the running stack
#   .cache/stack/logs/                                      every log of the stack
#   .cache/stack/kafka/, .cache/stack/redis/                configs, data, pid files

LOCAL_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${LOCAL_DIR}/../.." && pwd)"

# shellcheck source=versions.env
. "${LOCAL_DIR}/versions.env"

CACHE_DIR="${STACK_CACHE_DIR:-${REPO_ROOT}/.cache}"
JARS_DIR="${CACHE_DIR}/jars"
KAFKA_JARS_DIR="${JARS_DIR}/kafka/${KAFKA_VERSION}"
FLINK_JARS_DIR="${JARS_DIR}/flink/${FLINK_KAFKA_CONNECTOR_VERSION}"
FLINK_KAFKA_CONNECTOR_JAR="${FLINK_JARS_DIR}/flink-sql-connector-kafka-${FLINK_KAFKA_CONNECTOR_VERSION}.jar"

STATE_DIR="${CACHE_DIR}/stack"
LOG_DIR="${STATE_DIR}/logs"
STACK_ENV="${STATE_DIR}/stack.env"
KAFKA_STATE_DIR="${STATE_DIR}/kafka"
REDIS_STATE_DIR="${STATE_DIR}/redis"
SECRETS_DIR="${STATE_DIR}/secrets"
KAFKA_PID_FILE="${KAFKA_STATE_DIR}/kafka.pid"
REDIS_PID_FILE="${REDIS_STATE_DIR}/redis.pid"

# Prints the comment block at the top of a script (its usage text).
print_header() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$1"
}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Seconds since the epoch with milliseconds, for timings.
# as_root CMD...: run as root: directly when we are, else through passwordless sudo.
as_root() {
  if [[ "$(id -u)" -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo -n "$@"
  else
    return 99
  fi
}

now() { date +%s.%N; }
elapsed() { awk -v s="$1" -v e="$(now)" 'BEGIN { printf "%.1f", e - s }'; }

require_java() {
  command -v java >/dev/null 2>&1 || die "java not found: install OpenJDK ${JAVA_MIN_VERSION}+ (apt-get install -y openjdk-17-jdk-headless)"
  local major
  major="$(java -XshowSettings:properties -version 2>&1 | awk -F'= ' '/java.specification.version/ { print $2 }')"
  major="${major%%.*}"
  if [[ -z "${major}" || "${major}" -lt "${JAVA_MIN_VERSION}" ]]; then
    die "Java ${JAVA_MIN_VERSION}+ required (Kafka 4.x broker and Flink 2.x), found '${major:-unknown}'"
  fi
}

# True when nothing can bind 127.0.0.1:PORT (something listens there, or it is reserved).
port_in_use() {
  ! python3 - "$1" <<'PY' 2>/dev/null
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.close()
PY
}

# A port the kernel considers free right now (ephemeral range).
free_port() {
  python3 - <<'PY'
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}

# pick_port PREFERRED [AVOID...]: PREFERRED when free, else a free port not in AVOID.
pick_port() {
  local preferred="$1" port avoid
  shift
  if ! port_in_use "${preferred}"; then
    echo "${preferred}"
    return
  fi
  while true; do
    port="$(free_port)"
    for avoid in "$@"; do
      [[ "${port}" == "${avoid}" ]] && continue 2
    done
    echo "${port}"
    return
  done
}

# True when something accepts TCP connections on localhost:PORT.
port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# pid_alive PIDFILE MARKER: the pid in PIDFILE runs and its command line contains MARKER
# (guards against a recycled pid after a crash or reboot).
pid_alive() {
  local pid_file="$1" marker="$2" pid
  [[ -s "${pid_file}" ]] || return 1
  pid="$(<"${pid_file}")"
  [[ "${pid}" =~ ^[0-9]+$ ]] || return 1
  kill -0 "${pid}" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/${pid}/cmdline" 2>/dev/null | grep -qF -- "${marker}"
}

# wait_exec PID_FILE MARKER: a process just started with `cmd &` runs this script's code until
# it execs cmd, so for a moment its command line lacks MARKER and pid_alive says "not running"
# (seen on a loaded machine: "broker process exited during start-up" while the broker came up).
# Waits up to 10 s for the exec, or for the process to end.
wait_exec() {
  local pid_file="$1" marker="$2" i
  for ((i = 0; i < 100; i++)); do
    pid_alive "${pid_file}" "${marker}" && return 0
    proc_running "$(<"${pid_file}")" || return 0
    sleep 0.1
  done
}

# proc_running PID: the process exists and is not a zombie. An orphan's exit is reaped by pid 1,
# possibly late, so kill -0 alone reports the zombie as alive; and a JVM's main thread may exit
# (state Z) while other threads still run, so a Z leader with threads left still counts as running.
proc_running() {
  local state threads
  kill -0 "$1" 2>/dev/null || return 1
  state="$(awk '/^State:/ { print $2 }' "/proc/$1/status" 2>/dev/null)"
  threads="$(awk '/^Threads:/ { print $2 }' "/proc/$1/status" 2>/dev/null)"
  [[ -n "${state}" ]] || return 1
  [[ "${state}" != "Z" || "${threads:-1}" -gt 1 ]]
}

# stop_pid PIDFILE MARKER NAME [TIMEOUT]: SIGTERM, wait, then SIGKILL; removes PIDFILE.
stop_pid() {
  local pid_file="$1" marker="$2" name="$3" timeout="${4:-30}" pid waited=0
  if ! pid_alive "${pid_file}" "${marker}"; then
    rm -f "${pid_file}"
    log "${name}: not running"
    return 0
  fi
  pid="$(<"${pid_file}")"
  log "${name}: stopping pid ${pid} (SIGTERM, up to ${timeout}s)"
  kill -TERM "${pid}" 2>/dev/null || true
  while proc_running "${pid}"; do
    if ((waited >= timeout * 10)); then
      log "${name}: still alive after ${timeout}s, sending SIGKILL"
      kill -KILL "${pid}" 2>/dev/null || true
      sleep 0.5
      break
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  rm -f "${pid_file}"
  log "${name}: stopped"
}

# Classpath of the Kafka jars (a JVM wildcard, so keep it quoted).
kafka_classpath() {
  [[ -f "${KAFKA_JARS_DIR}/.complete" ]] || die "Kafka jars missing in ${KAFKA_JARS_DIR}: run deploy/local/fetch-jars.sh"
  echo "${KAFKA_JARS_DIR}/*"
}

# kafka_tool MAIN_CLASS ARGS...: run a Kafka admin tool main class with a small, fast-starting
# JVM, killed after KAFKA_TOOL_TIMEOUT seconds (default 120).
kafka_tool() {
  local main="$1"
  shift
  timeout "${KAFKA_TOOL_TIMEOUT:-120}" java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    -Dlog4j2.configurationFile="${LOCAL_DIR}/kafka/log4j2-tools.properties" \
    -cp "$(kafka_classpath)" "${main}" "$@"
}

# Reads KEY from the stack state file (empty when absent).
stack_env_get() {
  [[ -f "${STACK_ENV}" ]] || return 0
  sed -n "s/^$1=//p" "${STACK_ENV}" | tail -n 1
}
