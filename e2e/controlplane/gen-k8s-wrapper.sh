#!/usr/bin/env bash
# gen-k8s-wrapper.sh UPSTREAM_GO_MOD K8S_VERSION > go.mod
#
# k8s.io/kubernetes pins its staging modules at v0.0.0 with "./staging/..." replace lines,
# which only apply inside that repository. A wrapper module of ours requires the release and
# maps each staging module to its published v0.MINOR.PATCH, so `go build` can resolve it.
set -euo pipefail
upstream=$1 k8s=$2
staging="v0.${k8s#v1.}"
go_line=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$upstream")
godebug=$(sed -n 's/^godebug \(.*\)$/\1/p' "$upstream")
printf 'module local.test/audioproc-k8s-bins\n\ngo %s\n' "$go_line"
[ -n "$godebug" ] && printf '\ngodebug %s\n' "$godebug"
printf '\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$k8s"
sed -n 's#^[[:space:]]*\(k8s\.io/[A-Za-z0-9._-]*\)[[:space:]]*=>[[:space:]]*\./staging/.*#\1#p' "$upstream" |
  while read -r m; do printf '\t%s => %s %s\n' "$m" "$m" "$staging"; done
echo ")"
