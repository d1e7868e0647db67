#!/usr/bin/env bash
# Build Kueue's controller manager (sigs.k8s.io/kueue/cmd/kueue) from the Go module proxy and keep
# its CRDs beside it, for the e2e Kueue tests (e2e/kueue.py). Nothing prebuilt is downloaded.
#   ${AUDIOPROC_CACHE:-~/.cache/audioprocessor}/kueue-<version>/bin/kueue
#   ${AUDIOPROC_CACHE:-~/.cache/audioprocessor}/kueue-<version>/crds/*.yaml  (from the module source)
#   ${AUDIOPROC_CACHE:-~/.cache/audioprocessor}/kueue-<version>/webhook-manifests.yaml  (idem)
# A second run with both stamped does nothing. Prints the kueue directory on its last line
# (`--dir`: only print it).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$HERE/versions.env"

CACHE=${AUDIOPROC_CACHE:-$HOME/.cache/audioprocessor}
ROOT=$CACHE/kueue-$KUEUE_VERSION
if [ "${1:-}" = "--dir" ]; then echo "$ROOT"; exit 0; fi
mkdir -p "$ROOT/bin" "$ROOT/crds"

export GOTOOLCHAIN=local   # kueue v0.17.0 needs go 1.25; never fetch another toolchain
export GOFLAGS=-modcacherw
export CGO_ENABLED=0
export GOMODCACHE=${GOMODCACHE:-$CACHE/go/mod}
export GOCACHE=${GOCACHE:-$CACHE/go/build}
log() { printf '[build-kueue %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [ ! -e "$ROOT/bin/.stamp-kueue" ]; then
  log "building kueue $KUEUE_VERSION (a cold build takes a while on 2 cores)"
  cd /
  GOBIN=$ROOT/bin go install -trimpath \
    -ldflags="-s -w -X sigs.k8s.io/kueue/pkg/version.GitVersion=$KUEUE_VERSION" \
    "sigs.k8s.io/kueue/cmd/kueue@$KUEUE_VERSION"
  touch "$ROOT/bin/.stamp-kueue"
fi
if [ ! -e "$ROOT/.stamp-config" ]; then
  src=$(cd / && go mod download -json "sigs.k8s.io/kueue@$KUEUE_VERSION" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  install -m 0644 "$src"/config/components/crd/bases/*.yaml "$ROOT/crds/"
  # Its webhook configurations name a Service; e2e/kueue.py points them at loopback instead.
  install -m 0644 "$src"/config/components/webhook/manifests.yaml "$ROOT/webhook-manifests.yaml"
  touch "$ROOT/.stamp-config"
fi
log "kueue ready in $ROOT"
echo "$ROOT"
