#!/usr/bin/env bash
# Installs the Debian 12 packages qwha builds and tests with (DESIGN.md §3).
# Idempotent: installs only what is missing. Needs root (or sudo).
set -euo pipefail
packages=(
  bazel-bootstrap bazel-platforms pkg-config g++ python3
  libtorch-dev libabsl-dev libgtest-dev libgmock-dev libbenchmark-dev
  nlohmann-json3-dev libsqlite3-dev libssl-dev libcivetweb-dev libyaml-cpp-dev prometheus
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev prometheus-cpp-dev
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  echo "installing: ${missing[*]}"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
