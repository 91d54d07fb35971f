#!/usr/bin/env bash
# Sets up everything and runs the whole test suite: first the checks (lint with ruff, types with
# mypy, the package's layers with import-linter; a few seconds, settings in pyproject.toml), then
# unit tests (no services), then integration tests against the real local stack (Kafka, Redis,
# Flink mini-cluster), which the test session starts itself (deploy/local/stack.sh) and stops
# again if it started it.
#
#   deploy/local/test.sh                 # everything, as CI runs it
#   deploy/local/test.sh tests/unit      # any pytest arguments narrow it down
#
# A run that collects no test is a failure (pytest exit code 5), not a pass.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

"${LOCAL_DIR}/setup.sh"
# promtool (Debian's prometheus package) for the alert-rule tests; Prometheus itself for the
# observability integration test.
"${LOCAL_DIR}/prometheus.sh" install
# Headless Chromium (Debian's package) for the segment browser's test.
"${LOCAL_DIR}/packages.sh" chromium
# kustomize, to render deploy/kubernetes/overlays/ for their validation (built once with Go).
"${LOCAL_DIR}/kustomize.sh" >/dev/null
cd "$REPO_ROOT"
export PATH="${REPO_ROOT}/.venv/bin:${PATH}"  # PyFlink's thread mode finds libpython through PATH
log "checks: ruff (lint), mypy (types; strict on flink_jobs/core), lint-imports (layers)"
ruff check . || die "ruff found problems (above); 'ruff check --fix .' mends the import order and unused imports"
mypy || die "mypy found type errors (above)"
lint-imports || die "an import breaks the package's layers (above; the contracts are in pyproject.toml)"
set +e
python -m pytest "$@"
status=$?
set -e
if [[ $status -eq 5 ]]; then
  log "ERROR: pytest collected no tests: that is a failure"
  exit 1
fi
exit $status
