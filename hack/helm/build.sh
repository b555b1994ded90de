#!/usr/bin/env bash
# Builds helm from the version pinned in hack/helm/go.mod into .cache/helm/<key>/helm
# and prints that binary's path on the last stdout line. The key hashes everything that
# changes the output, so a warm cache is reused in well under a second and a version
# bump gets a fresh folder.
#
# Honours HELM_BIN: if it names an executable (a path, or a command on PATH), its path
# is printed and nothing is built (e.g. a helm from a package manager).
#
# helm is a module of its own, apart from hack/testbin: its k8s.io/* requirements must
# not be pulled to the test bed's (or the other way round) by minimal version selection.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=../lib/go-build.sh
source "$root/hack/lib/go-build.sh"
package="helm.sh/helm/v3/cmd/helm"

log() { printf '[helm] %s\n' "$*" >&2; }

if [[ -n "${HELM_BIN:-}" ]]; then
  if found="$(command -v "$HELM_BIN")" && [[ -x "$found" ]]; then
    log "using HELM_BIN=$HELM_BIN"
    echo "$found"
    exit 0
  fi
  log "HELM_BIN=$HELM_BIN is not an executable; building instead"
fi

require_go helm

helm_version="$(mod_version helm.sh/helm/v3 "$here/go.mod")"
client_go="$(mod_version k8s.io/client-go "$here/go.mod")"  # v0.34.2 -> Kubernetes 1.34
k8s_minor="${client_go#v0.}"; k8s_minor="${k8s_minor%%.*}"

# As helm's own Makefile does: without these, `helm version` says "main" and
# `helm template`/`lint` assume Kubernetes v1.20 for .Capabilities.KubeVersion.
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
done
build_flags=(-trimpath -ldflags "$ldflags")

key="$(cache_key "$here" "${build_flags[@]}" "$package")"
out="$root/.cache/helm/$key"
cache_reuse helm "$out" "$out/helm" helm && exit 0

log "building helm $helm_version (Kubernetes 1.$k8s_minor libraries) into $out (minutes on a cold Go cache)"
# CGO_ENABLED=0: a static binary, as helm's releases are; no C toolchain needed.
CGO_ENABLED=0 cache_build helm "$here" "$out" "${build_flags[@]}" -- "$package:helm"
echo "$out/helm"
