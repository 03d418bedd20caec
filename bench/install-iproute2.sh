#!/usr/bin/env bash
# Makes sure ip and tc (iproute2) are installed: the fan-out benchmark of
# bench/meshbench builds network namespaces and shapes their links with them.
# Idempotent. Without root it installs nothing and says so; meshbench then
# explains, and `make bench MESHBENCHFLAGS='-run pull,raft'` skips the fan-out.
set -euo pipefail

if command -v ip >/dev/null 2>&1 && command -v tc >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "install-iproute2: ip/tc missing and not root: cannot install iproute2 (the fan-out benchmark needs root anyway)" >&2
  exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2
elif command -v apk >/dev/null 2>&1; then
  apk add --no-cache iproute2
elif command -v dnf >/dev/null 2>&1; then
  dnf install -y iproute iproute-tc
else
  echo "install-iproute2: no apt-get, apk or dnf: install iproute2 (ip, tc) by hand" >&2
  exit 1
fi
command -v ip >/dev/null && command -v tc >/dev/null
