#!/usr/bin/env bash
# Installs the Debian packages the tests and benchmarks drive, when missing (apt-get; as root,
# or through passwordless sudo):
#
#   deploy/local/packages.sh chromium   # headless browser for the segment browser's test
#   deploy/local/packages.sh wrk        # HTTP load generator for bench/serve_bench.py
#   deploy/local/packages.sh openssl    # certificates of the stack's TLS endpoints (secrets.sh)
#
# Prometheus and Redis have their own scripts (prometheus.sh, stack.sh).
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $# -gt 0 ]] || { print_header "${BASH_SOURCE[0]}"; exit 2; }
mkdir -p "${LOG_DIR}"
missing=()
for package in "$@"; do
  case "$package" in
    chromium | wrk | openssl) command -v "$package" >/dev/null 2>&1 || missing+=("$package") ;;
    *) die "unknown package '${package}' (this script installs: chromium, wrk, openssl)" ;;
  esac
done
((${#missing[@]} == 0)) && exit 0
as_root true || die "${missing[*]} missing: install (sudo apt-get install -y ${missing[*]}), or run this as root"
log "packages: installing ${missing[*]} (apt-get; log ${LOG_DIR}/apt-packages.log)"
start="$(now)"
{
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q &&
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
} >>"${LOG_DIR}/apt-packages.log" 2>&1 || {
  tail -n 20 "${LOG_DIR}/apt-packages.log" >&2
  die "packages: apt-get install ${missing[*]} failed (log ${LOG_DIR}/apt-packages.log)"
}
log "packages: installed ${missing[*]} in $(elapsed "$start") s"
