#!/usr/bin/env bash
# install-tools.sh installs the pinned client tools that the end-to-end tests
# drive (crane, regctl, oras, the OCI conformance suite, skopeo) into
# $REPO/.tools/bin, and the static busybox (/bin/busybox) that the automated
# build tests put into a FROM scratch base image. It is idempotent: a tool whose stamp file names the pinned
# version is skipped, so a second run costs a few stat calls.
#
# Go tools come from the Go module proxy (go install module@version); skopeo
# and busybox-static come from Debian (apt-get), installed only when skopeo is
# not already on PATH and /bin/busybox is missing.
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

# apt_install PACKAGE installs a Debian package, running apt-get update
# first when the package has no install candidate yet.
apt_install() {
	local pkg="$1"
	if ! command -v apt-get >/dev/null 2>&1; then
		log "apt-get is not available; install $pkg by hand"
		return 1
	fi
	local sudo=""
	if [[ "$(id -u)" != 0 ]]; then
		sudo="sudo"
	fi
	if ! apt-cache policy "$pkg" 2>/dev/null | grep 'Candidate: [0-9]' >/dev/null; then
		log "apt-get update ($pkg has no install candidate yet)"
		$sudo apt-get update -qq
	fi
	log "apt-get install $pkg"
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null
}

install_skopeo() {
	if command -v skopeo >/dev/null 2>&1; then
		return 0
	fi
	apt_install skopeo
}

# install_busybox installs Debian's busybox-static: one statically linked
# binary, /bin/busybox, that the build tests copy into a FROM scratch image
# (the tests cannot pull a base image from the internet).
install_busybox() {
	if [[ -x /bin/busybox ]]; then
		return 0
	fi
	apt_install busybox-static
}

install_one() {
	case "$1" in
	crane) go_tool crane "$CRANE_MOD" "$CRANE_VERSION" ;;
	regctl) go_tool regctl "$REGCTL_MOD" "$REGCTL_VERSION" ;;
	oras) go_tool oras "$ORAS_MOD" "$ORAS_VERSION" ;;
	conformance) go_tool conformance "$CONFORMANCE_MOD" "$CONFORMANCE_VERSION" ;;
	skopeo) install_skopeo ;;
	busybox) install_busybox ;;
	*)
		log "unknown tool $1 (known: crane regctl oras conformance skopeo busybox)"
		return 2
		;;
	esac
}

tools=("$@")
if [[ ${#tools[@]} -eq 0 ]]; then
	tools=(crane regctl oras conformance skopeo busybox)
fi
for t in "${tools[@]}"; do
	install_one "$t"
done
