#!/usr/bin/env bash
# Prints the path of a kustomize binary of KUSTOMIZE_VERSION (versions.env), building it from the
# Go module proxy into .cache/bin/ the first time (about 40 s; needs `go`). CI renders
# deploy/kubernetes/overlays/ with it (deploy/kubernetes/validate.py).
#
#   deploy/local/kustomize.sh                       # the binary's path
#   "$(deploy/local/kustomize.sh)" build deploy/kubernetes/overlays/small
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BIN="${CACHE_DIR}/bin/kustomize-${KUSTOMIZE_VERSION}"
if [[ ! -x "${BIN}" ]]; then
  command -v go >/dev/null 2>&1 || die "go is not on PATH: kustomize ${KUSTOMIZE_VERSION} is built with it (or put a kustomize binary at ${BIN})"
  log "kustomize: building ${KUSTOMIZE_VERSION} from the Go module proxy (once; log ${LOG_DIR}/kustomize.log)"
  mkdir -p "${CACHE_DIR}/bin" "${LOG_DIR}"
  start="$(now)"
  tmp="$(mktemp -d)"
  GOBIN="${tmp}" GOPATH="${CACHE_DIR}/go" GOFLAGS=-modcacherw \
    go install "sigs.k8s.io/kustomize/kustomize/v5@v${KUSTOMIZE_VERSION}" >"${LOG_DIR}/kustomize.log" 2>&1 \
    || { tail -n 20 "${LOG_DIR}/kustomize.log" >&2; die "kustomize: go install failed (log ${LOG_DIR}/kustomize.log)"; }
  mv "${tmp}/kustomize" "${BIN}"
  rmdir "${tmp}"
  log "kustomize: built in $(elapsed "${start}") s"
fi
echo "${BIN}"
