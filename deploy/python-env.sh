# shellcheck shell=bash
# Python environments for the Argilla server, shared by deploy/local.sh and tests/e2e/run.sh.
# Sourced, not run: the caller defines `say` and `die`.

# find_python 3.10 -> the path of a python3.10 (pyenv's, then PATH's), or nothing.
find_python() {
  local want=$1 candidate root
  root=${PYENV_ROOT:-}
  if [[ -z $root ]] && command -v pyenv >/dev/null 2>&1; then root=$(pyenv root); fi
  [[ -z $root && -d $HOME/.pyenv ]] && root=$HOME/.pyenv
  for candidate in "$root"/versions/"$want".*/bin/python3 "$(command -v "python$want" 2>/dev/null || true)"; do
    [[ -n $candidate && -x $candidate ]] || continue
    if "$candidate" -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$want'.split('.'))))" 2>/dev/null; then
      echo "$candidate"
      return
    fi
  done
}

# ensure_venv DIR PYTHON REQUIREMENTS LOG_DIR: (re)creates the virtual environment DIR only when
# the interpreter or the pinned requirements changed since its last successful install.
ensure_venv() {
  local dir=$1 py=$2 req=$3 logs=$4 want log
  want="$("$py" -c 'import sys; print(sys.version)' | head -n1) $(sha256sum "$req" | cut -d' ' -f1)"
  if [[ -x $dir/bin/python && -f $dir/.e2e-installed && "$(cat "$dir/.e2e-installed")" == "$want" ]]; then
    say "reusing $dir"
    return
  fi
  say "installing $(basename "$dir") from $(basename "$req") (about a minute on a cold machine)"
  log=$logs/pip-$(basename "$dir").log
  rm -rf "$dir"
  "$py" -m venv "$dir"
  "$dir/bin/python" -m pip install --no-input --disable-pip-version-check -q -r "$req" >"$log" 2>&1 ||
    {
      tail -n 30 "$log" >&2
      die "pip install into $dir failed (log: $log)"
    }
  echo "$want" >"$dir/.e2e-installed"
}
