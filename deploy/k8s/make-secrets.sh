#!/usr/bin/env bash
# Create the gateway's keys for Kubernetes (deploy/k8s/secrets/generated/, mode 0600), then:
#   kubectl apply -k deploy/k8s/secrets
# With --multi-node, also the mutual TLS material of gateways and worker hosts
# (deploy/k8s/secrets-multi-node/generated/): a gateway CA and a worker CA, a gateway client
# certificate and a worker host certificate for the name llmos-worker-assistant; then
#   kubectl apply -k deploy/k8s/secrets-multi-node
# An existing file is never overwritten (the audit log is signed with that key): remove it
# yourself to rotate (docs/deploy.md). Needs openssl.
set -euo pipefail
here="$(dirname "$0")"
multi=""
if [ "${1:-}" = "--multi-node" ]; then multi=1; shift; fi
out="${1:-$here/secrets/generated}"
umask 077
mkdir -p "$out"
new() { [ -e "$out/$1" ] && { echo "kept $out/$1"; return 1; }; return 0; }
if new audit_signing_key.pem; then
  openssl genpkey -algorithm ed25519 -out "$out/audit_signing_key.pem"
  openssl pkey -in "$out/audit_signing_key.pem" -pubout -out "$out/audit_signing_key.pub.pem"
  echo "wrote $out/audit_signing_key.pem and .pub.pem"
fi
for name in api_key_pepper audit_digest_key; do
  if new "$name"; then
    openssl rand -hex 32 > "$out/$name"
    echo "wrote $out/$name"
  fi
done

[ -z "$multi" ] && exit 0

tls="${2:-$here/secrets-multi-node/generated}"
mkdir -p "$tls"
ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
ca() {  # ca NAME "CN"
  if [ -e "$tls/$1.pem" ]; then echo "kept $tls/$1.pem"; return; fi
  openssl req -x509 "${ec[@]}" -keyout "$tls/$1.key" -out "$tls/$1.pem" -days 3650 -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  echo "wrote $tls/$1.pem (its key $tls/$1.key stays here, never in a Secret)"
}
leaf() {  # leaf NAME CA "CN" EXTENSIONS
  if [ -e "$tls/$1.pem" ]; then echo "kept $tls/$1.pem"; return; fi
  openssl req -new "${ec[@]}" -keyout "$tls/$1.key" -out "$tls/$1.csr" -subj "/CN=$3" 2>/dev/null
  printf '%s\n' "$4" > "$tls/$1.ext"
  openssl x509 -req -in "$tls/$1.csr" -CA "$tls/$2.pem" -CAkey "$tls/$2.key" -CAcreateserial \
    -out "$tls/$1.pem" -days 365 -extfile "$tls/$1.ext" 2>/dev/null
  rm -f "$tls/$1.csr" "$tls/$1.ext"
  echo "wrote $tls/$1.pem"
}
ca gateway-ca "llmos gateway CA"
ca worker-ca "llmos worker CA"
leaf gateway gateway-ca llmos-gateway \
  $'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth'
leaf worker worker-ca llmos-worker-assistant \
  $'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:llmos-worker-assistant'
[ -e "$tls/audit-dsn" ] || echo "now write $tls/audit-dsn: the PostgreSQL connection string (one line)"
