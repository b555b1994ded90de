#!/usr/bin/env bash
# Builds the control-plane binaries the test bed runs, from the versions pinned in
# hack/testbin/go.mod, into .cache/testbin/<key>/ and prints that folder on the last
# stdout line. The key hashes everything that changes the output, so a warm cache is
# reused in well under a second and a version bump gets a fresh folder.
#
# Honours KUBEBUILDER_ASSETS: if it names a folder holding every binary, that folder
# is printed and nothing is built (e.g. binaries from setup-envtest).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=../lib/go-build.sh
source "$root/hack/lib/go-build.sh"

# "import/path:binary-name" — one `go build` builds them all; add packages here (and to
# the `tool` block of go.mod, so `go mod tidy` keeps their requirements).
packages=(
  "k8s.io/kubernetes/cmd/kube-apiserver:kube-apiserver"
  "k8s.io/kubernetes/cmd/kube-controller-manager:kube-controller-manager"
  "k8s.io/kubernetes/cmd/kube-scheduler:kube-scheduler"
  "k8s.io/kubernetes/cmd/kubectl:kubectl"
  "go.etcd.io/etcd/server/v3:etcd"
  "sigs.k8s.io/kwok/cmd/kwok:kwok"
)

log() { printf '[testbin] %s\n' "$*" >&2; }

names=("${packages[@]##*:}")

if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
  if has_all "$KUBEBUILDER_ASSETS" "${names[@]}"; then
    log "using KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"
    echo "$KUBEBUILDER_ASSETS"
    exit 0
  fi
  log "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS lacks one of: ${names[*]}; building instead"
fi

require_go "${names[*]}"

k8s_version="$(mod_version k8s.io/kubernetes "$here/go.mod")"
minor="${k8s_version#v1.}"; minor="${minor%%.*}"
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$k8s_version"
ldflags+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
build_flags=(-trimpath -ldflags "$ldflags")

key="$(cache_key "$here" "${build_flags[@]}" "${packages[@]}")"
out="$root/.cache/testbin/$key"
cache_reuse testbin "$out" "$out" "${names[@]}" && exit 0

log "building ${names[*]} ($k8s_version) into $out (minutes on a cold Go cache)"
cache_build testbin "$here" "$out" "${build_flags[@]}" -- "${packages[@]}"
echo "$out"
