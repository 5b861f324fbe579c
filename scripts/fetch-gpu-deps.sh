#!/usr/bin/env bash
# Prepares .deps/: the Debian 12 packages the GPU machine lacks (Abseil,
# nlohmann-json, GoogleTest sources), unpacked into a prefix that travels with
# the working tree (`carry: [".deps"]`). Run here, on the Debian machine.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .deps && mkdir -p .deps/debs .deps/root
(cd .deps/debs && apt-get download libabsl-dev libabsl20220623 nlohmann-json3-dev googletest >/dev/null)
for f in .deps/debs/*.deb; do dpkg -x "$f" .deps/root; done
rm -rf .deps/debs
du -sh .deps
