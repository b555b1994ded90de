#!/usr/bin/env bash
# Builds prometheus and promtool from the version pinned in hack/prometheus/go.mod into
# .cache/prometheus/<key>/ and prints that folder on the last stdout line. The key
# hashes everything that changes the output, so a warm cache is reused in well under a
# second and a version bump gets a fresh folder.
#
# Honours PROMETHEUS_BIN and PROMTOOL_BIN: if both name executables (a path, or a
# command on PATH) in one folder, that folder is printed and nothing is built.
#
# Prometheus is a module of its own, apart from hack/testbin: its k8s.io/* requirements
# (client-go for Kubernetes service discovery) must not meet the test bed's pins.
# A 3.x release 3.MM.P is the module version v0.3MM.P (`@latest` is an old v2 tag).
#
# Tags: `remove_all_sd` leaves out every service discovery but file and http (the test
# bed uses file_sd), which roughly halves the build; `netgo` is what the release
# binaries use. Never `builtinassets`: the module zip has no built web UI. The headless
# server answers /api/v1, /-/ready and /-/reload, all the tests use.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=../lib/go-build.sh
source "$root/hack/lib/go-build.sh"

# "import/path:binary-name" — one `go build` builds both; add packages here (and to
# the `tool` block of go.mod, so `go mod tidy` keeps their requirements).
packages=(
  "github.com/prometheus/prometheus/cmd/prometheus:prometheus"
  "github.com/prometheus/prometheus/cmd/promtool:promtool"
)

log() { printf '[prometheus] %s\n' "$*" >&2; }

names=("${packages[@]##*:}")

if [[ -n "${PROMETHEUS_BIN:-}${PROMTOOL_BIN:-}" ]]; then
  prom="$(command -v "${PROMETHEUS_BIN:-}" 2>/dev/null || true)"
  tool="$(command -v "${PROMTOOL_BIN:-}" 2>/dev/null || true)"
  if [[ -n "$prom" && -n "$tool" && "$(dirname "$prom")" == "$(dirname "$tool")" ]] \
    && has_all "$(dirname "$prom")" "${names[@]}"; then
    log "using PROMETHEUS_BIN=$PROMETHEUS_BIN and PROMTOOL_BIN=$PROMTOOL_BIN"
    dirname "$prom"
    exit 0
  fi
  log "PROMETHEUS_BIN/PROMTOOL_BIN do not name prometheus and promtool in one folder; building"
fi

require_go "${names[*]}"

version="$(mod_version github.com/prometheus/prometheus "$here/go.mod")"
minor="${version#v0.}"; minor="${minor%%.*}"          # v0.316.0 -> 316
release="${minor:0:1}.$((10#${minor:1})).${version##*.}"  # -> 3.16.0
ldflags="-s -w -X github.com/prometheus/common/version.Version=$release"
ldflags+=" -X github.com/prometheus/common/version.Branch=$version"
build_flags=(-trimpath -tags netgo,remove_all_sd -ldflags "$ldflags")

key="$(cache_key "$here" "${build_flags[@]}" "${packages[@]}")"
out="$root/.cache/prometheus/$key"
cache_reuse prometheus "$out" "$out" "${names[@]}" && exit 0

log "building ${names[*]} $release ($version) into $out (minutes on a cold Go cache)"
# CGO_ENABLED=0: static binaries, as Prometheus' releases are; no C toolchain needed.
CGO_ENABLED=0 cache_build prometheus "$here" "$out" "${build_flags[@]}" -- "${packages[@]}"
echo "$out"
