# Shared by scripts/serve and scripts/test: find Python 3.11+, make .venv, install.
# Sourced, not run. Each missing piece is installed where we can (root + apt-get),
# otherwise named with the command that installs it.

say() { printf '%s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else return 1
  fi
}

apt_install() {
  # apt_install PKG...: install Debian packages, or fail with the command to run.
  command -v apt-get >/dev/null 2>&1 || return 1
  say "installing Debian packages: $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null \
    && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

find_python() {
  for candidate in "${PYTHON:-}" python3 python3.13 python3.12 python3.11; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 \
      && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  die "Python 3.11 or newer is required (Debian: apt-get install python3)"
}

ensure_venv() {
  # ensure_venv EXTRAS: create .venv if needed and install this project with EXTRAS.
  local python extras="$1"
  python=$(find_python)
  if [ ! -x .venv/bin/python ]; then
    if ! "$python" -m venv .venv >/dev/null 2>&1; then
      rm -rf .venv
      local version
      version=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
      apt_install "python${version}-venv" || apt_install python3-venv \
        || die "python venv support is missing: apt-get install python3-venv"
      "$python" -m venv .venv || die "could not create .venv"
    fi
  fi
  local stamp=".venv/.installed-${extras}"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    say "installing estkit[${extras}] into .venv"
    .venv/bin/python -m pip install -q --upgrade pip >.venv/pip.log 2>&1
    .venv/bin/python -m pip install -q -e ".[${extras}]" >>.venv/pip.log 2>&1 \
      || { cat .venv/pip.log >&2; die "pip install failed (log above, also in .venv/pip.log)"; }
    touch "$stamp"
  fi
}
