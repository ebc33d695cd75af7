#!/usr/bin/env bash
# Install what the tests need (Debian packages when root, Python deps into .venv), then run
# ruff, mypy and the whole pytest suite; with the compiled build, the unit suite once more on
# the pure build. Exit status: non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(pebble docker-registry skopeo nginx wrk apache2-utils curl openssl clickhouse-server gcc iproute2
  golang-go dpkg-dev apt-utils gpg chromium chromium-driver
  docker.io containerd podman logrotate debootstrap)
missing=()
for package in "${DEBIAN_PACKAGES[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
# npm comes with NodeSource's nodejs; elsewhere Debian's npm package brings it
command -v npm >/dev/null || missing+=(npm)
# mypyc compiles against the headers of the python3 that builds .venv
python3 -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(
    os.path.join(sysconfig.get_paths()["include"], "Python.h")))' || missing+=(python3-dev)
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "warning: missing Debian packages (${missing[*]}); tests that need them will skip" >&2
  fi
fi

make --no-print-directory venv
if [ -z "${SCARFGW_PURE:-}" ] && [ -z "$(find scarfgw -name '*.so' -print -quit)" ]; then
  echo "error: the mypyc-compiled modules did not build (SCARFGW_PURE=1 tests pure Python)" >&2
  exit 1
fi
.venv/bin/ruff check scarfgw twisted tests bench setup.py build_backend
.venv/bin/mypy
status=0
.venv/bin/python -m pytest "$@" || status=$?
if [ -z "${SCARFGW_PURE:-}" ]; then
  # The pure build stays tested too: the unit suite (seconds) on a copy of the same sources
  # without the compiled extensions, which Python would otherwise import first.
  echo "unit suite on the pure build (SCARFGW_PURE=1):"
  pure=$(mktemp -d)
  trap 'rm -rf "$pure"' EXIT
  tar --exclude='*.so' --exclude='__pycache__' -cf - scarfgw tests twisted etc setup.cfg \
    setup.py pyproject.toml | tar -xf - -C "$pure"
  compat=${SCARFGW_COMPAT_DIR:-$(cd .. && pwd)/shared/compat}
  (cd "$pure" && SCARFGW_PURE=1 SCARFGW_COMPAT_DIR="$compat" \
    "$OLDPWD/.venv/bin/python" -m pytest -q -p no:cacheprovider tests/unit) || status=$?
fi
exit "$status"
