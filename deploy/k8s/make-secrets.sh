#!/usr/bin/env bash
# Create the gateway's keys for Kubernetes (deploy/k8s/secrets/generated/, mode 0600), then:
#   kubectl apply -k deploy/k8s/secrets
# An existing file is never overwritten (the audit log is signed with that key): remove it
# yourself to rotate (docs/deploy.md). Needs openssl.
set -euo pipefail
out="${1:-$(dirname "$0")/secrets/generated}"
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
