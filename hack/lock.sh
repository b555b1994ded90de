#!/usr/bin/env bash
# The image's dependencies, pinned with hashes, for its Python (3.11 on Linux):
#   requirements/operator.lock  pyproject.toml [project.dependencies] and the `shadow`
#                               extra: what runs (the image ships the operator and the
#                               shadow comparator, modelrollout-shadow)
#   requirements/build.lock     pyproject.toml [build-system.requires], what builds
#                               the operator's wheel in the image's first stage
# The Dockerfile installs exactly these (pip --require-hashes --only-binary).
#
#   hack/lock.sh            rewrite both after editing pyproject.toml; pins that still
#                           fit are kept (uv prefers what the lock file holds)
#   hack/lock.sh --upgrade  move every pin to the newest version allowed
#   hack/lock.sh --check    fail if either differs from what pyproject.toml gives
#                           (`make lock-check`, part of `make test`)
#
# Uses uv from the dev environment (`make venv`), or UV=/path/to/uv.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
uv="${UV:-$root/.venv/bin/uv}"
python="${PYTHON:-python3}"
mode="${1:-write}"

log() { printf '[lock] %s\n' "$*" >&2; }

case "$mode" in
  write | --check | --upgrade) ;;
  *) log "usage: hack/lock.sh [--check | --upgrade]"; exit 2 ;;
esac
[[ -x "$uv" ]] || { log "uv not found at $uv: run \`make venv\` (or set UV)"; exit 3; }

build_requires() {
  "$python" -c 'import sys, tomllib
print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["build-system"]["requires"]))' \
    "$root/pyproject.toml"
}

# The extras the image installs besides [project.dependencies].
image_extras=(shadow)

# compile OUTPUT INPUT [uv flags...]: INPUT is pyproject.toml or "-" (requirements on stdin).
compile() {
  local output="$1" input="$2" extra=("${@:3}")
  [[ "$mode" == "--upgrade" ]] && extra+=(--upgrade)
  (cd "$root" && "$uv" pip compile --quiet "$input" -o "$output" "${extra[@]}" \
    --python-version 3.11 --python-platform linux --generate-hashes \
    --no-strip-markers --custom-compile-command "hack/lock.sh")
}

if [[ "$mode" == "--check" ]]; then
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  stale=()
  for name in operator build; do
    committed="$root/requirements/$name.lock"
    [[ -f "$committed" ]] || { stale+=("requirements/$name.lock (missing)"); continue; }
    cp "$committed" "$work/$name.lock"
  done
  compile "$work/operator.lock" pyproject.toml "${image_extras[@]/#/--extra=}"
  build_requires | compile "$work/build.lock" -
  for name in operator build; do
    [[ -f "$root/requirements/$name.lock" ]] || continue
    if ! diff -u "$root/requirements/$name.lock" "$work/$name.lock" >"$work/$name.diff"; then
      stale+=("requirements/$name.lock")
      cat "$work/$name.diff" >&2
    fi
  done
  if ((${#stale[@]})); then
    log "out of date with pyproject.toml: ${stale[*]}. Run hack/lock.sh and commit the result."
    exit 1
  fi
  log "requirements/*.lock match pyproject.toml"
  exit 0
fi

mkdir -p "$root/requirements"
compile requirements/operator.lock pyproject.toml "${image_extras[@]/#/--extra=}"
build_requires | compile requirements/build.lock -
log "wrote requirements/operator.lock and requirements/build.lock"
