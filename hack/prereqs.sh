#!/usr/bin/env bash
# What `make demo` and `make test` need from the machine: Go, Python with venv, and
# openssl. Everything else (etcd, Kubernetes, kwok, Prometheus, helm, the Python
# packages) they build or install themselves. Checked before any long build; what is
# missing is said in one line, with how to get it, and the exit status is 1.
set -uo pipefail

python="${PYTHON:-python3}"
missing=()

# Go: hack/prometheus/go.mod asks for 1.26.7. An older Go (1.21 or later) fetches
# that toolchain from the Go module proxy by itself, unless GOTOOLCHAIN=local.
go_needed="1.26.7"
version_ge() { [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" == "$2" ]]; }
go_hint="Go $go_needed+ (https://go.dev/doc/install; a Go 1.21+ fetches it by itself unless GOTOOLCHAIN=local)"
if ! command -v go >/dev/null; then
  missing+=("$go_hint")
else
  have="$(go env GOVERSION 2>/dev/null)"
  have="${have#go}"
  if ! version_ge "$have" "$go_needed"; then
    if ! version_ge "$have" "1.21" || [[ "$(go env GOTOOLCHAIN)" == local* ]]; then
      missing+=("$go_hint, have $have")
    fi
  fi
fi

if ! command -v "$python" >/dev/null; then
  missing+=("Python 3.11+ with venv (apt-get install python3 python3-venv)")
elif ! "$python" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  have="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)"
  missing+=("Python 3.11+ with venv, have $python $have (apt-get install python3 python3-venv)")
fi

command -v openssl >/dev/null || missing+=("openssl (apt-get install openssl)")

if ((${#missing[@]})); then
  joined="$(printf '%s; ' "${missing[@]}")"
  echo "Missing: ${joined%; }" >&2
  exit 1
fi
