#!/usr/bin/env bash
# Builds the peers the benchmarks run beside our operator, Flagger and Argo Rollouts,
# from the versions pinned in hack/peers/<peer>/go.mod, into .cache/peers/<key>/ and
# prints that folder on the last stdout line (one run per peer: `build.sh flagger`).
# The key hashes everything that changes the output, so a warm cache is reused in well
# under a second and a version bump gets a fresh folder.
#
# One go.mod per peer, because their k8s.io requirements collide: Argo Rollouts v1.10
# pins every k8s.io/* module to v0.34.5 by `replace`, and Flagger v1.36.1 is written
# against client-go v0.27 (in one module it fails to build: main.go uses
# resourcelock.ConfigMapsLeasesResourceLock, which client-go v0.34 removed).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

log() { printf '[peers] %s\n' "$*" >&2; }

peer="${1:-}"
case "$peer" in
  flagger) package="github.com/fluxcd/flagger/cmd/flagger" name="flagger" ;;
  argo-rollouts) package="github.com/argoproj/argo-rollouts/cmd/rollouts-controller" name="rollouts-controller" ;;
  *) log "usage: $0 flagger|argo-rollouts"; exit 2 ;;
esac
module_dir="$here/$peer"

command -v go >/dev/null || { log "go not found on PATH (needed to build $name)"; exit 3; }

build_flags=(-trimpath -ldflags "-s -w")
key="$(
  {
    cat "$module_dir/go.mod" "$module_dir/go.sum"
    printf '%s\n' "${build_flags[@]}" "$package"
    go version
  } | sha256sum | cut -c1-16
)"
out="$root/.cache/peers/$key"

if [[ -x "$out/$name" ]]; then
  log "reusing $out/$name"
  echo "$out"
  exit 0
fi

mkdir -p "$root/.cache/peers"
tmp="$(mktemp -d "$out.tmp.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

version="$(awk -v m="${package%%/cmd/*}" '$1 == m { print $2; exit }' "$module_dir/go.mod")"
log "building $name ($version) into $out"
start=$SECONDS
# -mod=readonly: a build must never rewrite go.mod (that would change the key).
(cd "$module_dir" && GOFLAGS="${GOFLAGS:-} -mod=readonly" go build "${build_flags[@]}" -o "$tmp/$name" "$package")

chmod 755 "$tmp"
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
log "built in $((SECONDS - start))s"
echo "$out"
