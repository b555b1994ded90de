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
# shellcheck source=../lib/go-build.sh
source "$root/hack/lib/go-build.sh"

log() { printf '[peers] %s\n' "$*" >&2; }

peer="${1:-}"
case "$peer" in
  flagger) package="github.com/fluxcd/flagger/cmd/flagger" name="flagger" ;;
  argo-rollouts) package="github.com/argoproj/argo-rollouts/cmd/rollouts-controller" name="rollouts-controller" ;;
  *) log "usage: $0 flagger|argo-rollouts"; exit 2 ;;
esac
module_dir="$here/$peer"

require_go "$name"

build_flags=(-trimpath -ldflags "-s -w")

key="$(cache_key "$module_dir" "${build_flags[@]}" "$package")"
out="$root/.cache/peers/$key"
cache_reuse peers "$out" "$out" "$name" && exit 0

version="$(mod_version "${package%%/cmd/*}" "$module_dir/go.mod")"
log "building $name ($version) into $out (minutes on a cold Go cache)"
cache_build "$peer" "$module_dir" "$out" "${build_flags[@]}" -- "$package:$name"
echo "$out"
