#!/usr/bin/env bash
# install-distribution.sh installs CNCF distribution (the reference registry,
# binary "registry") into $REPO/.tools/bin for `make bench`, which runs it side
# by side with hubmesh. It is idempotent: when the stamp file names the pinned
# version the install is skipped.
#
# Usage: bench/install-distribution.sh
#   TOOLS_DIR overrides the install root (default: $REPO/.tools).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_DIR="${TOOLS_DIR:-$REPO/.tools}"
BIN="$TOOLS_DIR/bin"
STAMPS="$TOOLS_DIR/stamps"

# Pinned version. The benchmark's baseline; bump here only.
MOD="github.com/distribution/distribution/v3/cmd/registry"
VERSION="v3.1.2"

mkdir -p "$BIN" "$STAMPS"
stamp="$STAMPS/registry"
if [[ -x "$BIN/registry" && -f "$stamp" && "$(cat "$stamp")" == "$MOD@$VERSION" ]]; then
	exit 0
fi
printf 'install-distribution: go install %s@%s\n' "$MOD" "$VERSION" >&2
# Outside any module so the project's go.mod plays no part.
(cd "$TOOLS_DIR" &&
	GOBIN="$BIN" CGO_ENABLED=0 GOFLAGS=-buildvcs=false go install "$MOD@$VERSION")
printf '%s\n' "$MOD@$VERSION" >"$stamp"
