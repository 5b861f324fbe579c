#!/usr/bin/env bash
# Writes the TLS test fixtures (tests/fixtures/tls/): a test CA, a server certificate it signs for
# localhost and 127.0.0.1 with its key, and a second CA that signed nothing (a client trusting it
# must refuse the server). Valid for 100 years; for tests only, never for a deployment.
#   bash scripts/make-test-certs.sh [OUTDIR]
set -euo pipefail
out="${1:-$(dirname "$0")/../tests/fixtures/tls}"
mkdir -p "$out"
cd "$out"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
openssl req -x509 -newkey rsa:2048 -nodes -days 36500 -subj "/CN=qwha test CA" \
  -keyout "$tmp/ca.key" -out ca.pem 2>/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -days 36500 -subj "/CN=qwha other CA" \
  -keyout "$tmp/other.key" -out other-ca.pem 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key \
  -out "$tmp/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$tmp/ext"
openssl x509 -req -in "$tmp/server.csr" -CA ca.pem -CAkey "$tmp/ca.key" -CAcreateserial \
  -days 36500 -extfile "$tmp/ext" -out server.pem 2>/dev/null
rm -f ca.srl
echo "wrote $(pwd)/{ca.pem,other-ca.pem,server.pem,server.key}"
