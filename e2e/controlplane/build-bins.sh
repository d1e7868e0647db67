#!/usr/bin/env bash
# Build the local control plane's binaries from Go modules with the Go toolchain:
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, etcd, kwok, helm, kubeconform,
# for the real node kubelet, kube-proxy and containerd (with its runc shim and ctr), and the
# docker compose plugin.
# Nothing prebuilt is downloaded. Results are cached outside the repository, keyed by version:
#   ${AUDIOPROC_CACHE:-~/.cache/audioprocessor}/k8s/<versions-key>/bin
# A second run with everything stamped does nothing. Prints the bin directory on its last line
# (`--bin-dir`: only print it).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$HERE/versions.env"

CACHE=${AUDIOPROC_CACHE:-$HOME/.cache/audioprocessor}
KEY="k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_helm-${HELM_VERSION}"
ROOT=$CACHE/k8s/$KEY
BIN=$ROOT/bin
SRC=$ROOT/src
# `build-bins.sh --bin-dir` only prints where the binaries are (or would be), building nothing.
if [ "${1:-}" = "--bin-dir" ]; then echo "$BIN"; exit 0; fi
mkdir -p "$BIN" "$SRC"

export GOTOOLCHAIN=local   # never fetch another Go toolchain behind our back
export GOFLAGS=-modcacherw # keep the module cache removable with rm -rf
export CGO_ENABLED=0       # static binaries, as upstream release builds are
export GOMODCACHE=${GOMODCACHE:-$CACHE/go/mod}
export GOCACHE=${GOCACHE:-$CACHE/go/build}

stamp() { echo "$BIN/.stamp-$1"; }
log() { printf '[build-bins %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
k8s_minor=${K8S_VERSION#v1.}; k8s_minor=${k8s_minor%%.*}

# The real node's kubelet and kube-proxy come from the same wrapper module and build cache.
K8S_CMDS="kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy"
missing=""
for cmd in $K8S_CMDS; do [ -e "$(stamp "$cmd-$K8S_VERSION")" ] || missing+=" $cmd"; done
if [ -n "$missing" ]; then
  d=$SRC/k8s; mkdir -p "$d"; cd "$d"
  if ! grep -q '^module local.test/audioproc-k8s-bins$' go.mod 2>/dev/null; then
    log "resolving k8s.io/kubernetes@$K8S_VERSION"
    printf 'module local.test/bootstrap\n\ngo 1.24\n' >go.mod
    upstream=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
    "$HERE/gen-k8s-wrapper.sh" "$upstream" "$K8S_VERSION" >go.mod.new
    mv go.mod.new go.mod
  fi
  { printf '//go:build tools\n\npackage tools\n\nimport (\n'
    for cmd in $K8S_CMDS; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$cmd"; done
    printf ')\n'; } >tools.go
  log "go mod tidy (downloads the Kubernetes module graph on a cold cache)"
  go mod tidy
  ldflags="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$k8s_minor -X $p.gitTreeState=clean"
  done
  for cmd in $missing; do
    log "building $cmd $K8S_VERSION"
    go build -trimpath -ldflags="$ldflags" -o "$BIN/$cmd" "k8s.io/kubernetes/cmd/$cmd"
    touch "$(stamp "$cmd-$K8S_VERSION")"
  done
fi

if [ ! -e "$(stamp "etcd-$ETCD_VERSION")" ]; then
  # server/v3's go.mod has replace lines, so `go install ...@version` is refused; wrap it.
  d=$SRC/etcd; mkdir -p "$d"; cd "$d"
  printf 'module local.test/audioproc-etcd-bin\n\ngo 1.25.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" >go.mod
  printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' >tools.go
  log "building etcd $ETCD_VERSION"
  go mod tidy
  go build -trimpath -ldflags="-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3
  touch "$(stamp "etcd-$ETCD_VERSION")"
fi

cd /
if [ ! -e "$(stamp "kwok-$KWOK_VERSION")" ]; then
  log "building kwok $KWOK_VERSION"
  GOBIN=$BIN go install -trimpath -ldflags="-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  touch "$(stamp "kwok-$KWOK_VERSION")"
fi
if [ ! -e "$(stamp "helm-$HELM_VERSION")" ]; then
  log "building helm $HELM_VERSION"
  hl="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  for p in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    hl+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$k8s_minor"
  done
  GOBIN=$BIN go install -trimpath -ldflags="$hl" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  touch "$(stamp "helm-$HELM_VERSION")"
fi
if [ ! -e "$(stamp "kubeconform-$KUBECONFORM_VERSION")" ]; then
  log "building kubeconform $KUBECONFORM_VERSION"
  GOBIN=$BIN go install -trimpath -ldflags="-s -w" "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION"
  touch "$(stamp "kubeconform-$KUBECONFORM_VERSION")"
fi

if [ ! -e "$(stamp "containerd-$CONTAINERD_VERSION")" ]; then
  log "building containerd $CONTAINERD_VERSION"
  for cmd in containerd containerd-shim-runc-v2 ctr; do
    GOBIN=$BIN go install -trimpath -ldflags="-s -w" -tags "no_btrfs no_devmapper no_zfs no_aufs" \
      "github.com/containerd/containerd/v2/cmd/$cmd@$CONTAINERD_VERSION"
  done
  touch "$(stamp "containerd-$CONTAINERD_VERSION")"
fi

if [ ! -e "$(stamp "compose-$COMPOSE_VERSION")" ]; then
  # compose's go.mod has exclude lines, so `go install ...@version` is refused: wrap it, with
  # the same excludes (they only apply in the main module).
  d=$SRC/compose; mkdir -p "$d"; cd "$d"
  upstream=$(go mod download -json "github.com/docker/compose/v2@$COMPOSE_VERSION" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  { printf 'module local.test/audioproc-compose-bin\n\n'; sed -n 's/^go \([0-9.]*\)$/go \1/p' "$upstream"
    printf '\nrequire github.com/docker/compose/v2 %s\n\n' "$COMPOSE_VERSION"
    sed -n '/^exclude (/,/^)/p' "$upstream"; } >go.mod
  printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/docker/compose/v2/cmd"\n' >tools.go
  log "building docker compose $COMPOSE_VERSION"
  go mod tidy
  go build -trimpath -ldflags="-s -w -X github.com/docker/compose/v2/internal.Version=$COMPOSE_VERSION" \
    -o "$BIN/docker-compose" github.com/docker/compose/v2/cmd
  touch "$(stamp "compose-$COMPOSE_VERSION")"
  cd /
fi

# kwok's stage library ships inside its module; keep the ones the cluster uses beside the binaries.
if [ ! -e "$(stamp "kwok-stages-$KWOK_VERSION")" ]; then
  src=$GOMODCACHE/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/stage
  [ -d "$src" ] || GOFLAGS=-modcacherw go mod download -x "sigs.k8s.io/kwok@$KWOK_VERSION" >/dev/null 2>&1 || true
  mkdir -p "$BIN/kwok-stages"
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
           pod/fast/pod-ready.yaml pod/fast/pod-delete.yaml; do
    install -m 0644 "$src/$f" "$BIN/kwok-stages/$(basename "$f")"
  done
  touch "$(stamp "kwok-stages-$KWOK_VERSION")"
fi
log "all binaries ready in $BIN"
echo "$BIN"
