#!/usr/bin/env bash
# Build promtool (Prometheus's rule checker and rule unit-test runner) from the Go module
# github.com/prometheus/prometheus with the Go toolchain; nothing prebuilt is downloaded.
# Cached outside the repository, keyed by version:
#   ${AUDIOPROC_CACHE:-~/.cache/audioprocessor}/promtool-<PROMETHEUS_VERSION>/promtool
# sharing the module and build caches of build-bins.sh. A second run does nothing. Prints the
# binary's path on its last line (`--path`: only print it).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$HERE/versions.env"

CACHE=${AUDIOPROC_CACHE:-$HOME/.cache/audioprocessor}
DIR=$CACHE/promtool-$PROMETHEUS_VERSION
BIN=$DIR/promtool
if [ "${1:-}" = "--path" ]; then echo "$BIN"; exit 0; fi
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi

export GOTOOLCHAIN=local   # never fetch another Go toolchain behind our back
export GOFLAGS=-modcacherw # keep the module cache removable with rm -rf
export CGO_ENABLED=0       # a static binary, as upstream release builds are
export GOMODCACHE=${GOMODCACHE:-$CACHE/go/mod}
export GOCACHE=${GOCACHE:-$CACHE/go/build}
log() { printf '[build-promtool %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# v0.3XX.Y is Prometheus 3.XX.Y: stamp that into `promtool --version`.
minor_patch=${PROMETHEUS_VERSION#v0.3}
release="3.${minor_patch:0:2}.${minor_patch#*.}"
ldflags="-s -w -X github.com/prometheus/common/version.Version=$release"
ldflags+=" -X github.com/prometheus/common/version.Branch=HEAD"
mkdir -p "$DIR"
log "building promtool $PROMETHEUS_VERSION (Prometheus $release)"
# The module has no replace or exclude lines, so `go install module@version` builds it as is.
# remove_all_sd leaves out the service-discovery plugins (cloud SDKs, client-go): rule checks and
# rule unit tests never discover targets, and the build is a fraction of the full one.
GOBIN=$DIR.partial go install -trimpath -tags remove_all_sd -ldflags="$ldflags" \
  "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_VERSION"
mv "$DIR.partial/promtool" "$BIN"
rmdir "$DIR.partial"
log "promtool ready: $BIN"
echo "$BIN"
