#!/usr/bin/env bash
# The demo: sets up the Python environment, starts the local stack (Kafka, Redis; installed or
# fetched when missing), then streams a synthetic event feed (browsers, buyers, cart abandoners,
# regulars, bots; with duplicates, out-of-order, late and malformed records) through the real
# segmentation job, shows segment sizes live from Redis and a few customers' memberships, and
# stops the job by itself. The stack keeps running for a look; stop it with `stack.sh stop`.
#
#   deploy/local/demo.sh                     # about 2-3 minutes after the first set-up
#   deploy/local/demo.sh --events 60000      # any flink_jobs.cli.demo options
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

"${LOCAL_DIR}/setup.sh"
"${LOCAL_DIR}/stack.sh" start
cd "$REPO_ROOT"
export PATH="${REPO_ROOT}/.venv/bin:${PATH}"  # PyFlink's thread mode finds libpython through PATH
exec python -m flink_jobs.cli.demo "$@"
