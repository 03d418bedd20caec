#!/usr/bin/env bash
# install-tools.sh installs the pinned client tools that the end-to-end tests
# drive (crane, regctl, oras, the OCI conformance suite, skopeo) into
# $REPO/.tools/bin. It is idempotent: a tool whose stamp file names the pinned
# version is skipped, so a second run costs a few stat calls.
#
# Go tools come from the Go module proxy (go install module@version); skopeo
# comes from Debian (apt-get), installed only when it is not already on PATH.
#
# Usage: scripts/install-tools.sh [tool...]   (default: all)
#   TOOLS_DIR overrides the install root (default: $REPO/.tools).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_DIR="${TOOLS_DIR:-$REPO/.tools}"
BIN="$TOOLS_DIR/bin"
STAMPS="$TOOLS_DIR/stamps"

# Pinned versions. Bump here only.
CRANE_MOD="github.com/google/go-containerregistry/cmd/crane"
CRANE_VERSION="v0.22.1"
REGCTL_MOD="github.com/regclient/regclient/cmd/regctl"
REGCTL_VERSION="v0.11.7"
ORAS_MOD="oras.land/oras/cmd/oras"
ORAS_VERSION="v1.3.6"
# The conformance suite is a main package in its own module; the binary is
# named "conformance".
CONFORMANCE_MOD="github.com/opencontainers/distribution-spec/conformance"
CONFORMANCE_VERSION="v0.0.0-20260831232431-97274622c111"

log() { printf 'install-tools: %s\n' "$*" >&2; }

mkdir -p "$BIN" "$STAMPS"

# go_tool NAME MODULE VERSION installs MODULE@VERSION as $BIN/NAME unless the
# stamp says that exact version is already there.
go_tool() {
	local name="$1" mod="$2" version="$3"
	local stamp="$STAMPS/$name"
	if [[ -x "$BIN/$name" && -f "$stamp" && "$(cat "$stamp")" == "$mod@$version" ]]; then
		return 0
	fi
	log "go install $mod@$version"
	# Outside any module so the project's go.mod plays no part; proxy only.
	(cd "$TOOLS_DIR" &&
		GOBIN="$BIN" CGO_ENABLED=0 GOFLAGS=-buildvcs=false \
			go install "$mod@$version")
	printf '%s\n' "$mod@$version" >"$stamp"
}

install_skopeo() {
	if command -v skopeo >/dev/null 2>&1; then
		return 0
	fi
	if ! command -v apt-get >/dev/null 2>&1; then
		log "skopeo is not on PATH and apt-get is not available; install skopeo by hand"
		return 1
	fi
	local sudo=""
	if [[ "$(id -u)" != 0 ]]; then
		sudo="sudo"
	fi
	if ! apt-cache policy skopeo 2>/dev/null | grep -q 'Candidate: [0-9]'; then
		log "apt-get update (skopeo has no install candidate yet)"
		$sudo apt-get update -qq
	fi
	log "apt-get install skopeo"
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends skopeo >/dev/null
}

install_one() {
	case "$1" in
	crane) go_tool crane "$CRANE_MOD" "$CRANE_VERSION" ;;
	regctl) go_tool regctl "$REGCTL_MOD" "$REGCTL_VERSION" ;;
	oras) go_tool oras "$ORAS_MOD" "$ORAS_VERSION" ;;
	conformance) go_tool conformance "$CONFORMANCE_MOD" "$CONFORMANCE_VERSION" ;;
	skopeo) install_skopeo ;;
	*)
		log "unknown tool $1 (known: crane regctl oras conformance skopeo)"
		return 2
		;;
	esac
}

tools=("$@")
if [[ ${#tools[@]} -eq 0 ]]; then
	tools=(crane regctl oras conformance skopeo)
fi
for t in "${tools[@]}"; do
	install_one "$t"
done
