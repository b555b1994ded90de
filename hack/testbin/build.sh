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

names=()
for p in "${packages[@]}"; do names+=("${p##*:}"); done

has_all() {
  local dir="$1" n
  for n in "${names[@]}"; do [[ -x "$dir/$n" ]] || return 1; done
}

if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
  if has_all "$KUBEBUILDER_ASSETS"; then
    log "using KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"
    echo "$KUBEBUILDER_ASSETS"
    exit 0
  fi
  log "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS lacks one of: ${names[*]}; building instead"
fi

command -v go >/dev/null || { log "go not found on PATH (needed to build ${names[*]})"; exit 3; }

k8s_version="$(awk '$1 == "k8s.io/kubernetes" { print $2; exit }' "$here/go.mod")"
minor="${k8s_version#v1.}"; minor="${minor%%.*}"
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$k8s_version"
ldflags+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
build_flags=(-trimpath -ldflags "$ldflags")

key="$(
  {
    cat "$here/go.mod" "$here/go.sum"
    printf '%s\n' "${build_flags[@]}" "${packages[@]}"
    go version
  } | sha256sum | cut -c1-16
)"
out="$root/.cache/testbin/$key"

if has_all "$out"; then
  log "reusing $out"
  echo "$out"
  exit 0
fi

mkdir -p "$root/.cache/testbin"
tmp="$(mktemp -d "$out.tmp.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

import_paths=()
for p in "${packages[@]}"; do import_paths+=("${p%%:*}"); done

log "building ${names[*]} ($k8s_version) into $out (minutes on a cold Go cache)"
start=$SECONDS
# -mod=readonly: a build must never rewrite go.mod (that would change the key).
(
  cd "$here"
  export GOFLAGS="${GOFLAGS:-} -mod=readonly"
  go_build testbin "${build_flags[@]}" -o "$tmp/" -- "${import_paths[@]}"
)

# `go build -o dir/` names a binary after its import path's last element, skipping a
# major-version suffix (go.etcd.io/etcd/server/v3 -> server); rename to what we want.
for p in "${packages[@]}"; do
  path="${p%%:*}" name="${p##*:}" base="${path##*/}"
  [[ "$base" =~ ^v[0-9]+$ ]] && { base="${path%/*}"; base="${base##*/}"; }
  [[ "$base" == "$name" ]] || mv "$tmp/$base" "$tmp/$name"
done

chmod 755 "$tmp"
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
log "built in $((SECONDS - start))s"
echo "$out"
