# Sourced by hack/*/build.sh: `go build` with progress and an estimate of the time left,
# and (below) the cache those scripts build into.
#
#   go_build LABEL [go build flags...] -- PACKAGE...
#
# Runs in the current folder (the module's). The packages to compile are counted with
# `go list -deps` (which also downloads the modules, the first time); `go build -v`
# names each package as it is done, so the count gives the share done and the rate
# the time left. A warm Go build cache reports most packages at once: the estimate
# is for the cold build, which is when it matters. On a terminal one line is
# rewritten; elsewhere (CI logs), or with GO_BUILD_PROGRESS=lines (for builds side by
# side), a line is printed every 30 seconds.

go_build() {
  local label="$1"
  shift
  local flags=() tags=""
  while (($#)) && [[ "$1" != "--" ]]; do
    flags+=("$1")
    shift
  done
  shift
  local i
  for ((i = 0; i < ${#flags[@]}; i++)); do
    [[ "${flags[i]}" == "-tags" ]] && tags="${flags[i + 1]}"
  done

  printf '[%s] resolving packages (downloads the modules the first time)\n' "$label" >&2
  local total
  total="$(go list -deps ${tags:+-tags "$tags"} "$@" 2> >(_go_fold_downloads "$label") | wc -l)"

  local status=0
  go build -v "${flags[@]}" "$@" 2> >(_go_build_progress "$label" "$total") || status=$?
  wait "${!:-}" 2>/dev/null || true  # the progress filter: let it print its last line
  return "$status"
}

# Reads `go list` stderr: one line for all the "go: downloading" lines, others as they are.
_go_fold_downloads() {
  local label="$1" line count=0
  while IFS= read -r line; do
    if [[ "$line" == "go: downloading "* ]]; then
      count=$((count + 1))
    else
      printf '%s\n' "$line" >&2
    fi
  done
  ((count)) && printf '[%s] downloaded %d modules\n' "$label" "$count" >&2
  return 0
}

# Reads `go build -v` stderr: counts package lines, passes every other line through.
_go_build_progress() {
  local label="$1" total="$2" done=0 start=$SECONDS last=$SECONDS line tty=0
  [[ -t 2 && "${GO_BUILD_PROGRESS:-}" != lines ]] && tty=1
  while IFS= read -r line; do
    if [[ "$line" =~ ^[A-Za-z0-9_./~+-]+$ ]]; then
      done=$((done + 1))
      if ((tty)) || ((SECONDS - last >= 30)); then
        _go_build_report "$label" "$done" "$total" "$((SECONDS - start))" "$tty"
        last=$SECONDS
      fi
    else
      ((tty)) && printf '\n' >&2
      printf '%s\n' "$line" >&2
    fi
  done
  ((done)) && _go_build_report "$label" "$done" "$total" "$((SECONDS - start))" "$tty"
  ((tty && done)) && printf '\n' >&2
  return 0
}

_go_build_report() {
  local label="$1" done="$2" total="$3" elapsed="$4" tty="$5" left="" pct
  ((done > total)) && total=$done
  pct=$((100 * done / (total > 0 ? total : 1)))
  # The rate settles once a tenth is done; before that, say nothing about the end.
  if ((done * 10 >= total && done < total && elapsed > 0)); then
    left=$(((total - done) * elapsed / done))
    ((left < 60)) && left=", under a minute left" || left=", about $(((left + 59) / 60)) min left"
  fi
  local text
  text="$(printf '[%s] compiled %d/%d packages (%d%%) in %dm%02ds%s' \
    "$label" "$done" "$total" "$pct" $((elapsed / 60)) $((elapsed % 60)) "$left")"
  if ((tty)); then
    printf '\r\033[K%s' "$text" >&2
  else
    printf '%s\n' "$text" >&2
  fi
}

# --- The cache each hack/*/build.sh builds into: .cache/<tool>/<key>/, where the key
# hashes everything that changes the output, so a warm cache is reused in well under a
# second and a version bump gets a fresh folder.

# require_go WHAT: exits 3 (with a message naming WHAT) when go is not on PATH.
require_go() {
  command -v go >/dev/null || { printf 'go not found on PATH (needed to build %s)\n' "$1" >&2; exit 3; }
}

# mod_version MODULE GO_MOD: the version GO_MOD requires of MODULE.
mod_version() { awk -v m="$1" '$1 == m { print $2; exit }' "$2"; }

# cache_key MODULE_DIR [LINE...]: a 16-hex-digit key of MODULE_DIR's go.mod and go.sum,
# the LINEs (the build flags and packages) and `go version`.
cache_key() {
  local dir="$1"
  shift
  {
    cat "$dir/go.mod" "$dir/go.sum"
    printf '%s\n' "$@"
    go version
  } | sha256sum | cut -c1-16
}

# has_all DIR NAME...: whether DIR holds every NAME as an executable.
has_all() {
  local dir="$1" n
  shift
  for n; do [[ -x "$dir/$n" ]] || return 1; done
}

# cache_reuse LABEL OUT PRINT NAME...: when OUT already holds every NAME, says so, prints
# PRINT (what the script prints on its last line) and returns 0.
cache_reuse() {
  local label="$1" out="$2" print="$3"
  shift 3
  has_all "$out" "$@" || return 1
  printf '[%s] reusing %s\n' "$label" "$print" >&2
  echo "$print"
}

# cache_build LABEL MODULE_DIR OUT [go build flags...] -- IMPORT/PATH:NAME...
#   builds the packages with go_build in MODULE_DIR into a temporary folder beside OUT,
#   names each binary NAME, and only then moves the folder to OUT: an interrupted build
#   leaves no OUT behind. The environment (e.g. CGO_ENABLED=0) goes through to go build.
cache_build() {
  local label="$1" module_dir="$2" out="$3"
  shift 3
  local flags=()
  while (($#)) && [[ "$1" != "--" ]]; do
    flags+=("$1")
    shift
  done
  shift
  local packages=("$@") start=$SECONDS tmp p path name base
  mkdir -p "$(dirname "$out")"
  tmp="$(mktemp -d "$out.tmp.XXXXXX")"
  # shellcheck disable=SC2064  # the folder's name now: tmp is local
  trap "rm -rf $(printf '%q' "$tmp")" EXIT
  # -mod=readonly: a build must never rewrite go.mod (that would change the key).
  (
    cd "$module_dir"
    export GOFLAGS="${GOFLAGS:-} -mod=readonly"
    go_build "$label" "${flags[@]}" -o "$tmp/" -- "${packages[@]%%:*}"
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
  printf '[%s] built in %ds\n' "$label" "$((SECONDS - start))" >&2
}
