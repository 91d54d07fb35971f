#!/usr/bin/env bash
# TLS certificates and passwords of the local stack's secured endpoints, made once with openssl
# and kept under .cache/stack/secrets/ (0700; files 0600). stack.sh calls it on start.
#
#   ca.pem            the local CA, what clients trust (kafka.ssl_ca_file, redis.tls_ca_file)
#   ca.key            its key (signs the server certificate; nothing else uses it)
#   server.pem        the server certificate, for localhost and 127.0.0.1, signed by the CA
#   server.key        its key (unencrypted PKCS#8)
#   broker.pem        server.key + server.pem: the broker's PEM keystore
#   kafka-password    the SCRAM-SHA-512 password of the Kafka user `segments`
#   redis-password    the password of the Redis ACL user `segments`
#   other-ca.pem      a second CA that signed nothing here (tests of an untrusted certificate)
#
# Usage: deploy/local/secrets.sh [--force]   (--force: make everything again)
set -euo pipefail

# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DAYS=825

make_ca() {
  local name="$1"
  openssl req -x509 -newkey rsa:2048 -nodes -days "${DAYS}" -sha256 \
    -subj "/CN=segments local ${name}" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "${SECRETS_DIR}/${name}.key" -out "${SECRETS_DIR}/${name}.pem" 2>/dev/null
}

make_server() {
  local ext="${SECRETS_DIR}/server.ext"
  printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=serverAuth" "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1" >"${ext}"
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "${SECRETS_DIR}/server.key" -out "${SECRETS_DIR}/server.csr" 2>/dev/null
  openssl x509 -req -in "${SECRETS_DIR}/server.csr" -days "${DAYS}" -sha256 -extfile "${ext}" \
    -CA "${SECRETS_DIR}/ca.pem" -CAkey "${SECRETS_DIR}/ca.key" -CAcreateserial \
    -out "${SECRETS_DIR}/server.pem" 2>/dev/null
  # openssl 3 writes PKCS#8 (BEGIN PRIVATE KEY), the form Kafka's PEM keystore reads.
  cat "${SECRETS_DIR}/server.key" "${SECRETS_DIR}/server.pem" >"${SECRETS_DIR}/broker.pem"
  rm -f "${SECRETS_DIR}/server.csr" "${ext}" "${SECRETS_DIR}/ca.srl"
}

make_password() {
  # 24 random bytes as URL-safe text: no quote or blank to escape in JAAS or redis.conf.
  python3 -c 'import secrets; print(secrets.token_urlsafe(24), end="")' >"${SECRETS_DIR}/$1"
}

main() {
  if [[ "${1:-}" == "--force" ]]; then rm -rf "${SECRETS_DIR}"; fi
  if [[ -f "${SECRETS_DIR}/broker.pem" && -f "${SECRETS_DIR}/redis-password" ]]; then
    return 0
  fi
  command -v openssl >/dev/null 2>&1 || "${LOCAL_DIR}/packages.sh" openssl
  mkdir -p "${SECRETS_DIR}"
  chmod 700 "${SECRETS_DIR}"
  (
    umask 077
    make_ca ca
    make_ca other-ca
    rm -f "${SECRETS_DIR}/other-ca.key"
    make_server
    make_password kafka-password
    make_password redis-password
  )
  log "secrets: made a local CA, a certificate for localhost and two passwords in ${SECRETS_DIR}"
}

main "$@"
