#!/usr/bin/env bash
# The demo: sets up the Python environment, starts the local stack (Kafka, Redis; installed or
# fetched when missing), then streams a synthetic event feed (browsers, buyers, cart abandoners,
# regulars, bots; with duplicates, out-of-order, late and malformed records) through the real
# segmentation job (300 days of orders and 10 days of visits first, then a live part at wall-clock
# time), shows segment sizes live from Redis and a few customers' memberships, runs the segment
# browser (`segments serve`; its URL is printed) and stops the job by itself. At a terminal the
# browser keeps serving until Ctrl-C. The stack keeps running for a look; `stack.sh stop` ends it.
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
