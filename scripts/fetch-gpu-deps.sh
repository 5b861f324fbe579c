#!/usr/bin/env bash
# Prepares .deps/: the Debian 12 packages the GPU machine lacks (Abseil,
# nlohmann-json, GoogleTest sources, OpenSSL headers and libcrypto.so.3), unpacked
# into a prefix that travels with the working tree (`carry: [".deps"]`). Run
# here, on the Debian machine.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .deps && mkdir -p .deps/debs .deps/root
(cd .deps/debs && apt-get download libabsl-dev libabsl20220623 nlohmann-json3-dev googletest \
  libssl-dev libssl3 >/dev/null)
for f in .deps/debs/*.deb; do dpkg -x "$f" .deps/root; done
rm -rf .deps/debs
# Static archives and docs are not needed (shared libraries only; keeps the carry small).
rm -rf .deps/root/usr/lib/x86_64-linux-gnu/lib{crypto,ssl}.a .deps/root/usr/share/doc .deps/root/usr/share/man
du -sh .deps
